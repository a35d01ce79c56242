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

// How a tensor's tiles are coded. Values are part of the format.
enum class TensorCodec : uint8_t {
  none = 0,      // every tile raw (tile mode 0)
  exp_rans = 1,  // exponent rANS tiles (mode 1), raw tiles (mode 0) where coding does not pay
};
const char* tensor_codec_name(TensorCodec c);

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
  std::vector<TileInfo> tiles;   // in element order, contiguous in the file

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

}  // namespace cllm
