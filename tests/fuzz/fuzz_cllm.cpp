// Fuzz target: a .cllm file as `info`, `verify` and `run` read it. Opening parses header,
// metadata and index; then every tile's checksum is computed, every tensor decoded, the Llama
// weights loaded from the metadata's config, the GPU engine's host-side plans made (weight
// schedule; per group, the decode plan that checks every tile header before a kernel trusts
// it), and the embedded tokenizer loaded and used.
//
// The metadata and index are guarded by CRC-32Cs in the header, which random mutations almost
// never satisfy; the harness recomputes both (when their ranges lie in the input) so that the
// parsers behind them are reached. Tiles are decoded whether or not their checksums match (as
// with --no-verify), so the codec sees arbitrary bytes. Only cllm::Error may escape a reader:
// any other exception, a crash or a sanitizer report is a finding.
#include <cstring>
#include <vector>

#include "common/crc32c.h"
#include "common/error.h"
#include "format/cllm_reader.h"
#include "model/llama_weights.h"
#include "model/tensor_data.h"
#include "runtime/decode_plan.h"
#include "runtime/weight_schedule.h"
#include "tests/fuzz/fuzz_input.h"
#include "text/tokenizer.h"

namespace {

uint64_t le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Rewrites the header's metadata and index CRCs (bytes 56 and 60) to match the input.
void fix_header_crcs(std::vector<uint8_t>& f) {
  if (f.size() < 64) return;
  auto fix = [&](size_t off_at, size_t size_at, size_t crc_at) {
    const uint64_t off = le64(&f[off_at]), size = le64(&f[size_at]);
    if (off > f.size() || size > f.size() - off) return;
    const uint32_t crc = cllm::crc32c(f.data() + off, size);
    std::memcpy(&f[crc_at], &crc, 4);
  };
  fix(24, 32, 56);  // metadata
  fix(40, 48, 60);  // index
}

template <class Fn>
void expect_only_cllm_errors(Fn&& fn) {
  try {
    fn();
  } catch (const cllm::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cllm::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const cllm::fuzz::ScratchFile scratch("cllm");
  std::vector<uint8_t> bytes(data, data + size);
  fix_header_crcs(bytes);
  cllm::fuzz::write_input(scratch.path, bytes.data(), bytes.size());

  expect_only_cllm_errors([&] {
    cllm::CllmOpenOptions opt;
    opt.verify_checksums = false;
    opt.threads = 1;
    const cllm::CllmFile f = cllm::CllmFile::open(scratch.path, opt);
    expect_only_cllm_errors([&] { f.verify_checksums(1); });
    for (const auto& t : f.tensors()) {
      expect_only_cllm_errors([&] {
        std::vector<uint8_t> out(t.raw_bytes());
        cllm::decode_tensor(f, t, out.data(), nullptr);
      });
    }
    expect_only_cllm_errors([&] { (void)cllm::load_llama_weights(f, nullptr); });
    expect_only_cllm_errors([&] {
      (void)cllm::plan_weight_schedule(f, cllm::config_from_metadata(f.metadata()));
    });
    for (uint32_t g = 0; g < f.groups().size(); ++g)
      expect_only_cllm_errors([&] { (void)cllm::plan_group_decode(f, g); });
    expect_only_cllm_errors([&] {
      const cllm::Tokenizer tok = cllm::Tokenizer::from_cllm(f);
      cllm::TokenDecoder dec(tok);
      for (int id : tok.encode("Once upon a time, \xC3\xA9t\xC3\xA9 \xF0\x9F\xA6\x99!", true)) dec.push(id);
      dec.flush();
    });
  });
  return 0;
}
