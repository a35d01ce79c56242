// Every CUDA call is checked: a failure throws cllm::Error naming the call, file and line.
#pragma once

#include <cuda_runtime.h>

#include "common/error.h"
#include "common/log.h"

#define CLLM_CUDA_CHECK(call)                                                                    \
  do {                                                                                           \
    const cudaError_t cllm_err_ = (call);                                                        \
    if (cllm_err_ != cudaSuccess)                                                                \
      ::cllm::fail("CUDA error in ", #call, " at ", __FILE__, ":", __LINE__, ": ",               \
                   cudaGetErrorString(cllm_err_));                                               \
  } while (0)

// After a kernel launch: catches bad launch configurations at once.
#define CLLM_CUDA_CHECK_LAUNCH(name)                                                             \
  do {                                                                                           \
    const cudaError_t cllm_err_ = cudaGetLastError();                                            \
    if (cllm_err_ != cudaSuccess)                                                                \
      ::cllm::fail("CUDA error launching ", name, " at ", __FILE__, ":", __LINE__, ": ",         \
                   cudaGetErrorString(cllm_err_));                                               \
  } while (0)

// In destructors, which must not throw: a failed call (an error of earlier asynchronous work,
// such as a kernel's illegal access, surfaces at the next synchronization) is logged as an error
// naming the call, file and line, instead of being lost or blamed on the next engine's first call.
#define CLLM_CUDA_CHECK_NOTHROW(call)                                                            \
  do {                                                                                           \
    const cudaError_t cllm_err_ = (call);                                                        \
    if (cllm_err_ != cudaSuccess)                                                                \
      ::cllm::log_write(::cllm::LogLevel::error, ::cllm::cat("CUDA error in ", #call, " at ",  \
                        __FILE__, ":", __LINE__, ": ", cudaGetErrorString(cllm_err_)));          \
  } while (0)
