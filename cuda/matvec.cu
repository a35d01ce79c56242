// y = W x for one token: the batch-1 decoding step reads every weight once, so this kernel
// is about memory bandwidth: one warp per row, 16-byte loads, several in flight per lane.
// Each lane sums its elements in a fixed order and the warp reduces in a fixed tree, so the
// result depends only on the inputs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace cllm::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // warps per block
constexpr int kUnroll = 4;        // 16-byte loads in flight per lane

// Sum of products of the elements packed in two 16-byte words.
__device__ __forceinline__ float dot16(uint4 a, uint4 b, __nv_bfloat16) {
  const __nv_bfloat162* x = reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162* y = reinterpret_cast<const __nv_bfloat162*>(&b);
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 u = __bfloat1622float2(x[i]), v = __bfloat1622float2(y[i]);
    s += u.x * v.x + u.y * v.y;
  }
  return s;
}
__device__ __forceinline__ float dot16(uint4 a, uint4 b, __half) {
  const __half2* x = reinterpret_cast<const __half2*>(&a);
  const __half2* y = reinterpret_cast<const __half2*>(&b);
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 u = __half22float2(x[i]), v = __half22float2(y[i]);
    s += u.x * v.x + u.y * v.y;
  }
  return s;
}
__device__ __forceinline__ float dot16(uint4 a, uint4 b, float) {
  return __uint_as_float(a.x) * __uint_as_float(b.x) + __uint_as_float(a.y) * __uint_as_float(b.y) +
         __uint_as_float(a.z) * __uint_as_float(b.z) + __uint_as_float(a.w) * __uint_as_float(b.w);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(float v) { return v; }

template <class T, bool kVector>
__global__ void __launch_bounds__(kRowsPerBlock * 32)
    matvec_kernel(const T* __restrict__ w, const T* __restrict__ x, float* __restrict__ y, int d, int k,
                  bool accumulate) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= d) return;
  const T* wr = w + static_cast<size_t>(row) * k;
  float sum = 0.0f;
  if (kVector) {
    constexpr int per = 16 / sizeof(T);
    const uint4* w4 = reinterpret_cast<const uint4*>(wr);
    const uint4* x4 = reinterpret_cast<const uint4*>(x);
    const int n4 = k / per;
    int i = lane;
    for (; i + 32 * (kUnroll - 1) < n4; i += 32 * kUnroll) {
      uint4 a[kUnroll], b[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) a[u] = __ldg(w4 + i + 32 * u);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) b[u] = __ldg(x4 + i + 32 * u);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) sum += dot16(a[u], b[u], T());
    }
    for (; i < n4; i += 32) sum += dot16(__ldg(w4 + i), __ldg(x4 + i), T());
  } else {
    for (int i = lane; i < k; i += 32) sum += to_float(wr[i]) * to_float(x[i]);
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) y[row] = accumulate ? y[row] + sum : sum;
}

template <class T>
void launch(const void* w, const void* x, float* y, int d, int k, bool accumulate, cudaStream_t s) {
  const bool vector = k % (16 / sizeof(T)) == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const unsigned blocks = (d + kRowsPerBlock - 1) / kRowsPerBlock;
  const T* wt = static_cast<const T*>(w);
  const T* xt = static_cast<const T*>(x);
  if (vector) matvec_kernel<T, true><<<blocks, kRowsPerBlock * 32, 0, s>>>(wt, xt, y, d, k, accumulate);
  else matvec_kernel<T, false><<<blocks, kRowsPerBlock * 32, 0, s>>>(wt, xt, y, d, k, accumulate);
}

}  // namespace

void matvec(const void* w, DType dt, const void* x, float* y, int d, int k, bool accumulate, cudaStream_t s) {
  if (d <= 0) return;
  switch (dt) {
    case DType::BF16: launch<__nv_bfloat16>(w, x, y, d, k, accumulate, s); break;
    case DType::F16: launch<__half>(w, x, y, d, k, accumulate, s); break;
    case DType::F32: launch<float>(w, x, y, d, k, accumulate, s); break;
    default: fail("matvec: weights of dtype ", dtype_name(dt), " are not supported");
  }
  CLLM_CUDA_CHECK_LAUNCH("matvec");
}

}  // namespace cllm::cuda
