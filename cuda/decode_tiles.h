// The GPU decoder for the .cllm tile bitstream (docs/codec.md). It sees raw device pointers
// and plain descriptors only; src/runtime builds the descriptors from a file's index.
//
// One thread block decodes up to kChunksPerBlock chunks of one tile, one warp per chunk: the
// block builds the tile's slot->symbol table in shared memory from the frequencies in the tile
// header, then each warp runs its chunk's 32 interleaved rANS lanes. Raw tiles are copied.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/decode_tasks.h"

namespace cllm::cuda {

// Decodes every tile of a batch. The tiles must have passed codec::parse_tile_layout on the
// host (the kernel trusts header offsets); inside a chunk the kernel still bounds its word
// reads and sets *d_error to non-zero when a chunk does not end in the state the encoder
// started from (corrupt data). Asynchronous on stream.
void decode_tiles(const uint8_t* d_src, uint8_t* d_dst, const TileTask* d_tiles,
                  const BlockTask* d_blocks, uint32_t n_blocks, int* d_error, cudaStream_t stream);

}  // namespace cllm::cuda
