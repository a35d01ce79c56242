// Helpers shared by the tests: where the reference data is, scratch folders, running the CLI,
// and generators for realistic weights.
#pragma once

#include <cstdint>
#include <random>
#include <functional>
#include <string>
#include <vector>

#include "model/llama_weights.h"

namespace cllm::test {

// ../shared/models (stories260K, tokenizers). Tests that need it fail loudly if it is missing.
std::string shared_models_dir();
std::string shared_model(const std::string& name);  // path, REQUIREs that it exists

// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "cllm-test");
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs the codecllm binary (the build's, or $CLLM_BINARY) with args (shell-quoted here); returns exit status, and stdout and
// stderr captured into the given strings.
int run_cli(const std::vector<std::string>& args, std::string* out = nullptr, std::string* err = nullptr);

// n bf16 values drawn from N(0, std^2), deterministic for a seed.
std::vector<uint16_t> gaussian_bf16(size_t n, float stddev, uint64_t seed);
std::vector<float> gaussian_f32(size_t n, float stddev, uint64_t seed);

// n values from N(mean, stddev^2), drawn from the caller's stream.
std::vector<float> gaussian(size_t n, float mean, float stddev, std::mt19937_64& rng);
// dim 48 with 4 heads of 16 (q_dim 64 != dim), 2 kv heads (GQA), ffn 80, vocab 97, context 64.
LlamaConfig small_config();
// Random weights for c: embeddings N(0, 1), norms N(1, 0.1^2), an untied output N(0, 0.2^2),
// wq and wk N(0, qk_std^2), the other linear layers N(0, other_std^2); the same draws for a seed.
LlamaWeights random_model(const LlamaConfig& c, uint64_t seed, float qk_std, float other_std);

// llama2.c's run.c on stories260K, greedy, no prompt: the text after BOS and 200 sampled tokens
// (run.c's `-n 200`; ../shared/BRIEF.md, "Public reference for stories260K").
extern const char* const kStoriesReference;
constexpr int kStoriesReferenceTokens = 200;

// stories260K.bin (+ tok512.model unless with_tokenizer is false) compressed into dir.
std::string compress_stories(const TempDir& dir, bool with_tokenizer = true);

// The tiny-test preset (bf16, dim 256, vocab 4096) synthesized and compressed into dir: big
// enough that fused mode's smaller weights show in the whole memory plan.
std::string synth_tiny_bf16(const TempDir& dir);

// The source tree's files that tests read at run time (tests/fixtures, scripts/, .deps/venv),
// wherever the test executables run from (scripts/bundle-gpu.sh copies them elsewhere):
// $CLLM_SOURCE_DIR when set; else the nearest folder above the executable that holds
// tests/fixtures (a bundle's root, or the source tree above build/); else the source tree the
// executable was built from (CLLM_SOURCE_DIR compiled in).
std::string source_dir();
// source_dir() + "/" + relative.
std::string source_path(const std::string& relative);

// A python3 that imports `modules` (e.g. "gguf, numpy"): $CLLM_PYTHON, the venv scripts/setup.sh
// makes (.deps/venv), python3; "" when none does.
std::string python_with(const std::string& modules);

// tests/fixtures/<name>: models the project generated (scripts/make-hf-fixtures.py). REQUIREs
// that it exists, naming where it looked.
std::string fixture_dir(const std::string& name);

// ||a - b|| / ||b|| over n values (one row of logits).
double rel_error(const float* a, const float* b, size_t n);
// The index of the largest value (the first on ties): greedy sampling.
int argmax(const float* v, int n);

// Skips the current [gpu] test visibly when no CUDA device exists: prints
// "SKIPPED [gpu] <test>: <reason>" and exits with status 4, which ctest reports as skipped.
void require_gpu_or_skip(const char* test_name);

// Writes bytes to path (a test's own input file), requiring success.
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
// The message of the cllm::Error fn throws; fails the test when it throws none.
std::string error_of(const std::function<void()>& fn);

}  // namespace cllm::test

#define CLLM_REQUIRE_GPU() ::cllm::test::require_gpu_or_skip(Catch::getResultCapture().getCurrentTestName().c_str())
