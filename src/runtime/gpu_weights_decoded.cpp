// Full mode's store: every group decoded once at load into its own VRAM buffer, with the
// same layout as a ring slot, so the kernels see what they see in every other mode.
#include <algorithm>
#include <vector>

#include "common/error.h"
#include "cuda/device_buffer.h"
#include "cuda/kernels.h"
#include "runtime/decode_plan.h"
#include "runtime/gpu_ring.h"
#include "runtime/gpu_weights.h"

namespace cllm {

void GpuWeights::embed_from_device(const int*, int, float*) {
  fail("this weight store looks embedding rows up on the host");
}

std::unique_ptr<GpuWeights> load_gpu_weights(const CllmFile& file, const WeightSchedule& s, const Placements& p,
                                             int ring_slots, int max_batch, cudaStream_t compute, ThreadPool& pool,
                                             GpuCpuLayers& cpu) {
  if (mode_of(p) == Mode::full) return load_decoded_weights(file, s, compute);
  if (mode_of(p) == Mode::fused) return load_fused_weights(file, s, ring_slots, compute);
  return load_placed_weights(file, s, p, ring_slots, max_batch, compute, pool, cpu);
}

namespace {

using cuda::DeviceBuffer;

class DecodedWeights final : public GpuWeights {
 public:
  DecodedWeights(const CllmFile& file, const WeightSchedule& s, cudaStream_t compute);
  const uint8_t* acquire(size_t i) override;
  void release(size_t) override {}
  void embed(const int* tokens, int n, uint8_t* d_rows, float* x) override;
  void embed_from_device(const int* d_tokens, int n, float* x) override;
  bool fixed() const override { return true; }

 private:
  const WeightSchedule& s_;
  cudaStream_t compute_;
  std::vector<DeviceBuffer<uint8_t>> layers_;  // one decoded group per layer
  DeviceBuffer<uint8_t> global_;               // token_embd, output_norm, output decoded
  uint64_t embd_offset_ = 0, classifier_offset_ = 0;
  int dim_ = 0;
};

DecodedWeights::DecodedWeights(const CllmFile& file, const WeightSchedule& s, cudaStream_t compute)
    : s_(s), compute_(compute) {
  // Each group: its compressed bytes up through a staging buffer, decoded into its own buffer.
  const GroupDecodePlan global = plan_group_decode(file, s.global_group);
  embd_offset_ = global.tensors.at(s.token_embd->name).offset;
  classifier_offset_ = global.tensors.at(s.classifier_tensor->name).offset;
  dim_ = static_cast<int>(s.token_embd->shape.back());
  DeviceBuffer<uint8_t> staging(std::max(s.max_src_bytes, global.src_bytes));
  auto load_group = [&](uint64_t src_offset, uint64_t src_bytes, const std::vector<cuda::TileTask>& tiles,
                        const std::vector<cuda::BlockTask>& blocks, DeviceBuffer<uint8_t>& dst, uint64_t dst_bytes) {
    dst.resize(dst_bytes);
    CLLM_CUDA_CHECK(cudaMemcpy(staging.data(), file.file_data() + src_offset, src_bytes, cudaMemcpyHostToDevice));
    decode_on_device(staging.data(), dst.data(), tiles, blocks, compute_, file.path());
  };
  load_group(global.src_offset, global.src_bytes, global.tiles, global.blocks, global_, global.slot_bytes);
  layers_.resize(s.layers.size());
  for (size_t l = 0; l < s.layers.size(); ++l) {
    const WeightStep& step = s.layers[l];
    load_group(step.src_offset, step.src_bytes, step.tiles, step.blocks, layers_[l], step.slot_bytes);
  }
}

const uint8_t* DecodedWeights::acquire(size_t i) {
  if (i < s_.layers.size()) return layers_[i].data();
  const WeightStep& step = s_.classifier.at(i - s_.layers.size());
  const uint64_t row_bytes = static_cast<uint64_t>(dim_) * dtype_size(s_.classifier_tensor->dtype);
  return global_.data() + classifier_offset_ + step.row_begin * row_bytes;
}

void DecodedWeights::embed(const int* tokens, int n, uint8_t* d_rows, float* x) {
  CLLM_CUDA_CHECK(cudaMemcpyAsync(d_rows, tokens, sizeof(int) * n, cudaMemcpyHostToDevice, compute_));
  embed_from_device(reinterpret_cast<const int*>(d_rows), n, x);
}

void DecodedWeights::embed_from_device(const int* d_tokens, int n, float* x) {
  cuda::gather_rows_f32(global_.data() + embd_offset_, s_.token_embd->dtype, dim_, d_tokens, n, x, compute_);
}

}  // namespace

std::unique_ptr<GpuWeights> load_decoded_weights(const CllmFile& file, const WeightSchedule& s, cudaStream_t compute) {
  return std::make_unique<DecodedWeights>(file, s, compute);
}

}  // namespace cllm
