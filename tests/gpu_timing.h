// Timing for the GPU benchmarks (bench-gpu-*): medians of CUDA-event times after a warm-up.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "cuda/cuda_check.h"

namespace cllm::bench {

// Median time in ms of fn() over reps runs (reps >= 1), after two warm-up runs. fn() enqueues work on the
// default stream; the events bracket it there.
inline double median_ms(int reps, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  CLLM_CUDA_CHECK(cudaEventCreate(&a));
  CLLM_CUDA_CHECK(cudaEventCreate(&b));
  fn();
  fn();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    CLLM_CUDA_CHECK(cudaEventRecord(a));
    fn();
    CLLM_CUDA_CHECK(cudaEventRecord(b));
    CLLM_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    CLLM_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  CLLM_CUDA_CHECK(cudaEventDestroy(a));
  CLLM_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace cllm::bench
