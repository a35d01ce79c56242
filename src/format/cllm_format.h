// The .cllm container, version 1: constants and the in-memory form of its index.
// docs/format.md is the specification; this header mirrors it.
//
//   [header 64 B][pad to 4 KiB][group 0 tiles][pad 4 KiB][group 1 tiles]...[metadata JSON][index]
//
// A group is the unit of streaming: "global" (embeddings, output, tokenizer) then "blk.0",
// "blk.1", ...: each group's tiles are one contiguous, 4 KiB-aligned byte range.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace cllm {

constexpr char kCllmMagic[4] = {'C', 'L', 'L', 'M'};
constexpr uint32_t kCllmVersion = 1;
constexpr uint32_t kCllmHeaderBytes = 64;
constexpr uint64_t kGroupAlign = 4096;   // each group starts on a page
constexpr uint64_t kTileAlign = 64;      // each tile starts on a cache line
constexpr uint32_t kMaxNameBytes = 256;
constexpr uint32_t kMaxDims = 4;
// Limits of version 1 (docs/format.md); a reader refuses anything beyond them.
constexpr uint64_t kDataOffset = 4096;                    // where group 0 may begin
constexpr uint64_t kMaxMetadataBytes = 64ull << 20;       // 64 MiB of JSON
constexpr uint64_t kMaxIndexBytes = 1ull << 30;           // 1 GiB of index
constexpr uint32_t kMaxGroups = 65536;
constexpr uint32_t kMaxTensors = 1000000;
constexpr uint64_t kMaxTensorElems = 1ull << 48;          // every dim and their product below it
constexpr uint64_t kTileOffsetAlign = 16;                 // what a reader requires of tile offsets

// How a tensor's tiles are coded. Values are part of the format.
enum class TensorCodec : uint8_t {
  none = 0,      // every tile raw (tile mode 0)
  exp_rans = 1,  // exponent rANS tiles (mode 1), raw tiles (mode 0) where coding does not pay
};
const char* tensor_codec_name(TensorCodec c);

// "[512, 64]": shapes in error messages.
std::string shape_to_string(const std::vector<uint64_t>& shape);

// Why a group or tensor name breaks the rules (1..256 bytes of valid UTF-8, no ASCII control
// bytes 0x00-0x1F, 0x7F), or "" when it is fine. The writer and the reader both apply it.
std::string cllm_name_problem(const std::string& name);

struct TileInfo {
  uint64_t offset = 0;   // absolute byte offset in the file (multiple of 16)
  uint32_t size = 0;     // bytes
  uint32_t n_elems = 0;  // elements decoded from this tile
  uint32_t crc32c = 0;   // CRC-32C of the tile's bytes
};

struct TensorInfo {
  std::string name;              // e.g. "blk.3.attn_q.weight"
  DType dtype = DType::F32;
  TensorCodec codec = TensorCodec::none;
  std::vector<uint64_t> shape;   // outermost first; the last dimension is contiguous
  uint32_t group = 0;            // index into CllmIndex::groups
  std::vector<TileInfo> tiles;   // in element order, ascending in the file (padding between)

  uint64_t n_elems() const;
  uint64_t raw_bytes() const { return n_elems() * dtype_size(dtype); }
  uint64_t stored_bytes() const;  // sum of tile sizes
};

struct GroupInfo {
  std::string name;     // "global", "blk.0", ...
  uint64_t offset = 0;  // absolute, multiple of kGroupAlign
  uint64_t size = 0;    // bytes up to the group's last tile end
};

struct CllmIndex {
  std::vector<GroupInfo> groups;
  std::vector<TensorInfo> tensors;
};

// The 64-byte header at offset 0 (docs/format.md, "Header"), as numbers.
struct CllmHeader {
  uint32_t version = kCllmVersion;
  uint64_t data_offset = kDataOffset;
  uint64_t data_size = 0;
  uint64_t metadata_offset = 0;
  uint64_t metadata_size = 0;
  uint64_t index_offset = 0;
  uint64_t index_size = 0;
  uint32_t metadata_crc32c = 0;
  uint32_t index_crc32c = 0;
};

}  // namespace cllm
