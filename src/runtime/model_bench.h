// `codecllm bench MODEL.cllm`: llama-bench's measurements for each memory mode. pp<N> runs a
// prompt of N tokens as one forward pass from an empty cache; tg<N> generates N tokens one at
// a time from an empty cache. One warm-up, then r timed repetitions of each; tokens per
// second as mean and standard deviation over the repetitions. Each GPU row also carries the
// mode's measured VRAM, decoder, PCIe and stall figures, and the roofline the card's
// measured ceilings allow.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "format/cllm_reader.h"

namespace cllm {

struct ModelBenchOptions {
  std::vector<std::string> modes = {"auto"};  // full, resident, lowmem, auto; "cpu" with device cpu
  std::vector<std::string> budgets;           // --vram-budget values ("2.5G", "auto"); run instead of modes
  std::vector<int> n_prompt = {512};          // pp tests (0 entries skip)
  std::vector<int> n_gen = {128};             // tg tests
  int reps = 5;
  int threads = 1;
  bool gpu = true;                            // false: the CPU engine
  std::function<void(const std::string&)> progress;  // one line per step, for stderr
};

struct ModelBenchRow {
  std::string mode;             // "full", "resident", "lowmem", "hybrid" or "cpu"
  std::string budget;           // the --vram-budget of the row ("" when run by mode)
  std::string placement;        // "12 decoded, 3 resident, 20 streamed"
  std::string test;             // "pp512", "tg128"
  int n_tokens = 0;
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
