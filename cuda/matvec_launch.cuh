// What the matrix-vector products of full mode (cuda/matvec.cu) and of fused mode
// (cuda/fused_matvec.cu) share around their arithmetic: x staged in shared memory once per
// block, and the launch that may overlap the previous kernel (cuda/launch_overlap.cuh), whose
// blocks issue their first weight loads before they wait for x.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/launch_overlap.cuh"

namespace cllm::cuda {

// f(i, x4[i]) for this thread's 16-byte pieces i of x (n4 of them, i = threadIdx.x + m
// blockDim.x), kStageLoads loads in flight before the first f: a loop of load-then-store waits
// an L2 round trip for every piece (7 pieces a thread for 14336 columns). Full mode's
// tg128 on the H100: 172.8 against 171.3 tok/s. Fused mode's products stage x here too.
constexpr int kStageLoads = 4;
template <class F>
__device__ __forceinline__ void for_each_x_piece(const void* x, int n4, F f) {
  const uint4* x4 = static_cast<const uint4*>(x);
  for (int first = threadIdx.x; first < n4; first += kStageLoads * blockDim.x) {
    uint4 v[kStageLoads];
#pragma unroll
    for (int u = 0; u < kStageLoads; ++u) {
      const int i = first + u * blockDim.x;
      if (i < n4) v[u] = __ldg(x4 + i);
    }
#pragma unroll
    for (int u = 0; u < kStageLoads; ++u) {
      const int i = first + u * blockDim.x;
      if (i < n4) f(i, v[u]);
    }
  }
}

// x (k elements of T, k * sizeof(T) a multiple of 16, 16-byte aligned) staged in shared memory
// by the whole block (every thread must call it): warps then read it without going to L1/L2
// for every 16 bytes of weights. Waits for the previous kernel first (x is its output).
// Returns the staged copy.
template <class T>
__device__ __forceinline__ const T* stage_x(const T* __restrict__ x, int k) {
  extern __shared__ uint4 x_smem[];
  wait_for_previous_kernel();
  const int n4 = static_cast<int>(k * sizeof(T) / 16);
  for_each_x_piece(x, n4, [&](int i, uint4 v) { x_smem[i] = v; });
  __syncthreads();
  return reinterpret_cast<const T*>(x_smem);
}

// Shared memory for x; above 48 KiB a kernel must opt in.
template <class K>
size_t x_smem_bytes(K kernel, size_t bytes) {
  if (bytes > (48u << 10))
    CLLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  return bytes;
}

}  // namespace cllm::cuda
