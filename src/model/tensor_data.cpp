#include "model/tensor_data.h"

#include "codec/codec.h"
#include "common/error.h"

namespace cllm {

std::vector<TileJob> tile_jobs(const TensorInfo& t, void* dst, bool to_f32) {
  if (to_f32 && t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
    fail("tensor '", t.name, "': dtype ", dtype_name(t.dtype), " is not a float type (f32, f16, bf16)");
  std::vector<TileJob> jobs(t.tiles.size());
  uint64_t at = 0;
  for (size_t i = 0; i < t.tiles.size(); ++i) {
    jobs[i] = {&t, i, at, dst, to_f32};
    at += t.tiles[i].n_elems;
  }
  if (at != t.n_elems())
    fail("tensor '", t.name, "': its tiles hold ", at, " elements, its shape needs ", t.n_elems());
  return jobs;
}

namespace {

void run_job(const CllmFile& f, const TileJob& job) {
  const TensorInfo& t = *job.tensor;
  const TileInfo& tile = t.tiles[job.tile];
  with_context(cat("tensor '", t.name, "' tile ", job.tile), [&] {
    const size_t esize = dtype_size(t.dtype);
    if (!job.to_f32 || t.dtype == DType::F32) {
      auto* out = static_cast<uint8_t*>(job.dst) + job.start * esize;
      codec::decode_tile(t.dtype, f.tile_data(tile), tile.size, out, tile.n_elems);
      return;
    }
    // 16-bit tiles decode to a scratch buffer, then widen (exact).
    std::vector<uint8_t> scratch(static_cast<size_t>(tile.n_elems) * esize);
    codec::decode_tile(t.dtype, f.tile_data(tile), tile.size, scratch.data(), tile.n_elems);
    to_f32(t.dtype, scratch.data(), static_cast<float*>(job.dst) + job.start, tile.n_elems);
  });
}

}  // namespace

void run_tile_jobs(const CllmFile& f, const std::vector<TileJob>& jobs, ThreadPool* pool) {
  auto one = [&](size_t i) { run_job(f, jobs[i]); };
  if (pool) {
    pool->parallel_for(jobs.size(), one);
  } else {
    for (size_t i = 0; i < jobs.size(); ++i) one(i);
  }
}

void decode_tensor(const CllmFile& f, const TensorInfo& t, void* dst, ThreadPool* pool) {
  run_tile_jobs(f, tile_jobs(t, dst, false), pool);
}

std::vector<uint8_t> decode_tensor_bytes(const CllmFile& f, const TensorInfo& t, ThreadPool* pool) {
  if (t.dtype != DType::U8) fail("tensor '", t.name, "': dtype ", dtype_name(t.dtype), ", expected u8");
  std::vector<uint8_t> out(t.n_elems());
  decode_tensor(f, t, out.data(), pool);
  return out;
}

}  // namespace cllm
