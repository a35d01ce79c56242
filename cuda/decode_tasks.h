// Plain descriptors of the GPU decoder's work (no CUDA headers: src/runtime builds them in
// every build, with or without CUDA).
#pragma once

#include <cstdint>

namespace cllm::cuda {

constexpr uint32_t kChunksPerBlock = 8;  // chunks (warps) per thread block

// One tile: where its bytes are, where its elements go.
struct TileTask {
  uint64_t src;         // byte offset of the tile in the source buffer (multiple of 16)
  uint64_t dst;         // byte offset of the tile's first element in the destination (multiple of 16)
  uint32_t n_elems;     // elements in the tile (== the tile header's n_elems)
  uint32_t elem_bytes;  // 2 (bf16, f16), 4 (f32) or 1 (u8: raw only)
};

// One block's work: chunks [first_chunk, first_chunk + kChunksPerBlock) of tiles[tile].
struct BlockTask {
  uint32_t tile;
  uint32_t first_chunk;
};

}  // namespace cllm::cuda
