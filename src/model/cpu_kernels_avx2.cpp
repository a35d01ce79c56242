// AVX2 + FMA + F16C inner loops (cpu_kernels_isa.h), built with -mavx2 -mfma -mf16c
// -ffp-contract=off. Every dot product keeps cpu::dot's order: 8 lanes, lane l taking the
// elements i with i % 8 == l, then the fixed tree ((l0+l4)+(l1+l5))+((l2+l6)+(l3+l7)); one
// 8-float register is one dot product's 8 lanes. The weight rows use FMA: their inputs are
// rounded to the weights' dtype, so every product is exact in fp32 and fma(w, x, acc) rounds
// exactly as acc + w * x does. Attention's q is not rounded, so its dot products multiply and
// add separately (contraction is off for this file).
#include "model/cpu_kernels_isa.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>

namespace cllm::cpu::kernels {

namespace {

// 8 weights widened to fp32: bf16 is the top half of an fp32, f16 converts exactly.
inline __m256 load8_bf16(const uint16_t* p) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
inline __m256 load8_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

template <bool kBf16>
inline __m256 load8(const uint16_t* p) {
  if constexpr (kBf16) return load8_bf16(p);
  else return load8_f16(p);
}

// The last k % 8 weights of a row, zero-padded to 8 (zero products leave a sum's bits alone:
// an accumulator that starts at +0 never becomes -0, and acc + (+-0) == acc).
template <bool kBf16>
inline __m256 load_tail(const uint16_t* p, int m) {
  alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < m; ++i) tmp[i] = p[i];
  return load8<kBf16>(tmp);
}

// cpu_ops.cpp's reduce_lanes: ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)).
inline float reduce8(__m256 a) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));  // a_i + a_{i+4}
  const __m128 t = _mm_add_ps(s, _mm_shuffle_ps(s, s, _MM_SHUFFLE(2, 3, 0, 1)));      // t0 = s0 + s1, t2 = s2 + s3
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehl_ps(t, t)));                            // t0 + t2
}

inline void store(float* y, float v, bool accumulate) { *y = accumulate ? *y + v : v; }

// R rows times T tokens starting at row r and token t: R*T dot products sharing each load.
template <bool kBf16, int R, int T>
inline void block(const RowsArgs& a, int r, int t) {
  const size_t k = static_cast<size_t>(a.k);
  const uint16_t* w = a.w + r * k;
  const float* x = a.x + static_cast<size_t>(t) * a.kx;
  __m256 acc[R][T];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < T; ++j) acc[i][j] = _mm256_setzero_ps();
  const int k8 = a.k & ~7;
  for (int e = 0; e < k8; e += 8) {
    __m256 wv[R];
    for (int i = 0; i < R; ++i) wv[i] = load8<kBf16>(w + i * k + e);
    for (int j = 0; j < T; ++j) {
      const __m256 xv = _mm256_loadu_ps(x + static_cast<size_t>(j) * a.kx + e);
      for (int i = 0; i < R; ++i) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  if (k8 < a.k) {  // x is zero-padded to kx >= k8 + 8
    for (int i = 0; i < R; ++i) {
      const __m256 wv = load_tail<kBf16>(w + i * k + k8, a.k - k8);
      for (int j = 0; j < T; ++j)
        acc[i][j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + static_cast<size_t>(j) * a.kx + k8), acc[i][j]);
    }
  }
  for (int j = 0; j < T; ++j)
    for (int i = 0; i < R; ++i) store(a.y + static_cast<size_t>(t + j) * a.ldy + r + i, reduce8(acc[i][j]), a.accumulate);
}

// Blocks of R rows for T tokens; the last rows one at a time.
template <bool kBf16, int R, int T>
inline void rows_for_tokens(const RowsArgs& a, int r0, int r1, int t) {
  int r = r0;
  for (; r + R <= r1; r += R) block<kBf16, R, T>(a, r, t);
  for (; r < r1; ++r) block<kBf16, 1, T>(a, r, t);
}

