#include "cuda/blas.h"

#include <cublas_v2.h>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

#define CLLM_CUBLAS_CHECK(call)                                                                  \
  do {                                                                                           \
    const cublasStatus_t cllm_st_ = (call);                                                      \
    if (cllm_st_ != CUBLAS_STATUS_SUCCESS)                                                       \
      ::cllm::fail("cuBLAS error in ", #call, " at ", __FILE__, ":", __LINE__, ": ",             \
                   cublasGetStatusString(cllm_st_));                                             \
  } while (0)

namespace cllm::cuda {

namespace {
cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    case DType::F32: return CUDA_R_32F;
    default: fail("linear layers of dtype ", dtype_name(dt), " are not supported");
  }
}
}  // namespace

Blas::Blas(cudaStream_t stream, void* workspace, size_t workspace_bytes) : stream_(stream) {
  cublasHandle_t h = nullptr;
  CLLM_CUBLAS_CHECK(cublasCreate(&h));
  handle_ = h;
  // cublasSetStream resets the workspace, so the stream comes first.
  CLLM_CUBLAS_CHECK(cublasSetStream(h, stream));
  CLLM_CUBLAS_CHECK(cublasSetWorkspace(h, workspace, workspace_bytes));
  CLLM_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));  // no TF32 for f32 models
}

Blas::~Blas() {
  if (handle_) cublasDestroy(static_cast<cublasHandle_t>(handle_));
}

void Blas::linear(const void* w, DType dt, const void* x, float* y, int ldy, int n, int k, int d, bool accumulate) {
  if (n <= 0 || d <= 0) return;
  if (n == 1) {
    matvec(w, dt, x, y, d, k, accumulate, stream_, overlap_);
    return;
  }
  // Column-major view: W is (k, d) with ld k, x is (k, n), y is (d, n) with ld ldy:
  // y = W^T x.
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const cudaDataType_t t = cuda_type(dt);
  CLLM_CUBLAS_CHECK(cublasGemmEx(static_cast<cublasHandle_t>(handle_), CUBLAS_OP_T, CUBLAS_OP_N, d, n, k, &alpha, w,
                                 t, k, x, t, k, &beta, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace cllm::cuda
