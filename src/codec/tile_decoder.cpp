// The reference tile decoder (docs/codec.md): the definition of the bitstream where the text
// is unclear, and the oracle for the GPU decoder. It checks the layout and tables first
// (parse_tile_layout), then decodes every chunk, bounding every word read by the chunk's
// stream and checking at the end that all states are back at 2^16 and every word was used.
// The scalar loop here is the reference; for bf16/f16 most steps run in its AVX2 twin
// (decode_steps_avx2.cpp) where the CPU has AVX2.
#include <cstring>
#include <type_traits>

#include "codec/codec.h"
#include "codec/rans_table.h"
#include "codec/simd_avx2.h"
#include "codec/symbol_split.h"
#include "codec/tile_layout.h"
#include "common/error.h"

namespace cllm::codec {

namespace {

// The decode tables as plain pointers held in registers: the output is written through
// uint8_t*, which may alias anything, so members read through a reference would be reloaded
// after every store.
struct DecodeTables {
  const uint16_t* freq;
  const uint16_t* bias;
  const uint8_t* symbol;
  const uint32_t* packed;  // null: no SIMD loop
};

struct ChunkStream {
  const uint8_t* begin;
  const uint8_t* end;
  uint32_t index;  // chunk number in the tile, for messages
};

// Phase 1 of a step for one lane (docs/codec.md, "Decoding"): the symbol, the element, and the
// state before its refill; returns 1 when the lane takes a word. P is a template parameter so
// shifts and masks are immediates. Whatever the stream holds, a state in [2^16, 2^32) gives a
// new state in [2^(16 - P), 2^32) (>= freq * (x >> P), < freq << (32 - P) <= 2^32), so one
// 16-bit word always brings it back into [2^16, 2^32).
template <class Split, uint32_t P>
inline uint32_t decode_lane(uint32_t& x, const DecodeTables tab, const uint8_t* raw, uint8_t* out) {
  const uint32_t slot = x & ((1u << P) - 1);
  const uint32_t s = tab.symbol[slot];
  x = uint32_t(tab.freq[slot]) * (x >> P) + tab.bias[slot];
  Split::store(out, Split::join(s, raw));
  return static_cast<uint32_t>((uint64_t(x) - kStateLow) >> 63);  // x < 2^16, without a branch
}

// Phase 2 of a step: the lanes in `mask` (below 2^16) take the next words in lane order, as a
// GPU warp does with a ballot and a population count. One bounds check per step, and work only
// for the lanes that refill (about 1 in 6 at 2.6 bits per symbol).
inline void refill(uint32_t* x, uint32_t mask, const uint8_t*& wp, const ChunkStream& cs) {
  if (2 * static_cast<ptrdiff_t>(__builtin_popcount(mask)) > cs.end - wp)
    fail("rans tile: chunk ", cs.index, " reads past its stream (", cs.end - cs.begin, " bytes)");
  for (; mask != 0; mask &= mask - 1) {
    const auto l = static_cast<uint32_t>(__builtin_ctz(mask));
    x[l] = (x[l] << 16) | load_u16(wp);
    wp += 2;
  }
}

// Decodes the n (1..32768) elements of one chunk: raw points at the chunk's raw bytes, out at
// its first output element.
template <class Split, uint32_t P>
void decode_chunk(const DecodeTables tab, const ChunkStream cs, const uint8_t* raw, uint8_t* out, uint32_t n) {
  constexpr size_t kOut = sizeof(typename Split::Value), kRaw = Split::kRawBytes;
  uint32_t x[kLanes];
  for (uint32_t l = 0; l < kLanes; ++l) {
    x[l] = load_u32(cs.begin + 4 * l);
    CLLM_CHECK(x[l] >= kStateLow, "rans tile: chunk ", cs.index, " lane ", l, " starts in state ", x[l],
               ", below 2^16");
  }
  const uint8_t* wp = cs.begin + kStateBytes;
  const uint32_t full_steps = n / kLanes;
  uint32_t t = 0;
  if constexpr (std::is_same_v<Split, Split16>) {
    if (tab.packed) t = decode_steps16_avx2(x, tab.packed, P, raw, out, full_steps, wp, cs.end);
  }
  for (; t < full_steps; ++t) {
    const uint8_t* r = raw + size_t(t) * kLanes * kRaw;
    uint8_t* o = out + size_t(t) * kLanes * kOut;
    uint32_t mask = 0;
#pragma GCC unroll 32
    for (uint32_t l = 0; l < kLanes; ++l) mask |= decode_lane<Split, P>(x[l], tab, r + l * kRaw, o + l * kOut) << l;
    refill(x, mask, wp, cs);
  }
  if (const uint32_t done = full_steps * kLanes; done < n) {  // the last, partial step
    uint32_t mask = 0;
    for (uint32_t l = 0; done + l < n; ++l)
      mask |= decode_lane<Split, P>(x[l], tab, raw + size_t(done + l) * kRaw, out + size_t(done + l) * kOut) << l;
    refill(x, mask, wp, cs);
  }

  // The encoder starts every lane at 2^16 and the stream holds exactly the words it pushed.
  for (uint32_t l = 0; l < kLanes; ++l)
    CLLM_CHECK(x[l] == kStateLow, "rans tile: chunk ", cs.index, " lane ", l, " ends in state ", x[l],
               ", expected 2^16 (corrupt stream)");
  const size_t used = static_cast<size_t>(wp - cs.begin), size = static_cast<size_t>(cs.end - cs.begin);
  CLLM_CHECK(chunk_stream_bytes((used - kStateBytes) / 2) == size, "rans tile: chunk ", cs.index, " used ",
             used, " of its ", size, " stream bytes (corrupt stream)");
  for (const uint8_t* p = wp; p < cs.end; ++p)
    CLLM_CHECK(*p == 0, "rans tile: chunk ", cs.index, " has a non-zero padding byte at stream offset ",
               p - cs.begin);
}

template <class Split, uint32_t P>
void decode_chunks(const DecodeTables tab, const uint8_t* tile, const TileLayout& l, uint8_t* dst) {
  constexpr size_t kOut = sizeof(typename Split::Value);
  const uint8_t* streams = tile + l.stream_offset;
  uint32_t begin = 0;
  for (uint32_t k = 0; k < l.n_chunks; ++k) {
    const uint32_t end = load_u32(tile + l.chunk_end_offset + 4 * k);  // checked by parse_tile_layout
    const size_t first = size_t(k) * kChunkElems;
    decode_chunk<Split, P>(tab, ChunkStream{streams + begin, streams + end, k},
                           tile + l.raw_offset + first * Split::kRawBytes, dst + first * kOut,
                           chunk_elems(l.n_elems, k));
    begin = end;
  }
}

template <class Split>
void decode_rans_tile(const uint8_t* tile, const TileLayout& l, uint8_t* dst) {
  // Per thread: the 2^P-entry tables are rebuilt for every tile but not reallocated.
  thread_local RansDecodeTable table;
  table.build(read_freq_table(tile + l.freq_offset, l.prob_bits, l.sym_lo, l.sym_count));
  const DecodeTables tab{table.freq.data(), table.bias.data(), table.symbol.data(),
                         simd_enabled() ? table.packed.data() : nullptr};
  static_assert(kMinProbBits == 8 && kMaxProbBits == 12, "one case per prob_bits below");
  switch (l.prob_bits) {
    case 8: return decode_chunks<Split, 8>(tab, tile, l, dst);
    case 9: return decode_chunks<Split, 9>(tab, tile, l, dst);
    case 10: return decode_chunks<Split, 10>(tab, tile, l, dst);
    case 11: return decode_chunks<Split, 11>(tab, tile, l, dst);
    case 12: return decode_chunks<Split, 12>(tab, tile, l, dst);
  }
  fail("rans tile: prob_bits ", l.prob_bits, " outside ", kMinProbBits, "..", kMaxProbBits);
}

}  // namespace

void decode_tile(DType t, const uint8_t* tile, size_t tile_size, void* dst, size_t n) {
  const TileLayout l = parse_tile_layout(t, tile, tile_size);
  CLLM_CHECK(n == l.n_elems, "tile holds ", l.n_elems, " elements, expected ", n);
  auto* out = static_cast<uint8_t*>(dst);
  if (l.mode == TileMode::raw) {
    if (n > 0) std::memcpy(out, tile + kTileHeaderBytes, n * dtype_size(t));
    return;
  }
  if (t == DType::F32)
    decode_rans_tile<Split32>(tile, l, out);
  else
    decode_rans_tile<Split16>(tile, l, out);
}

}  // namespace cllm::codec
