// Linear layers: y (n, d) fp32 = x (n, k) W^T (+ y), W (d, k) row-major as nn.Linear stores
// it, x in W's dtype. One token goes through the matrix-vector kernel (kernels.h); batches
// through cuBLAS (cublasGemmEx, fp32 accumulation, never TF32) with a fixed workspace, so
// results are reproducible run to run. Every cuBLAS call is checked.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "common/dtype.h"

namespace cllm::cuda {

class Blas {
 public:
  // All products run on `stream`; workspace is device memory of workspace_bytes that this
  // object uses for cuBLAS and must outlive it.
  Blas(cudaStream_t stream, void* workspace, size_t workspace_bytes);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // y rows are ldy floats apart (ldy >= d).
  void linear(const void* w, DType dt, const void* x, float* y, int ldy, int n, int k, int d, bool accumulate);

  // One token's products may load their weights while the previous kernel still runs
  // (matvec's overlap_previous): only for weights that nothing writes while they are used.
  void overlap_single_token_products(bool on) { overlap_ = on; }

 private:
  void* handle_ = nullptr;  // cublasHandle_t
  cudaStream_t stream_;
  bool overlap_ = false;
};

}  // namespace cllm::cuda
