// The constants of the tile bitstream (docs/codec.md), defined once for its two readers: the
// CPU codec (src/codec/codec.h names them in cllm::codec) and the GPU decoder
// (cuda/decode_tiles.cu, which may include only src/common). A change here changes both, and
// changes the format. No dependencies: nvcc compiles it for the device.
#pragma once

#include <cstdint>

namespace cllm::tile_format {

constexpr uint32_t kLanes = 32;              // interleaved rANS states per chunk (one per warp lane)
constexpr uint32_t kChunkElems = 32 * 1024;  // elements per chunk (one warp's independent work)
constexpr uint32_t kStreamAlign = 16;        // chunk streams, raw plane and tables start 16-aligned
constexpr uint32_t kStateLow = 1u << 16;     // rANS state interval [2^16, 2^32); states start and end here
constexpr uint32_t kStateBytes = kLanes * 4; // a chunk stream opens with its 32 u32 states
constexpr uint32_t kMinProbBits = 8, kMaxProbBits = 12;  // the GPU keeps a 2^P-entry table in shared memory
constexpr uint32_t kMaxTileElems = 1u << 24;

// The 16-byte tile header, little-endian: byte offset of each field.
constexpr uint32_t kTileHeaderBytes = 16;
constexpr uint32_t kHeaderMode = 0;         // u8: kModeRaw or kModeRans
constexpr uint32_t kHeaderProbBits = 1;     // u8 (rans)
constexpr uint32_t kHeaderSymLo = 2;        // u8 (rans): first symbol with a stored frequency
constexpr uint32_t kHeaderSymCountM1 = 3;   // u8 (rans): stored frequencies - 1
constexpr uint32_t kHeaderNElems = 4;       // u32
constexpr uint32_t kHeaderNChunks = 8;      // u32 (rans)
constexpr uint32_t kHeaderStreamBytes = 12; // u32 (rans)
constexpr uint8_t kModeRaw = 0, kModeRans = 1;
// A rans tile's parts follow the header: u16 frequencies, then (each 16-aligned) the u32
// chunk_end table, the raw plane, the chunk streams.
constexpr uint32_t kFreqOffset = kTileHeaderBytes;

// Raw bytes kept per element beside its 8-bit symbol (docs/codec.md, "Symbols and raw bytes").
constexpr uint32_t kRawBytes16 = 1;  // bf16, f16: sign and 7 low bits; the symbol is bits 7..14
constexpr uint32_t kRawBytes32 = 3;  // f32: sign and 23 mantissa bits; the symbol is bits 23..30
constexpr uint32_t kSymbolShift16 = 7, kSymbolShift32 = 23;

}  // namespace cllm::tile_format
