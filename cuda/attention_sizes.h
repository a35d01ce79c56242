// The decode path's split of the KV cache and the workspace it needs: pure arithmetic on
// the shape, with no CUDA types, so the host-side memory plan (runtime/memory_plan) counts
// exactly what attention() will use, in builds with and without CUDA.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cllm::cuda {

// Batches of at most this many tokens take the split-K decode path.
constexpr int kMaxDecodeTokens = 16;
// Rows of the cache per decode chunk: a power of two >= kDecodeMinChunk (one shared-memory
// tile of keys) chosen so that at most kMaxDecodeChunks chunks cover the context (64 rows for
// context <= 8192, 1024 for 131072). It depends on the context only, never on the position,
// so a pass captured once in a CUDA graph and an uncaptured pass give the same bits.
constexpr int kMaxDecodeChunks = 128;
constexpr int kDecodeMinChunk = 64;
inline int attention_decode_chunk(int context) {
  int chunk = kDecodeMinChunk;
  while (static_cast<int64_t>(chunk) * kMaxDecodeChunks < context) chunk *= 2;
  return chunk;
}

// Query rows (a head's) whose partials the workspace holds for prompts: 4 key splits of a
// 512-token batch (attention_prefill.cu, launch_split_keys), as many as a full decode split.
constexpr int kPromptSplitRows = 4 * 512;

// Bytes of device workspace attention() needs for this shape: fp32 partials (acc of
// head_dim, then max and sum) for kMaxDecodeTokens tokens x n_heads x every chunk, or for
// kPromptSplitRows x n_heads, the larger: 2048 x n_heads x (head_dim + 2) x 4 bytes (34 MB for
// 32 heads of 128). Only attention() reads and writes it, between its own kernels, so one
// buffer serves every layer of a stream.
inline size_t attention_workspace_bytes(int n_heads, int head_dim, int context) {
  const size_t chunk = static_cast<size_t>(attention_decode_chunk(context));
  const size_t n_chunks = (static_cast<size_t>(context) + chunk - 1) / chunk;
  const size_t decode_rows = n_chunks * kMaxDecodeTokens;
  const size_t rows = (decode_rows > kPromptSplitRows ? decode_rows : kPromptSplitRows) * static_cast<size_t>(n_heads);
  const size_t acc = (rows * static_cast<size_t>(head_dim) * sizeof(float) + 15) / 16 * 16;
  return acc + rows * 2 * sizeof(float);
}

}  // namespace cllm::cuda
