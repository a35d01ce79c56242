// Programmatic dependent launch (sm_90 and newer): a kernel launched with the overlap
// attribute may start while the previous kernel in its stream is still running, and do the
// work that does not depend on it (a matrix-vector product's weight loads: the weights are
// never written while the model runs in full mode). Used by the products (cuda/matvec.cu,
// cuda/fused_matvec.cu), the RMSNorm and attention; the device side is a no-op on older GPUs
// and for kernels launched without the attribute. start_kernel() is the host side.
#pragma once

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

namespace cllm::cuda {

// Waits until the previous kernel in the stream has finished and its writes are visible.
// Every thread must call it before reading anything that kernel (or an earlier one) writes.
__device__ __forceinline__ void wait_for_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaGridDependencySynchronize();
#endif
}

// Lets the next kernel, if launched with the overlap attribute, start now; it still waits for
// this one to finish (wait_for_previous_kernel) before reading its results. For small kernels
// that leave most SMs idle: the next product loads its weights on them meanwhile; for the
// products themselves: the next kernel's blocks take the SMs their last blocks leave, instead
// of waiting for the whole grid (its launch used to start only after the last block ended).
__device__ __forceinline__ void let_next_kernel_start() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaTriggerProgrammaticLaunchCompletion();
#endif
}

// The current device's compute capability, major * 10 + minor (90: Hopper), read once a
// process (the engine runs on one device), not at every launch.
inline int device_compute_capability() {
  static const int cc = [] {
    int device = 0, major = 0, minor = 0;
    CLLM_CUDA_CHECK(cudaGetDevice(&device));
    CLLM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    CLLM_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    return major * 10 + minor;
  }();
  return cc;
}

// Starts kernel in stream s (blocks of `threads`), after the stream's previous kernel; with
// `overlap` on sm_90 and newer as a programmatic dependent launch: its blocks may start, and
// load weights, while that kernel is still running.
template <class... Params, class... Args>
void start_kernel(void (*kernel)(Params...), unsigned blocks, unsigned threads, size_t smem, cudaStream_t s,
                  bool overlap, Args... args) {
  const bool hopper = device_compute_capability() >= 90;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = smem;
  config.stream = s;
  config.attrs = attr;
  config.numAttrs = overlap && hopper ? 1 : 0;
  CLLM_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...));
}

}  // namespace cllm::cuda
