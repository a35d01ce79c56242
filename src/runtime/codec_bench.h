// Measures the codec on a real .cllm file: the CPU encoder and reference decoder (one thread
// and n threads) and, where a GPU exists, the GPU decoder against the card's ceilings.
#pragma once

#include <string>
#include <vector>

#include "format/cllm_reader.h"

namespace cllm {

struct CodecBenchRow {
  std::string test;       // "cpu decode t=1", "gpu decode (whole model)", ...
  double bytes = 0;       // decoded (output) bytes per run
  double ms = 0;          // median milliseconds per run
  double gbps() const { return ms > 0 ? bytes / (ms * 1e-3) / 1e9 : 0.0; }
  double ceiling_gbps = 0;  // what bounds it (0 = none stated)
  std::string ceiling;      // "copy 2x(out)+in", ...
  std::vector<double> samples_ms;
};

struct CodecBenchOptions {
  int reps = 5;
  int threads = 0;            // the multi-threaded CPU rows; 0 = all hardware threads
  double cpu_max_bytes = 1e9; // CPU rows use at most this many decoded bytes (single thread is slow)
  bool gpu = true;            // add the GPU rows when a device exists
};

struct CodecBenchResult {
  std::vector<CodecBenchRow> rows;
  std::string device;         // GPU name, or "" when none
  double copy_gbps = 0, h2d_pinned_gbps = 0, h2d_pageable_gbps = 0;
  bool gpu_bit_exact = false; // GPU output == CPU reference decoder on every tile
};

CodecBenchResult bench_codec(const CllmFile& file, const CodecBenchOptions& opt);

}  // namespace cllm
