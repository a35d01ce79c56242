// Decoding tensors of a .cllm file on the CPU: every tile of every tensor is one job
// (codec::decode_tile straight into its place), so a model of many small tensors still keeps
// all threads busy when its jobs run together. Used to load weights for the CPU forward pass
// and by `verify` to compare against the source.
#pragma once

#include <cstdint>
#include <vector>

#include "common/thread_pool.h"
#include "format/cllm_reader.h"

namespace cllm {

// One unit of decoding work: one tile of a tensor into its slice of dst.
struct TileJob {
  const TensorInfo* tensor = nullptr;
  size_t tile = 0;       // index into tensor->tiles
  uint64_t start = 0;    // first element of the tile in the tensor
  void* dst = nullptr;   // the whole tensor's output
  bool to_f32 = false;   // widen f16/bf16 to fp32 (dst holds floats), else keep the stored dtype
};

// The jobs that decode all of t into dst; throws if the tiles do not cover t's shape exactly.
std::vector<TileJob> tile_jobs(const TensorInfo& t, void* dst, bool to_f32);

// Runs the jobs on the pool (inline without one). Errors read
// "tensor 'blk.3.attn_q.weight' tile 7: <what the codec found>".
void run_tile_jobs(const CllmFile& f, const std::vector<TileJob>& jobs, ThreadPool* pool);

// Decodes tensor t into dst (t.raw_bytes() bytes: the exact stored values).
void decode_tensor(const CllmFile& f, const TensorInfo& t, void* dst, ThreadPool* pool);

// Decodes a u8 tensor (an embedded tokenizer) into bytes.
std::vector<uint8_t> decode_tensor_bytes(const CllmFile& f, const TensorInfo& t, ThreadPool* pool);

}  // namespace cllm
