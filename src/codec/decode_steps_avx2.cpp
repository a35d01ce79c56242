// The AVX2 decoder loop for 16-bit elements: one gather per 8 lanes for the packed (symbol,
// freq, slot - cum) entries, and the refill done the way a GPU warp does it: the lanes below
// 2^16 take consecutive words in lane order, each finding its word by counting the refilling
// lanes below it (a 256-entry table per 8 lanes). About 2.5x the scalar loop. Also the switch
// that turns the AVX2 loops on and off.
#include "codec/simd_avx2.h"

#include <atomic>

#include "codec/codec.h"

#if CLLM_CODEC_AVX2
#include <immintrin.h>
#endif

namespace cllm::codec {

#if CLLM_CODEC_AVX2

namespace {

// For an 8-bit mask of refilling lanes, lane j's word index: the refilling lanes below j.
struct WordIndex {
  uint8_t v[256][8];
  constexpr WordIndex() : v() {
    for (uint32_t m = 0; m < 256; ++m)
      for (uint32_t j = 0, below = 0; j < 8; below += (m >> j) & 1, ++j) v[m][j] = static_cast<uint8_t>(below);
  }
};
constexpr WordIndex kWordIndex{};

bool cpu_has_avx2() {
  __builtin_cpu_init();  // may run before libgcc's own initialiser: this is a static's initialiser
  return __builtin_cpu_supports("avx2");
}

std::atomic<bool> g_simd{cpu_has_avx2()};

}  // namespace

bool simd_enabled() { return g_simd.load(std::memory_order_relaxed); }
void set_simd_enabled(bool allow) { g_simd.store(allow && cpu_has_avx2(), std::memory_order_relaxed); }

__attribute__((target("avx2,popcnt"))) uint32_t decode_steps16_avx2(uint32_t* x, const uint32_t* packed,
                                                                    uint32_t prob_bits, const uint8_t* raw,
                                                                    uint8_t* out, uint32_t steps,
                                                                    const uint8_t*& wp, const uint8_t* end) {
  __m256i xs[4];
  for (int g = 0; g < 4; ++g) xs[g] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 8 * g));
  const __m256i slot_mask = _mm256_set1_epi32(static_cast<int>((1u << prob_bits) - 1));
  const __m128i shift_p = _mm_cvtsi32_si128(static_cast<int>(prob_bits));
  const __m256i k0xff = _mm256_set1_epi32(0xFF), k0xfff = _mm256_set1_epi32(0xFFF), k1 = _mm256_set1_epi32(1);
  const __m256i k0x80 = _mm256_set1_epi32(0x80), k0x7f = _mm256_set1_epi32(0x7F), zero = _mm256_setzero_si256();
  const uint8_t* w = wp;
  uint32_t t = 0;
  for (; t < steps && end - w >= 64; ++t) {
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      // Phase 1, as decode_lane: e = packed[slot]; y = freq * (x >> P) + slot - cum.
      const __m256i slot = _mm256_and_si256(xs[g], slot_mask);
      const __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(packed), slot, 4);
      const __m256i freq = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(e, 8), k0xfff), k1);
      const __m256i y = _mm256_add_epi32(_mm256_mullo_epi32(freq, _mm256_srl_epi32(xs[g], shift_p)),
                                         _mm256_srli_epi32(e, 20));
      // Phase 2: y < 2^16 (y >= 4, and (y >> 16) == 0 is unsigned-safe) takes a word.
      const __m256i need = _mm256_cmpeq_epi32(_mm256_srli_epi32(y, 16), zero);
      const auto m = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(need)));
      const __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
      const __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(kWordIndex.v[m])));
      const __m256i refilled = _mm256_or_si256(_mm256_slli_epi32(y, 16), _mm256_permutevar8x32_epi32(words, index));
      xs[g] = _mm256_blendv_epi8(y, refilled, need);
      w += 2 * _mm_popcnt_u32(m);
      // The elements: ((r & 0x80) << 8) | (s << 7) | (r & 0x7F), packed to 8 u16.
      const __m256i r = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(raw + 8 * g)));
      const __m256i v = _mm256_or_si256(
          _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(r, k0x80), 8), _mm256_and_si256(r, k0x7f)),
          _mm256_slli_epi32(_mm256_and_si256(e, k0xff), 7));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * g),
                       _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
    }
    raw += kLanes;
    out += 2 * kLanes;
  }
  for (int g = 0; g < 4; ++g) _mm256_storeu_si256(reinterpret_cast<__m256i*>(x + 8 * g), xs[g]);
  wp = w;
  return t;
}

#else  // not x86-64: the scalar loop does everything

bool simd_enabled() { return false; }
void set_simd_enabled(bool) {}
uint32_t decode_steps16_avx2(uint32_t*, const uint32_t*, uint32_t, const uint8_t*, uint8_t*, uint32_t,
                             const uint8_t*&, const uint8_t*) {
  return 0;
}

#endif

}  // namespace cllm::codec
