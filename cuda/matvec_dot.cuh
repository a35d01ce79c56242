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
// The same operations as dot16 for bf16, on values already in fp32 (w: 8 weights, x: 8 inputs):
// for the fused product, which makes its fp32 weights with one shift or mask each instead of
// __bfloat1622float2's permute and multiply. The expression has dot16's shape, so nvcc contracts
// it the same way (tests/test-gpu-fused.cpp holds the two to the same bits).
__device__ __forceinline__ float dot8(const float (&w)[8], const float (&x)[8]) {
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) s += w[2 * i] * x[2 * i] + w[2 * i + 1] * x[2 * i + 1];
  return s;
}

// A bf16x2 word as two fp32 values (exact: a bf16 is the top half of an fp32).
__device__ __forceinline__ void bf16x2_to_f32(uint32_t v, float& lo, float& hi) {
  lo = __uint_as_float(v << 16);
  hi = __uint_as_float(v & 0xFFFF0000u);
}
__device__ __forceinline__ void bf16x8_to_f32(uint4 v, float (&f)[8]) {
  bf16x2_to_f32(v.x, f[0], f[1]);
  bf16x2_to_f32(v.y, f[2], f[3]);
  bf16x2_to_f32(v.z, f[4], f[5]);
  bf16x2_to_f32(v.w, f[6], f[7]);
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
