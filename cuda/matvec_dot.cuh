// The per-chunk arithmetic of the matrix-vector products (cuda/matvec.cu) in one place, so that
// the fused layout's product (cuda/fused_matvec.cu) compiles to the very same operations and
// gives the same bits: a lane's 16-byte chunk of weights dotted with x's, in fp32,
// s = 0; s = s + (u.x * v.x + u.y * v.y) per pair (nvcc: fma(u.x, v.x, u.y * v.y); the CPU
// emulation in src/codec/fused_dot.h spells it out).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace cllm::cuda {

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

// The warp's fixed reduction tree: every lane ends with the same sum.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace cllm::cuda
