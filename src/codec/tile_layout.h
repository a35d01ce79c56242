// Internal to src/codec: little-endian field access and where the parts of a tile lie
// (docs/codec.md, "Tile layout"). The encoder places parts with the same function the parser
// checks them with, so the two cannot disagree.
#pragma once

#include <cstdint>
#include <cstring>

#include "codec/codec.h"

namespace cllm::codec {

// The format is little-endian and so are the hosts we build for (x86-64, aarch64); the loads
// below are plain memcpy, which compilers turn into single moves.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "codec assumes a little-endian host");

inline uint16_t load_u16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
inline uint32_t load_u32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
inline void store_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

inline uint64_t align16(uint64_t x) { return (x + (kStreamAlign - 1)) & ~uint64_t(kStreamAlign - 1); }

// ceil(n_elems / kChunkElems).
inline uint32_t chunk_count(uint64_t n_elems) {
  return static_cast<uint32_t>((n_elems + kChunkElems - 1) / kChunkElems);
}

// Elements in chunk k of a tile of n_elems elements.
inline uint32_t chunk_elems(uint64_t n_elems, uint32_t k) {
  const uint64_t begin = uint64_t(k) * kChunkElems;
  const uint64_t left = n_elems - begin;
  return static_cast<uint32_t>(left < kChunkElems ? left : kChunkElems);
}

// Bytes of a chunk stream: 32 initial states (u32), `words` u16 words, zero padding to 16.
constexpr uint32_t kStateBytes = tile_format::kStateBytes;
inline uint64_t chunk_stream_bytes(uint64_t words) { return align16(kStateBytes + 2 * words); }

// Fills the byte offsets of a rans tile's parts from sym_count, n_chunks and n_elems; returns
// the tile's size (end of the streams area). 64-bit so that bad headers cannot wrap around.
uint64_t place_rans_parts(DType t, TileLayout& l);

// Writes the 16-byte header of l at dst.
void write_tile_header(const TileLayout& l, uint8_t* dst);

}  // namespace cllm::codec
