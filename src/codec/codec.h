// The weight codec: lossless, tile by tile. Each float is split into an 8-bit symbol holding
// its exponent field (entropy-coded with interleaved rANS, 32 lanes, 16-bit renormalisation)
// and raw bits holding sign and mantissa (stored as they are). Tiles that do not shrink are
// stored raw. The bitstream is specified in docs/codec.md; this CPU code is its reference and
// the oracle for the GPU decoder (cuda/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/dtype.h"
#include "common/tile_format.h"

namespace cllm::codec {

// ---- Bitstream constants (docs/codec.md), defined in common/tile_format.h, which the GPU
// decoder reads too. Changing any of them changes the format.
constexpr uint32_t kLanes = tile_format::kLanes;              // interleaved rANS states per chunk (one per warp lane)
constexpr uint32_t kChunkElems = tile_format::kChunkElems;    // elements per chunk (one warp's independent work)
constexpr uint32_t kTileHeaderBytes = tile_format::kTileHeaderBytes;
constexpr uint32_t kStreamAlign = tile_format::kStreamAlign;  // chunk streams, raw plane and tables start 16-aligned
constexpr uint32_t kStateLow = tile_format::kStateLow;        // rANS state interval [2^16, 2^32)
constexpr uint32_t kMinProbBits = tile_format::kMinProbBits, kMaxProbBits = tile_format::kMaxProbBits;
constexpr uint32_t kMaxTileElems = tile_format::kMaxTileElems;

// Tile modes (the first byte of every tile).
enum class TileMode : uint8_t { raw = tile_format::kModeRaw, rans = tile_format::kModeRans };

// Encoder defaults (not format constants: a reader accepts any valid choice).
constexpr uint32_t kDefaultTileElems = 1u << 20;
constexpr uint32_t kDefaultProbBits = 12;

struct EncodeOptions {
  uint32_t prob_bits = kDefaultProbBits;  // rANS frequency precision, kMinProbBits..kMaxProbBits
  bool allow_raw = true;                  // store raw when coding does not shrink the tile
  bool force_raw = false;                 // always store raw (testing, --no-compress)
};

// Bytes of sign+mantissa kept raw per element: 1 for bf16/f16, 3 for f32; 1 for u8, which has
// no symbol (the whole byte is raw, and u8 tiles are always raw).
uint32_t raw_bytes_per_elem(DType t);

struct SymbolHistogram;  // codec/exponent_stats.h

// Encodes n elements of type t (little-endian values at src) as one tile, appended to out.
// U8 tiles are always raw. n must be <= kMaxTileElems. When symbols is given, the tile's
// symbol counts are added to it (the encoder counts them anyway; callers need not count again).
void encode_tile(DType t, const void* src, size_t n, std::vector<uint8_t>& out,
                 const EncodeOptions& opt = {}, SymbolHistogram* symbols = nullptr);

// Decodes one tile of n elements of type t into dst (n * dtype_size(t) bytes).
// Every field is bounds-checked: malformed input throws cllm::Error saying what is wrong,
// never reads or writes out of bounds.
void decode_tile(DType t, const uint8_t* tile, size_t tile_size, void* dst, size_t n);

// What a tile header says, parsed and checked against tile_size (throws cllm::Error).
struct TileLayout {
  TileMode mode;
  uint32_t prob_bits;    // rans only
  uint32_t sym_lo;       // first symbol with a stored frequency
  uint32_t sym_count;    // number of stored frequencies (1..256)
  uint32_t n_elems;
  uint32_t n_chunks;     // rans only: ceil(n_elems / kChunkElems)
  uint32_t stream_bytes; // rans only
  // Byte offsets inside the tile:
  uint32_t freq_offset, chunk_end_offset, raw_offset, stream_offset;
};
TileLayout parse_tile_layout(DType t, const uint8_t* tile, size_t tile_size);

}  // namespace cllm::codec
