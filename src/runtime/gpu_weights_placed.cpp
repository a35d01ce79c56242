// The store for resident, lowmem and hybrid plans: each weight step where its placement puts
// it. Ring steps (resident, streamed, and CPU layers for batches too large for the CPU) are
// decoded into the ring's slots just before they run; decoded steps have their own buffers;
// fused steps are kept in the fused layout (gpu_fused_steps.h), which one token's products
// read, and batches decode them into the ring's slots too.
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "cuda/device_buffer.h"
#include "cuda/kernels.h"
#include "model/tensor_data.h"
#include "runtime/gpu_fused_steps.h"
#include "runtime/gpu_host_memory.h"
#include "runtime/gpu_ring.h"
#include "runtime/gpu_weights.h"

namespace cllm {

namespace {

using cuda::DeviceBuffer;

class PlacedWeights final : public GpuWeights {
 public:
  PlacedWeights(const CllmFile& file, const WeightSchedule& s, const Placements& p, int ring_slots, int max_batch,
                cudaStream_t compute, ThreadPool& pool, GpuCpuLayers& cpu);
  ~PlacedWeights() override;
  const uint8_t* acquire(size_t i) override;
  void release(size_t i) override;
  void embed(const int* tokens, int n, uint8_t* d_rows, float* x) override;
  void collect(GpuStats& stats) override {
    if (ring_) ring_->collect(stats);
  }
  bool pinned() const override { return host_store_.pinned(); }
  const FusedStepView* fused(size_t i) const override {
    return p_[i] == Placement::fused ? fused_->view(i) : nullptr;
  }
  uint64_t fused_bytes() const override { return fused_->bytes(); }

 private:
  void load_own_buffers(GpuCpuLayers& cpu);
  void fill_host_store(const std::vector<uint64_t>& at, uint64_t bytes, ThreadPool& pool);
  void build_ring(const std::vector<uint64_t>& at, int ring_slots);
  // Through the ring for batches: every placement but decoded, and fused steps with matrices.
  bool ring_step(size_t i) const { return p_[i] == Placement::fused ? fused_->view(i) != nullptr : in_ring(p_[i]); }

  const CllmFile& file_;
  const WeightSchedule& s_;
  std::vector<const WeightStep*> steps_;  // layers, then classifier slices
  Placements p_;
  cudaStream_t compute_;
  std::vector<DeviceBuffer<uint8_t>> decoded_;  // decoded steps: their own buffers
  std::unique_ptr<FusedSteps> fused_;           // fused steps (the others: none kept)
  DeviceBuffer<uint8_t> store_;                 // resident steps' compressed bytes
  RegisteredHostMemory host_store_;             // streamed and cpu steps' compressed bytes, page-locked
  std::unique_ptr<WeightRing> ring_;
  std::vector<size_t> ring_index_;              // per step: its index in the ring (ring steps only)
  std::vector<uint8_t> embd_host_;              // token_embd decoded, (vocab, dim)
  PinnedBuffer rows_host_;                      // gathered rows on their way up
  cudaEvent_t rows_sent_ = nullptr;
};

PlacedWeights::PlacedWeights(const CllmFile& file, const WeightSchedule& s, const Placements& p, int ring_slots,
                             int max_batch, cudaStream_t compute, ThreadPool& pool, GpuCpuLayers& cpu)
    : file_(file), s_(s), p_(p), compute_(compute), fused_(std::make_unique<FusedSteps>(s)) {
  for (const auto& step : s.layers) steps_.push_back(&step);
  for (const auto& step : s.classifier) steps_.push_back(&step);
  // Each store keeps its steps 256-byte aligned.
  std::vector<uint64_t> at(steps_.size(), 0);
  uint64_t device_end = 0, host_end = 0;
  for (size_t i = 0; i < steps_.size(); ++i) {
    const uint64_t bytes = (steps_[i]->src_bytes + 255) / 256 * 256;
    if (p_[i] == Placement::resident) at[i] = std::exchange(device_end, device_end + bytes);
    if (on_host(p_[i])) at[i] = std::exchange(host_end, host_end + bytes);
  }
  load_own_buffers(cpu);
  store_.resize(device_end);
  for (size_t i = 0; i < steps_.size(); ++i)
    if (p_[i] == Placement::resident)
      CLLM_CUDA_CHECK(cudaMemcpy(store_.data() + at[i], file_.file_data() + steps_[i]->src_offset,
                                 steps_[i]->src_bytes, cudaMemcpyHostToDevice));
  fill_host_store(at, host_end, pool);
  build_ring(at, ring_slots);
  // Embedding rows are looked up on the host, so token_embd never sits whole in VRAM.
  embd_host_.resize(s_.token_embd->raw_bytes());
  decode_tensor(file_, *s_.token_embd, embd_host_.data(), &pool);
  const size_t rows_bytes = static_cast<size_t>(max_batch) * s_.token_embd->shape.back() * dtype_size(s_.token_embd->dtype);
  if (!rows_host_.allocate(rows_bytes)) fail("could not allocate ", rows_bytes, " bytes of pinned host memory");
  CLLM_CUDA_CHECK(cudaEventCreateWithFlags(&rows_sent_, cudaEventDisableTiming));
}

PlacedWeights::~PlacedWeights() {
  ring_.reset();
  if (rows_sent_) cudaEventDestroy(rows_sent_);
}

void PlacedWeights::load_own_buffers(GpuCpuLayers& cpu) {
  // Decoded steps into their VRAM buffers; CPU layers through a temporary slot into host RAM;
  // fused steps through it into the fused layout.
  DeviceBuffer<uint8_t> staging, slot;
  decoded_.resize(steps_.size());
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (p_[i] != Placement::decoded && p_[i] != Placement::cpu && p_[i] != Placement::fused) continue;
    const WeightStep& step = *steps_[i];
    staging.resize(std::max<size_t>(staging.size(), step.src_bytes));
    CLLM_CUDA_CHECK(
        cudaMemcpy(staging.data(), file_.file_data() + step.src_offset, step.src_bytes, cudaMemcpyHostToDevice));
    DeviceBuffer<uint8_t>& dst = p_[i] == Placement::decoded ? decoded_[i] : slot;
    dst.resize(p_[i] == Placement::decoded ? step.slot_bytes : std::max<size_t>(slot.size(), step.slot_bytes));
    decode_on_device(staging.data(), dst.data(), step.tiles, step.blocks, compute_, file_.path());
    if (p_[i] == Placement::cpu) cpu.add_layer(step, slot.data());
    if (p_[i] == Placement::fused) fused_->keep(i, slot.data(), compute_);
  }
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));  // before the slot is freed
}