// Tokens in groups of 4 (3 rows x 4 tokens: 12 accumulators + 3 weights + 1 input, all 16
// registers; each input load feeds 3 FMAs, each weight conversion 4), the rest with 4 or 3
// rows. A block of 12 rows stays in L1/L2 while the token groups pass over it. (2 x 4 ran at
// 38% of one Zen 3 core's FMA peak at 16 tokens, 3 x 4 at 57%.)
template <bool kBf16>
void rows(const RowsArgs& a, int r0, int r1) {
  constexpr int kRowBlock = 12;
  for (int rb = r0; rb < r1; rb += kRowBlock) {
    const int re = rb + kRowBlock < r1 ? rb + kRowBlock : r1;
    int t = 0;
    for (; t + 4 <= a.n; t += 4) rows_for_tokens<kBf16, 3, 4>(a, rb, re, t);
    switch (a.n - t) {
      case 3: rows_for_tokens<kBf16, 3, 3>(a, rb, re, t); break;
      case 2: rows_for_tokens<kBf16, 4, 2>(a, rb, re, t); break;
      case 1: rows_for_tokens<kBf16, 4, 1>(a, rb, re, t); break;
      default: break;
    }
  }
}

void rows_bf16(const RowsArgs& a, int r0, int r1) { rows<true>(a, r0, r1); }
void rows_f16(const RowsArgs& a, int r0, int r1) { rows<false>(a, r0, r1); }

// One f16 element widened (the tails of attention rows whose head_dim is not a multiple of 8).
inline float f16_at(const uint16_t* p) { return _cvtsh_ss(*p); }

void scores_f16(float* scores, const float* q, const uint16_t* k, int n_pos, int kv_stride, int head_dim,
                float scale) {
  const int k8 = head_dim & ~7;
  for (int p = 0; p < n_pos; ++p) {
    const uint16_t* kp = k + static_cast<size_t>(p) * kv_stride;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < k8; i += 8) acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(q + i), load8_f16(kp + i)));
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    for (int i = k8; i < head_dim; ++i) lanes[i - k8] += q[i] * f16_at(kp + i);
    scores[p] = reduce8(_mm256_loadu_ps(lanes)) * scale;
  }
}

void weighted_sum_f16(float* out, const float* weights, float sum, const uint16_t* v, int n_pos, int kv_stride,
                      int head_dim) {
  const int k8 = head_dim & ~7;
  for (int i = 0; i < head_dim; ++i) out[i] = 0.0f;
  for (int p = 0; p < n_pos; ++p) {
    const float a = weights[p] / sum;
    const __m256 av = _mm256_set1_ps(a);
    const uint16_t* vp = v + static_cast<size_t>(p) * kv_stride;
    for (int i = 0; i < k8; i += 8)
      _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), _mm256_mul_ps(av, load8_f16(vp + i))));
    for (int i = k8; i < head_dim; ++i) out[i] += a * f16_at(vp + i);
  }
}

// f32 -> bf16 as common/dtype.h's f32_to_bf16: round to nearest even, NaN quietened.
inline __m256i bf16_bits8(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
  const __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F800000));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), lsb)), 16);
  const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, nan, is_nan);  // 8 values in the low halves of 32-bit lanes
}

inline void store_bits8(uint16_t* dst, __m256i b32) {
  const __m256i packed = _mm256_packus_epi32(b32, b32);  // per 128-bit half: 4 values, twice
  const __m256i ordered = _mm256_permute4x64_epi64(packed, _MM_SHUFFLE(3, 1, 2, 0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(ordered));
}

inline uint16_t bf16_bits1(float f) {
  alignas(32) float in[8] = {f, 0, 0, 0, 0, 0, 0, 0};
  alignas(32) uint32_t out[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(out), bf16_bits8(_mm256_load_ps(in)));
  return static_cast<uint16_t>(out[0]);
}

void round_bf16(const float* x, float* out, uint16_t* bits, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i b = bf16_bits8(_mm256_loadu_ps(x + i));
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(b, 16)));
    if (bits) store_bits8(bits + i, b);
  }
  for (; i < n; ++i) {
    const uint16_t b = bf16_bits1(x[i]);
    const uint32_t u = static_cast<uint32_t>(b) << 16;
    __builtin_memcpy(out + i, &u, 4);
    if (bits) bits[i] = b;
  }
}

void round_f16(const float* x, float* out, uint16_t* bits, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
    if (bits) _mm_storeu_si128(reinterpret_cast<__m128i*>(bits + i), h);
  }
  for (; i < n; ++i) {
    const uint16_t h = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    out[i] = _cvtsh_ss(h);
    if (bits) bits[i] = h;
  }
}

constexpr IsaKernels kTable = {rows_bf16, rows_f16, scores_f16, weighted_sum_f16, round_bf16, round_f16, false};

}  // namespace

const IsaKernels* avx2_kernels() { return &kTable; }

}  // namespace cllm::cpu::kernels

#else

const cllm::cpu::kernels::IsaKernels* cllm::cpu::kernels::avx2_kernels() { return nullptr; }

#endif
