// The tile header and layout (docs/codec.md, "Tile layout"): writing it, and checking every
// field, offset and table of a stored tile before anything reads the streams.
#include "codec/tile_layout.h"

#include "codec/rans_table.h"
#include "common/error.h"

namespace cllm::codec {

uint32_t raw_bytes_per_elem(DType t) {
  switch (t) {
    case DType::BF16:
    case DType::F16: return tile_format::kRawBytes16;
    case DType::F32: return tile_format::kRawBytes32;
    case DType::U8: return 1;  // no symbol: the whole byte is raw (u8 tiles are always raw)
  }
  fail("codec: unknown dtype ", static_cast<int>(t));
}

uint64_t place_rans_parts(DType t, TileLayout& l) {
  l.freq_offset = tile_format::kFreqOffset;
  const uint64_t chunk_end_offset = align16(uint64_t(l.freq_offset) + 2ull * l.sym_count);
  const uint64_t raw_offset = align16(chunk_end_offset + 4ull * l.n_chunks);
  const uint64_t stream_offset = align16(raw_offset + uint64_t(l.n_elems) * raw_bytes_per_elem(t));
  // Callers bound n_elems (<= 2^24) and n_chunks (== ceil(n_elems / 2^15)) first, so these fit.
  l.chunk_end_offset = static_cast<uint32_t>(chunk_end_offset);
  l.raw_offset = static_cast<uint32_t>(raw_offset);
  l.stream_offset = static_cast<uint32_t>(stream_offset);
  return stream_offset + l.stream_bytes;
}

void write_tile_header(const TileLayout& l, uint8_t* dst) {
  const bool rans = l.mode == TileMode::rans;
  using namespace tile_format;
  dst[kHeaderMode] = static_cast<uint8_t>(l.mode);
  dst[kHeaderProbBits] = static_cast<uint8_t>(rans ? l.prob_bits : 0);
  dst[kHeaderSymLo] = static_cast<uint8_t>(rans ? l.sym_lo : 0);
  dst[kHeaderSymCountM1] = static_cast<uint8_t>(rans ? l.sym_count - 1 : 0);
  store_u32(dst + kHeaderNElems, l.n_elems);
  store_u32(dst + kHeaderNChunks, rans ? l.n_chunks : 0);
  store_u32(dst + kHeaderStreamBytes, rans ? l.stream_bytes : 0);
}

namespace {

// Padding between parts must be zero (docs/codec.md): it catches writers that misplace a part.
void check_zero(const uint8_t* tile, uint64_t begin, uint64_t end, const char* what) {
  for (uint64_t i = begin; i < end; ++i)
    CLLM_CHECK(tile[i] == 0, "rans tile: non-zero padding byte at offset ", i, " after the ", what);
}

void check_chunk_ends(const uint8_t* tile, const TileLayout& l) {
  uint64_t prev = 0;
  for (uint32_t k = 0; k < l.n_chunks; ++k) {
    const uint64_t end = load_u32(tile + l.chunk_end_offset + 4ull * k);
    CLLM_CHECK(end % kStreamAlign == 0, "rans tile: chunk ", k, " ends at ", end, ", not a multiple of ",
               kStreamAlign);
    CLLM_CHECK(end >= prev, "rans tile: chunk ", k, " ends at ", end, ", before its start ", prev);
    const uint64_t size = end - prev;
    // Each element pushes at most one word, so a chunk of n elements has at most n words.
    const uint64_t max_size = chunk_stream_bytes(chunk_elems(l.n_elems, k));
    CLLM_CHECK(size >= kStateBytes && size <= max_size, "rans tile: chunk ", k, " stream of ", size,
               " bytes, expected ", kStateBytes, "..", max_size);
    prev = end;
  }
  CLLM_CHECK(prev == l.stream_bytes, "rans tile: last chunk ends at ", prev, ", stream_bytes is ",
             l.stream_bytes);
}

}  // namespace

TileLayout parse_tile_layout(DType t, const uint8_t* tile, size_t tile_size) {
  CLLM_CHECK(dtype_valid(static_cast<uint8_t>(t)), "tile: unknown dtype ", static_cast<int>(t));
  CLLM_CHECK(tile_size >= kTileHeaderBytes, "tile of ", tile_size, " bytes is shorter than its ",
             kTileHeaderBytes, "-byte header");
  TileLayout l{};
  using namespace tile_format;
  const uint8_t mode = tile[kHeaderMode];
  CLLM_CHECK(mode <= 1, "tile: unknown mode ", int(mode), " (0 = raw, 1 = rans)");
  l.mode = static_cast<TileMode>(mode);
  l.prob_bits = tile[kHeaderProbBits];
  l.sym_lo = tile[kHeaderSymLo];
  l.sym_count = uint32_t(tile[kHeaderSymCountM1]) + 1;
  l.n_elems = load_u32(tile + kHeaderNElems);
  l.n_chunks = load_u32(tile + kHeaderNChunks);
  l.stream_bytes = load_u32(tile + kHeaderStreamBytes);
  CLLM_CHECK(l.n_elems <= kMaxTileElems, "tile: n_elems ", l.n_elems, " exceeds the limit ", kMaxTileElems);

  if (l.mode == TileMode::raw) {
    CLLM_CHECK(tile[kHeaderProbBits] == 0 && tile[kHeaderSymLo] == 0 && tile[kHeaderSymCountM1] == 0 &&
                   l.n_chunks == 0 && l.stream_bytes == 0,
               "raw tile: header bytes 1..3 and 8..15 must be zero (prob_bits ", l.prob_bits, ", sym_lo ",
               l.sym_lo, ", sym_count-1 ", int(tile[kHeaderSymCountM1]), ", n_chunks ", l.n_chunks, ", stream_bytes ",
               l.stream_bytes, ")");
    const uint64_t expect = kTileHeaderBytes + uint64_t(l.n_elems) * dtype_size(t);
    CLLM_CHECK(tile_size == expect, "raw tile: ", tile_size, " bytes, expected ", expect, " for ", l.n_elems,
               " elements of ", dtype_name(t));
    l.prob_bits = l.sym_lo = l.sym_count = 0;
    l.freq_offset = l.chunk_end_offset = l.raw_offset = l.stream_offset = kTileHeaderBytes;
    return l;
  }

  CLLM_CHECK(t != DType::U8, "rans tile for a u8 tensor (u8 tiles are always raw)");
  CLLM_CHECK(l.n_elems >= 1, "rans tile: n_elems is 0 (an empty tile must be raw)");
  CLLM_CHECK(l.prob_bits >= kMinProbBits && l.prob_bits <= kMaxProbBits, "rans tile: prob_bits ", l.prob_bits,
             " outside ", kMinProbBits, "..", kMaxProbBits);
  CLLM_CHECK(l.sym_lo + l.sym_count <= 256, "rans tile: symbols ", l.sym_lo, "..", l.sym_lo + l.sym_count - 1,
             " exceed 255");
  CLLM_CHECK(l.n_chunks == chunk_count(l.n_elems), "rans tile: n_chunks ", l.n_chunks, ", expected ",
             chunk_count(l.n_elems), " for ", l.n_elems, " elements");
  const uint64_t end = place_rans_parts(t, l);
  CLLM_CHECK(end == tile_size, "rans tile: ", tile_size, " bytes, but its header describes ", end,
             " (streams at ", l.stream_offset, " + stream_bytes ", l.stream_bytes, ")");

  read_freq_table(tile + l.freq_offset, l.prob_bits, l.sym_lo, l.sym_count);  // sum == 2^P
  check_zero(tile, l.freq_offset + 2ull * l.sym_count, l.chunk_end_offset, "frequency table");
  check_zero(tile, l.chunk_end_offset + 4ull * l.n_chunks, l.raw_offset, "chunk_end table");
  check_zero(tile, l.raw_offset + uint64_t(l.n_elems) * raw_bytes_per_elem(t), l.stream_offset, "raw plane");
  check_chunk_ends(tile, l);
  return l;
}

}  // namespace cllm::codec
