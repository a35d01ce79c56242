// Internal to src/model: the per-ISA inner loops behind cpu_kernels_bf16.h. Each ISA lives in
// its own file compiled with that ISA's flags (src/model/CMakeLists.txt); everything else in
// the library is built for the baseline x86-64, and cpu_kernels_bf16.cpp picks a table at run
// time from what the CPU reports. This header is included by those files, so it declares
// only plain types and functions: an inline function or a template instantiated in an
// AVX-512 file could otherwise be the copy the linker keeps for the whole program.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cllm::cpu::kernels {

// Rows [r0, r1) of one product y (n, d) = x (n, k) @ w (d, k)^T, for all n tokens.
struct RowsArgs {
  const uint16_t* w = nullptr;   // (d, k) bf16 or f16 weights, row-major, rows k elements apart
  int k = 0;
  const float* x = nullptr;      // (n, kx) inputs already rounded to the weights' dtype, kx >= k
  int kx = 0;                    // rounded up to a multiple of 8, the padding zero
  const uint16_t* xh = nullptr;  // (n, kh) the same inputs as bf16 bits (avx512_bf16 only), else null
  int kh = 0;                    // rounded up to a multiple of 32, the padding zero
  int n = 0;
  float* y = nullptr;            // y[t * ldy + r]
  int ldy = 0;
  bool accumulate = false;       // y += dot (a residual add folded in) instead of y = dot
};
using RowsFn = void (*)(const RowsArgs& a, int r0, int r1);

// scores[p] = dot(q, k_p) * scale for p < n_pos, k_p = k + p * kv_stride (f16), the dot in
// cpu::dot's order (8 lanes, fixed tree) with separate multiplies and adds.
using ScoresFn = void (*)(float* scores, const float* q, const uint16_t* k, int n_pos, int kv_stride, int head_dim,
                          float scale);
// out[i] = sum over p of (weights[p] / sum) * v_p[i], p in order, as cpu::attention_head.
using WeightedSumFn = void (*)(float* out, const float* weights, float sum, const uint16_t* v, int n_pos,
                               int kv_stride, int head_dim);
// out[i] = x[i] rounded to bf16 (or f16) and widened back; bits (if not null) gets the 16-bit
// values. Round to nearest even; NaN stays NaN; f16 overflows to Inf.
using RoundFn = void (*)(const float* x, float* out, uint16_t* bits, size_t n);

struct IsaKernels {
  RowsFn rows_bf16 = nullptr;
  RowsFn rows_f16 = nullptr;
  ScoresFn scores_f16 = nullptr;
  WeightedSumFn weighted_sum_f16 = nullptr;
  RoundFn round_bf16 = nullptr;
  RoundFn round_f16 = nullptr;
  bool needs_bf16_input = false;  // rows_bf16 reads RowsArgs::xh
};

// Each returns its ISA's table, or null where the file was built without that ISA's flags
// (a non-x86 build). Whether the CPU has the ISA is the caller's question.
const IsaKernels* avx2_kernels();         // AVX2 + FMA + F16C
const IsaKernels* avx512_kernels();       // AVX-512 F/BW/VL (+ the AVX2 set)
const IsaKernels* avx512_bf16_kernels();  // the above + AVX512_BF16 (vdpbf16ps for bf16 rows)

}  // namespace cllm::cpu::kernels
