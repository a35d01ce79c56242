// Timed GPU measurements for `codecllm bench`: the card's ceilings and the decoder's speed.
// Times come from CUDA events after a warm-up; callers take medians.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cuda/decode_tasks.h"

namespace cllm::cuda {

struct Ceilings {
  double copy_gbps = 0;          // device-to-device copy, counting bytes read + written
  double h2d_pinned_gbps = 0;    // host-to-device from page-locked memory
  double h2d_pageable_gbps = 0;  // host-to-device from ordinary memory
  double gemm_tflops = 0;        // cuBLAS bf16 x bf16 -> fp32 product, 8192^3 (measure_gemm_tflops)
};

// Measures with buffers of `bytes` (a few hundred MB: well past the L2), median of reps.
Ceilings measure_ceilings(size_t bytes, int reps);

// TFLOP/s of cuBLAS bf16 GEMM with fp32 accumulation and output (what prompt processing
// runs), m x n x k, median of reps after one warm-up.
double measure_gemm_tflops(int m, int n, int k, int reps);

// Uploads src (the tiles of one or more groups, laid out as `tiles` says), then decodes the
// whole batch reps times after one warm-up; returns each run's milliseconds. *error gets the
// decoder's error flag; *out (if given) the decoded bytes of the last run.
std::vector<double> time_decode(const uint8_t* src, size_t src_bytes, const std::vector<TileTask>& tiles,
                                const std::vector<BlockTask>& blocks, size_t dst_bytes, int reps,
                                int* error, std::vector<uint8_t>* out = nullptr);

}  // namespace cllm::cuda