void PlacedWeights::fill_host_store(const std::vector<uint64_t>& at, uint64_t bytes, ThreadPool& pool) {
  // Copied by the pool into huge-page memory, then locked in place. (Locking the mapped
  // file's page-cache pages instead avoids the copy but loads slower: docs/perf-notes.md.)
  if (bytes == 0) return;
  if (!std::getenv("CLLM_NO_PINNED") && host_store_.allocate(bytes)) {
    pool.parallel_for(steps_.size(), [&](size_t i) {
      if (on_host(p_[i]))
        std::memcpy(host_store_.data() + at[i], file_.file_data() + steps_[i]->src_offset, steps_[i]->src_bytes);
    });
    if (!host_store_.pin()) host_store_.release();  // no gain over the mapped file's own pages
  }
  if (!host_store_.pinned())
    log_warn("could not lock ", format_gib(bytes),
             " of host memory for DMA: streaming the weights from pageable memory (slower)");
}

void PlacedWeights::build_ring(const std::vector<uint64_t>& at, int ring_slots) {
  std::vector<RingStep> ring_steps;
  uint64_t staging_bytes = 0, slot_bytes = 0;
  ring_index_.assign(steps_.size(), SIZE_MAX);
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (!ring_step(i)) continue;
    ring_index_[i] = ring_steps.size();
    RingStep r{steps_[i]};
    slot_bytes = std::max(slot_bytes, steps_[i]->slot_bytes);
    if (p_[i] == Placement::fused) {
      r.from = RingStep::From::fused, r.fused_step = i;
    } else if (on_host(p_[i])) {
      r.from = RingStep::From::host;
      r.source = host_store_.pinned() ? host_store_.data() + at[i] : file_.file_data() + steps_[i]->src_offset;
      staging_bytes = std::max(staging_bytes, steps_[i]->src_bytes);
    } else {
      r.source = store_.data() + at[i];
    }
    ring_steps.push_back(r);
  }
  if (ring_steps.empty()) return;
  ring_ = std::make_unique<WeightRing>(std::move(ring_steps), fused_.get(), slot_bytes, ring_slots, staging_bytes,
                                       compute_, file_.path());
}

const uint8_t* PlacedWeights::acquire(size_t i) {
  if (p_[i] == Placement::decoded) return decoded_[i].data();
  if (!ring_step(i)) return fused_->decoded(i);  // a fused placement of f32 or f16 weights: kept decoded
  return ring_->acquire(ring_index_[i]);
}

void PlacedWeights::release(size_t i) {
  if (ring_step(i)) ring_->release();
}

void PlacedWeights::embed(const int* tokens, int n, uint8_t* d_rows, float* x) {
  const DType dt = s_.token_embd->dtype;
  const size_t row_bytes = static_cast<size_t>(s_.token_embd->shape.back()) * dtype_size(dt);
  CLLM_CHECK(n * row_bytes <= rows_host_.size(), "embed: ", n, " rows do not fit the pinned row buffer");
  // The previous batch's rows must have left the pinned buffer before it is rewritten.
  CLLM_CUDA_CHECK(cudaEventSynchronize(rows_sent_));
  for (int t = 0; t < n; ++t)
    std::memcpy(rows_host_.data() + t * row_bytes, embd_host_.data() + static_cast<size_t>(tokens[t]) * row_bytes,
                row_bytes);
  CLLM_CUDA_CHECK(cudaMemcpyAsync(d_rows, rows_host_.data(), n * row_bytes, cudaMemcpyHostToDevice, compute_));
  CLLM_CUDA_CHECK(cudaEventRecord(rows_sent_, compute_));
  cuda::gather_rows_f32(d_rows, dt, static_cast<int>(s_.token_embd->shape.back()), nullptr, n, x, compute_);
}

}  // namespace

std::unique_ptr<GpuWeights> load_placed_weights(const CllmFile& file, const WeightSchedule& s, const Placements& p,
                                                int ring_slots, int max_batch, cudaStream_t compute, ThreadPool& pool,
                                                GpuCpuLayers& cpu) {
  return std::make_unique<PlacedWeights>(file, s, p, ring_slots, max_batch, compute, pool, cpu);
}

}  // namespace cllm
