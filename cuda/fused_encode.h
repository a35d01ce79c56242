// Builds the fused layout (src/codec/fused_layout.h) on the GPU from a bf16 matrix in device
// memory (a ring slot the rANS decoder just filled), so that one .cllm file serves fused mode:
// the planes come out byte for byte as codec::fused::encode_fused writes them, its oracle.
// Fused mode's load (runtime/gpu_weights_fused.cpp; docs/architecture.md "Mode 3: fused").
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cllm::cuda {

// Where the planes go; sizes as in codec::fused::FusedMatrix for (rows, cols, group):
// bytes (rows * stride), codes (rows * stride / 8), bases (rows * ceil(stride / group)),
// escape_start (rows + 1). stride = cols rounded up to 8; group a multiple of 8, at most stride
// (the caller clamps as encode_fused does).
struct FusedPlanes {
  uint8_t* bytes;
  uint32_t* codes;
  uint8_t* bases;
  uint32_t* escape_start;
  int rows, cols, stride, group;
};

// Pass 1: every group's base, and escape_start = the exclusive prefix sum of the rows' escape
// counts (escape_start[rows] is the total: read it back to size the escape list).
void fused_encode_bases(const void* w_bf16, const FusedPlanes& p, cudaStream_t s);

// Pass 2: bytes, codes and the escape entries (escapes: escape_start[rows] entries, sorted by
// row, then column). Needs pass 1's bases and escape_start.
void fused_encode_planes(const void* w_bf16, const FusedPlanes& p, uint32_t* escapes, cudaStream_t s);

}  // namespace cllm::cuda
