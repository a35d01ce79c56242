// AVX-512 (F, BW, VL) weight rows (cpu_kernels_isa.h), built with -mavx512f -mavx512bw
// -mavx512vl (and the AVX2 set) -ffp-contract=off. The order of every dot product is cpu::dot's
// (8 lanes, lane l taking i % 8 == l, the fixed tree), as in cpu_kernels_avx2.cpp; to fill a
// 16-float register, one register holds two rows: lanes 0-7 are row r's 8 lanes, lanes 8-15
// row r+1's, and the 8 inputs are broadcast to both halves. So this path gives the bits of the
// scalar and AVX2 paths. Products are exact (inputs rounded to the weights' dtype), so FMA
// rounds as a multiply then an add would. Attention and rounding use the AVX2 loops.
#include "model/cpu_kernels_isa.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX2__) && \
    defined(__FMA__) && defined(__F16C__)

// GCC 12's AVX-512 headers start some intrinsics from a deliberately undefined register and
// then warn about it where they are inlined (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

namespace cllm::cpu::kernels {

namespace {

inline __m128i load8_bits(const uint16_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
// The first m < 8 of 8 16-bit values, the rest zero (zero products leave a sum's bits alone).
inline __m128i load_tail_bits(const uint16_t* p, int m) {
  return _mm_maskz_loadu_epi16(static_cast<__mmask8>((1u << m) - 1), p);
}

template <bool kBf16>
inline __m512 widen16(__m256i h) {
  if constexpr (kBf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  else return _mm512_cvtph_ps(h);
}
template <bool kBf16>
inline __m256 widen8(__m128i h) {
  if constexpr (kBf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  else return _mm256_cvtph_ps(h);
}
inline __m256i join(__m128i lo, __m128i hi) { return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1); }

// 8 inputs in both halves of a 16-float register.
inline __m512 broadcast8(const float* x) {
  return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(x))));
}

// cpu_ops.cpp's reduce_lanes: ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)).
inline float reduce8(__m256 a) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 t = _mm_add_ps(s, _mm_shuffle_ps(s, s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehl_ps(t, t)));
}
inline __m256 low8(__m512 a) { return _mm512_castps512_ps256(a); }
inline __m256 high8(__m512 a) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)); }

inline void store(float* y, float v, bool accumulate) { *y = accumulate ? *y + v : v; }

// P pairs of rows (2P rows from row r) times T tokens from token t.
template <bool kBf16, int P, int T>
inline void pair_block(const RowsArgs& a, int r, int t) {
  const size_t k = static_cast<size_t>(a.k);
  const uint16_t* w = a.w + r * k;
  const float* x = a.x + static_cast<size_t>(t) * a.kx;
  __m512 acc[P][T];
  for (int i = 0; i < P; ++i)
    for (int j = 0; j < T; ++j) acc[i][j] = _mm512_setzero_ps();
  const int k8 = a.k & ~7;
  for (int e = 0; e < k8; e += 8) {
    __m512 wv[P];
    for (int i = 0; i < P; ++i)
      wv[i] = widen16<kBf16>(join(load8_bits(w + (2 * i) * k + e), load8_bits(w + (2 * i + 1) * k + e)));
    for (int j = 0; j < T; ++j) {
      const __m512 xv = broadcast8(x + static_cast<size_t>(j) * a.kx + e);
      for (int i = 0; i < P; ++i) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  if (k8 < a.k) {  // x is zero-padded to kx >= k8 + 8
    const int m = a.k - k8;
    for (int i = 0; i < P; ++i) {
      const __m512 wv =
          widen16<kBf16>(join(load_tail_bits(w + (2 * i) * k + k8, m), load_tail_bits(w + (2 * i + 1) * k + k8, m)));
      for (int j = 0; j < T; ++j)
        acc[i][j] = _mm512_fmadd_ps(wv, broadcast8(x + static_cast<size_t>(j) * a.kx + k8), acc[i][j]);
    }
  }
  for (int j = 0; j < T; ++j) {
    float* y = a.y + static_cast<size_t>(t + j) * a.ldy + r;
    for (int i = 0; i < P; ++i) {
      store(y + 2 * i, reduce8(low8(acc[i][j])), a.accumulate);
      store(y + 2 * i + 1, reduce8(high8(acc[i][j])), a.accumulate);
    }
  }
}

// One row (the odd one out) times T tokens, 8 lanes in a 256-bit register.
template <bool kBf16, int T>
inline void row_block(const RowsArgs& a, int r, int t) {
  const uint16_t* w = a.w + r * static_cast<size_t>(a.k);
  const float* x = a.x + static_cast<size_t>(t) * a.kx;
  __m256 acc[T];
  for (int j = 0; j < T; ++j) acc[j] = _mm256_setzero_ps();
  const int k8 = a.k & ~7;
  for (int e = 0; e < k8; e += 8) {
    const __m256 wv = widen8<kBf16>(load8_bits(w + e));
    for (int j = 0; j < T; ++j)
      acc[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + static_cast<size_t>(j) * a.kx + e), acc[j]);
  }
  if (k8 < a.k) {
    const __m256 wv = widen8<kBf16>(load_tail_bits(w + k8, a.k - k8));
    for (int j = 0; j < T; ++j)
      acc[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + static_cast<size_t>(j) * a.kx + k8), acc[j]);
  }
  for (int j = 0; j < T; ++j) store(a.y + static_cast<size_t>(t + j) * a.ldy + r, reduce8(acc[j]), a.accumulate);
}

template <bool kBf16, int T>
inline void rows_for_tokens(const RowsArgs& a, int r0, int r1, int t) {
  int r = r0;
  for (; r + 8 <= r1; r += 8) pair_block<kBf16, 4, T>(a, r, t);
  for (; r + 2 <= r1; r += 2) pair_block<kBf16, 1, T>(a, r, t);
  if (r < r1) row_block<kBf16, T>(a, r, t);
}

// Rows in blocks of 8 (4 register pairs); tokens in groups of 4 (16 accumulators + 4
// weights + 1 input of the 32 registers), the block's weights reused from cache by each group.
template <bool kBf16>
void rows(const RowsArgs& a, int r0, int r1) {
  constexpr int kRowBlock = 8;
  for (int rb = r0; rb < r1; rb += kRowBlock) {
    const int re = rb + kRowBlock < r1 ? rb + kRowBlock : r1;
    int t = 0;
    for (; t + 4 <= a.n; t += 4) rows_for_tokens<kBf16, 4>(a, rb, re, t);
    switch (a.n - t) {
      case 3: rows_for_tokens<kBf16, 3>(a, rb, re, t); break;
      case 2: rows_for_tokens<kBf16, 2>(a, rb, re, t); break;
      case 1: rows_for_tokens<kBf16, 1>(a, rb, re, t); break;
      default: break;
    }
  }
}

void rows_bf16(const RowsArgs& a, int r0, int r1) { rows<true>(a, r0, r1); }
void rows_f16(const RowsArgs& a, int r0, int r1) { rows<false>(a, r0, r1); }

// Attention and rounding (null here) come from the AVX2 table (cpu_kernels_bf16.cpp).
constexpr IsaKernels kTable = {rows_bf16, rows_f16, nullptr, nullptr, nullptr, nullptr, false};

}  // namespace

const IsaKernels* avx512_kernels() { return &kTable; }

}  // namespace cllm::cpu::kernels

#else

const cllm::cpu::kernels::IsaKernels* cllm::cpu::kernels::avx512_kernels() { return nullptr; }

#endif
