// `codecllm bench MODEL.cllm`: llama-bench's measurements for each memory mode. pp<N> runs a
// prompt of N tokens as one forward pass; tg<N> generates N tokens one at a time; both start
// from a cache holding d tokens (-d, default 0: empty), filled once per engine and depth
// before the test and not timed ("pp512 @ d4096"). One warm-up, then r timed repetitions of each; tokens per
// second as mean and standard deviation over the repetitions. Each GPU row also carries the
// mode's measured VRAM, decoder, PCIe and stall figures, and the roofline the card's
// measured ceilings allow.
// -np P (llama-batched-bench's -npl): tg tests of P sequences decoding together, one token of
// each per forward pass (model/batch.h), every sequence's cache holding d tokens; their rows
// ("tg128 x16") count the tokens of all P sequences. pp tests run at P = 1 only.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "format/cllm_reader.h"
#include "runtime/memory_plan.h"

namespace cllm {

// One engine to run every test on (GPU; the CPU runs one CPU engine).
struct ModelBenchEngine {
  std::optional<Mode> mode;   // full, resident or lowmem; none: the fastest that fits (auto)
  uint64_t vram_budget = 0;   // bytes to plan each layer's placement for (UINT64_MAX: all free); 0: by mode
  std::string budget;         // the budget as the user wrote it ("2.5G", "auto"), for the rows
};

struct ModelBenchOptions {
  std::vector<ModelBenchEngine> engines = {{}};  // GPU only
  std::vector<int> n_prompt = {512};          // pp tests (0 entries skip)
  std::vector<int> n_gen = {128};             // tg tests
  std::vector<int> n_depth = {0};             // tokens already in the KV cache when a test runs
  std::vector<int> n_parallel = {1};          // sequences decoding together in tg tests
  int context = 0;                            // KV positions; 0: bench_context(), as llama-bench's n_ctx
  int reps = 5;
  int threads = 1;
  bool gpu = true;                            // false: the CPU engine
  std::function<void(const std::string&)> progress;  // one line per step, for stderr
};

// The context the tests need: the largest depth + prompt and depth + generated length.
int bench_context(const ModelBenchOptions& opt);
// "pp512", "tg128 @ d4096": llama-bench's names; "tg128 x16 @ d4096" for 16 sequences.
std::string bench_test_name(bool prompt, int n_tokens, int depth, int parallel = 1);

struct ModelBenchRow {
  std::string mode;             // "full", "resident", "lowmem", "hybrid" or "cpu"
  std::string budget;           // the --vram-budget of the row ("" when run by mode)
  std::string placement;        // "12 decoded, 3 resident, 20 streamed"
  std::string test;             // "pp512", "tg128 @ d4096"
  int n_tokens = 0;             // n_prompt, or n_gen times n_parallel
  int n_parallel = 1;           // sequences decoding together
  int n_prompt = 0, n_gen = 0;  // llama-bench's fields: one of them is n_tokens, the other 0
  int n_depth = 0;              // tokens in the KV cache before the test (filled untimed)
  std::vector<double> samples_s;  // seconds per repetition
  double mean_tps = 0, std_tps = 0;
  // GPU only (0 otherwise)
  uint64_t vram_peak = 0;       // bytes, measured
  double decode_gbps = 0;       // decoded bytes / decoder GPU time
  double h2d_gbps = 0;          // compressed bytes copied / copy GPU time
  double stall_pct = 0;         // compute waiting for weights, % of the wall time
  double roofline_tps = 0;      // what the bounding ceiling allows
  std::string bound;            // which ceiling: "HBM", "PCIe", "GEMM"
  double load_s = 0;            // opening the engine in this mode
};

struct ModelBenchResult {
  std::string model, device;    // file name, "NVIDIA H200" or "cpu"
  uint64_t file_bytes = 0, params = 0, decoded_bytes = 0, compressed_bytes = 0;
  double copy_gbps = 0, h2d_pinned_gbps = 0, gemm_tflops = 0;  // the card's ceilings, measured here
  std::vector<ModelBenchRow> rows;
};

ModelBenchResult bench_model(const CllmFile& file, const ModelBenchOptions& opt);

}  // namespace cllm
