// AVX512_BF16 rows of bf16 weights (cpu_kernels_isa.h), built with the AVX-512 flags plus
// -mavx512bf16. vdpbf16ps multiplies 32 bf16 pairs and adds each two neighbours' products into
// one of 16 fp32 lanes: half the instructions of widening and FMA, and no widening at all,
// which is what bounds batched products on AVX-512 cores. Its lanes hold pairs (elements
// 2j, 2j+1 of each 32 go to lane j), and how it rounds inside a pair is the CPU's (Intel
// documents one rounding per product added; hardware has been seen to differ, and it flushes
// subnormals), so this path is not bit-identical to the scalar one: tests/test-cpu-kernels.cpp
// holds it to the error bound of two fp32 summations of the same exact products.
#include "model/cpu_kernels_isa.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512BF16__)

// GCC 12's AVX-512 headers start some intrinsics from a deliberately undefined register and
// then warn about it where they are inlined (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

namespace cllm::cpu::kernels {

namespace {

inline __m512bh as_bf16(__m512i v) {  // the same 64 bytes as 32 bf16
  __m512bh r;
  __builtin_memcpy(&r, &v, sizeof r);
  return r;
}
inline __m512bh load32(const uint16_t* p) { return as_bf16(_mm512_loadu_si512(p)); }
inline __m512bh load_tail32(const uint16_t* p, int m) {  // the first m < 32, the rest zero
  return as_bf16(_mm512_maskz_loadu_epi16(static_cast<__mmask32>((1u << m) - 1), p));
}

inline void store(float* y, float v, bool accumulate) { *y = accumulate ? *y + v : v; }

// R rows from r times T tokens from t; xh is zero-padded to kh >= k rounded up to 32.
template <int R, int T>
inline void block(const RowsArgs& a, int r, int t) {
  const size_t k = static_cast<size_t>(a.k);
  const uint16_t* w = a.w + r * k;
  const uint16_t* x = a.xh + static_cast<size_t>(t) * a.kh;
  __m512 acc[R][T];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < T; ++j) acc[i][j] = _mm512_setzero_ps();
  const int k32 = a.k & ~31;
  for (int e = 0; e < k32; e += 32) {
    __m512bh wv[R];
    for (int i = 0; i < R; ++i) wv[i] = load32(w + i * k + e);
    for (int j = 0; j < T; ++j) {
      const __m512bh xv = load32(x + static_cast<size_t>(j) * a.kh + e);
      for (int i = 0; i < R; ++i) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv[i], xv);
    }
  }
  if (k32 < a.k) {
    for (int i = 0; i < R; ++i) {
      const __m512bh wv = load_tail32(w + i * k + k32, a.k - k32);
      for (int j = 0; j < T; ++j)
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv, load32(x + static_cast<size_t>(j) * a.kh + k32));
    }
  }
  for (int j = 0; j < T; ++j)
    for (int i = 0; i < R; ++i)
      store(a.y + static_cast<size_t>(t + j) * a.ldy + r + i, _mm512_reduce_add_ps(acc[i][j]), a.accumulate);
}

template <int T>
inline void rows_for_tokens(const RowsArgs& a, int r0, int r1, int t) {
  int r = r0;
  for (; r + 4 <= r1; r += 4) block<4, T>(a, r, t);
  for (; r < r1; ++r) block<1, T>(a, r, t);
}

void rows_bf16(const RowsArgs& a, int r0, int r1) {
  constexpr int kRowBlock = 8;
  for (int rb = r0; rb < r1; rb += kRowBlock) {
    const int re = rb + kRowBlock < r1 ? rb + kRowBlock : r1;
    int t = 0;
    for (; t + 4 <= a.n; t += 4) rows_for_tokens<4>(a, rb, re, t);
    switch (a.n - t) {
      case 3: rows_for_tokens<3>(a, rb, re, t); break;
      case 2: rows_for_tokens<2>(a, rb, re, t); break;
      case 1: rows_for_tokens<1>(a, rb, re, t); break;
      default: break;
    }
  }
}

// f16 rows, attention and rounding come from the AVX-512 and AVX2 tables.
constexpr IsaKernels kTable = {rows_bf16, nullptr, nullptr, nullptr, nullptr, nullptr, true};

}  // namespace

const IsaKernels* avx512_bf16_kernels() { return &kTable; }

}  // namespace cllm::cpu::kernels

#else

const cllm::cpu::kernels::IsaKernels* cllm::cpu::kernels::avx512_bf16_kernels() { return nullptr; }

#endif
