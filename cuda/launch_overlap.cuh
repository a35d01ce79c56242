// Programmatic dependent launch (sm_90 and newer): a kernel launched with the overlap
// attribute may start while the previous kernel in its stream is still running, and do the
// work that does not depend on it (a matrix-vector product's weight loads: the weights are
// never written while the model runs in full mode). Device side of cuda/matvec.cu's launches;
// no-ops on older GPUs and for kernels launched without the attribute.
#pragma once

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
// that leave most SMs idle: the next product loads its weights on them meanwhile.
__device__ __forceinline__ void let_next_kernel_start() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaTriggerProgrammaticLaunchCompletion();
#endif
}

}  // namespace cllm::cuda
