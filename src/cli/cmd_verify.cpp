// codecllm verify MODEL.cllm [SOURCE]: check every checksum and decode every tile; with
// SOURCE, compare every decoded tensor bit for bit with the source model.
#include <cstdio>
#include <cstring>
#include <memory>

#include "cli/commands.h"
#include "cli/progress.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "convert/source_model.h"
#include "format/cllm_reader.h"
#include "model/tensor_data.h"

namespace cllm::cli {

namespace {

struct VerifyArgs {
  std::string model, source, tokenizer;
  int threads = 0;
};

// First differing element of two equal-size buffers of elements of esize bytes.
uint64_t first_difference(const uint8_t* a, const uint8_t* b, uint64_t bytes, size_t esize) {
  for (uint64_t i = 0; i < bytes; ++i)
    if (a[i] != b[i]) return i / esize;
  return bytes / esize;
}

int run_verify(const VerifyArgs& a) {
  Timer timer;
  const int threads = a.threads > 0 ? a.threads : hardware_threads();
  CllmOpenOptions opt;
  opt.threads = threads;
  const CllmFile f = CllmFile::open(a.model, opt);  // verifies every tile's CRC-32C
  uint64_t tiles = 0, raw = 0;
  for (const auto& t : f.tensors()) {
    tiles += t.tiles.size();
    raw += t.raw_bytes();
  }
  log_info("'", a.model, "': ", tiles, " tile checksums OK");

  std::unique_ptr<SourceModel> src;
  if (!a.source.empty()) {
    ImportOptions imp;
    imp.tokenizer_path = a.tokenizer;
    src = std::make_unique<SourceModel>(with_context("importing '" + a.source + "'", [&] { return open_source_model(a.source, imp); }));
    for (const auto& st : src->tensors)
      if (!f.find(st.name)) fail("'", a.model, "': tensor '", st.name, "' of the source is missing");
  }

  ThreadPool pool(threads);
  ProgressBar bar("verifying");
  uint64_t done = 0, compared = 0;
  std::vector<uint8_t> buf;
  for (const auto& t : f.tensors()) {
    buf.resize(t.raw_bytes());
    with_context("'" + a.model + "'", [&] { decode_tensor(f, t, buf.data(), &pool); });
    if (src) {
      const uint8_t* expect = nullptr;
      uint64_t expect_size = 0;
      if (t.name == "tokenizer.data" && src->tokenizer.kind.empty()) {
        log_warn("the source has no tokenizer: 'tokenizer.data' not compared (pass --tokenizer FILE)");
        continue;
      }
      if (t.name == "tokenizer.data") {
        expect = src->tokenizer.data.data();
        expect_size = src->tokenizer.data.size();
      } else if (const SourceTensor* st = src->find(t.name)) {
        if (st->dtype != t.dtype) fail("tensor '", t.name, "': dtype ", dtype_name(t.dtype), " in '", a.model, "', ", dtype_name(st->dtype), " in the source");
        expect = st->data;
        expect_size = st->size;
      } else {
        fail("'", a.model, "': tensor '", t.name, "' is not in the source '", a.source, "'");
      }
      if (expect_size != buf.size()) fail("tensor '", t.name, "': ", buf.size(), " bytes decoded, the source has ", expect_size);
      if (std::memcmp(expect, buf.data(), buf.size()) != 0)
        fail("tensor '", t.name, "': decoded values differ from the source, first at element ",
             first_difference(buf.data(), expect, buf.size(), dtype_size(t.dtype)));
      compared += buf.size();
    }
    done += t.raw_bytes();
    bar.update(done, raw);
  }
  bar.finish();
  if (src && src->extra_metadata.contains("general.source.quantization"))
    std::printf("OK: '%s' matches the dequantized values of the quantized '%s' (%s) bit for bit (%zu tensors, %s) "
                "in %.2f s\n",
                a.model.c_str(), a.source.c_str(), src->extra_metadata["general.source.quantization"].get<std::string>().c_str(),
                f.tensors().size(), format_bytes(static_cast<double>(compared)).c_str(), timer.seconds());
  else if (src)
    std::printf("OK: '%s' matches '%s' bit for bit (%zu tensors, %s) in %.2f s\n", a.model.c_str(), a.source.c_str(),
                f.tensors().size(), format_bytes(static_cast<double>(compared)).c_str(), timer.seconds());
  else
    std::printf("OK: '%s': %llu tiles, checksums and structure valid (%s decoded) in %.2f s\n", a.model.c_str(),
                static_cast<unsigned long long>(tiles), format_bytes(static_cast<double>(raw)).c_str(), timer.seconds());
  return 0;
}

}  // namespace

void register_verify(CLI::App& app, Action& action) {
  auto a = std::make_shared<VerifyArgs>();
  CLI::App* cmd = app.add_subcommand("verify", "Check a .cllm file; with SOURCE, compare every tensor bit for bit");
  cmd->add_option("model", a->model, "The .cllm file")->required();
  cmd->add_option("source", a->source, "The model it was made from (HF folder, llama2.c .bin, GGUF)");
  cmd->add_option("--tokenizer", a->tokenizer, "The tokenizer given to compress (llama2.c sources)")->check(CLI::ExistingFile);
  cmd->add_option("-t,--threads", a->threads, "Threads (0 = all hardware threads)")->default_val(0)->check(CLI::NonNegativeNumber);
  cmd->callback([a, &action] { action = [a] { return run_verify(*a); }; });
}

}  // namespace cllm::cli
