// The AVX2 encoder loop: the scalar encode_symbol of tile_encoder.cpp for 8 lanes at once. One
// gather per 8 lanes for the packed (cum, freq) entries; the words of the lanes that flush are
// moved to the top of a vector in lane order and stored below the previous ones; the quotient
// x / freq is a double-precision division, exact here (see below). About 2x the scalar loop.
#include "codec/simd_avx2.h"

#include "codec/codec.h"

#if CLLM_CODEC_AVX2
#include <immintrin.h>
#endif

namespace cllm::codec {

#if CLLM_CODEC_AVX2

namespace {

// For an 8-bit mask of flushing lanes, the source lane of each of the 8 output positions: the
// k flushing lanes, in lane order, at positions 8 - k .. 7 (so their words end at wp).
struct FlushOrder {
  uint8_t v[256][8];
  constexpr FlushOrder() : v() {
    for (uint32_t m = 0; m < 256; ++m) {
      uint32_t k = 0;
      for (uint32_t j = 0; j < 8; ++j) k += (m >> j) & 1;
      for (uint32_t j = 0, p = 8 - k; j < 8; ++j)
        if ((m >> j) & 1) v[m][p++] = static_cast<uint8_t>(j);
    }
  }
};
constexpr FlushOrder kFlushOrder{};

}  // namespace

// The quotient: x < freq << (32 - P), so x / freq < 2^(32 - P) <= 2^24. x and freq convert to
// double exactly, and the correctly rounded quotient of q + r / freq (0 < r < freq <= 2^12) is
// within 2^-29 of it, far from q + 1 (at least 2^-12 away), so truncation gives q exactly.
__attribute__((target("avx2,popcnt"))) void encode_steps_avx2(uint32_t* x, const uint32_t* packed,
                                                              uint32_t prob_bits, const uint8_t* sym,
                                                              uint32_t steps, uint16_t*& wp) {
  __m256i xs[4];
  for (int g = 0; g < 4; ++g) xs[g] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 8 * g));
  const __m256i k0xfff = _mm256_set1_epi32(0xFFF), k0xffff = _mm256_set1_epi32(0xFFFF), k1 = _mm256_set1_epi32(1);
  const __m256i k_m = _mm256_set1_epi32(static_cast<int>(1u << prob_bits));
  const __m256i k_sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256d k_2p31 = _mm256_set1_pd(2147483648.0);
  const __m128i shift_max = _mm_cvtsi32_si128(static_cast<int>(16 - prob_bits));
  uint16_t* w = wp;
  for (uint32_t t = steps; t-- > 0;) {
    const uint8_t* step_sym = sym + size_t(t) * kLanes;
#pragma GCC unroll 4
    for (int g = 3; g >= 0; --g) {
      const __m256i s = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(step_sym + 8 * g)));
      const __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(packed), s, 4);
      const __m256i freq = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(e, 12), k0xfff), k1);
      // Flush when x >= freq << (32 - P), i.e. (x >> 16) >= freq << (16 - P) (<= 2^16: signed-safe).
      const __m256i flush = _mm256_cmpgt_epi32(_mm256_srli_epi32(xs[g], 16),
                                               _mm256_sub_epi32(_mm256_sll_epi32(freq, shift_max), k1));
      const auto m = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(flush)));
      const __m256i order = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(kFlushOrder.v[m])));
      const __m256i low = _mm256_permutevar8x32_epi32(_mm256_and_si256(xs[g], k0xffff), order);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(w - 8),
                       _mm_packus_epi32(_mm256_castsi256_si128(low), _mm256_extracti128_si256(low, 1)));
      w -= _mm_popcnt_u32(m);
      const __m256i xf = _mm256_blendv_epi8(xs[g], _mm256_srli_epi32(xs[g], 16), flush);
      // x as double: flip the sign bit, convert as signed, add 2^31 back (all exact).
      const __m256i xb = _mm256_xor_si256(xf, k_sign);
      const __m256d x_lo = _mm256_add_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(xb)), k_2p31);
      const __m256d x_hi = _mm256_add_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(xb, 1)), k_2p31);
      const __m256d f_lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(freq));
      const __m256d f_hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(freq, 1));
      const __m256i q = _mm256_set_m128i(_mm256_cvttpd_epi32(_mm256_div_pd(x_hi, f_hi)),
                                         _mm256_cvttpd_epi32(_mm256_div_pd(x_lo, f_lo)));
      // x' = x + q (2^P - freq) + cum, as the scalar encoder (< 2^32, so 32-bit wrap is exact).
      xs[g] = _mm256_add_epi32(_mm256_add_epi32(xf, _mm256_mullo_epi32(q, _mm256_sub_epi32(k_m, freq))),
                               _mm256_and_si256(e, k0xfff));
    }
  }
  for (int g = 0; g < 4; ++g) _mm256_storeu_si256(reinterpret_cast<__m256i*>(x + 8 * g), xs[g]);
  wp = w;
}

#else  // not x86-64: the scalar loop does everything

void encode_steps_avx2(uint32_t*, const uint32_t*, uint32_t, const uint8_t*, uint32_t, uint16_t*&) {}

#endif

}  // namespace cllm::codec
