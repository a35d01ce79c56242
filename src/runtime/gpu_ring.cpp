#include "runtime/gpu_ring.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/timer.h"
#include "cuda/cuda_check.h"
#include "cuda/decode_tiles.h"
#include "cuda/kernels.h"
#include "runtime/gpu_fused_steps.h"

namespace cllm {

namespace {
void check_decoder_flag(const cuda::DeviceBuffer<int>& flag, const std::string& origin) {
  int err = 0;
  CLLM_CUDA_CHECK(cudaMemcpy(&err, flag.data(), sizeof err, cudaMemcpyDeviceToHost));
  if (err != 0)
    fail("'", origin, "': the GPU decoder found corrupt tile data (run `codecllm verify ", origin, "`)");
}
}  // namespace

void decode_on_device(const uint8_t* d_src, uint8_t* d_dst, const std::vector<cuda::TileTask>& tiles,
                      const std::vector<cuda::BlockTask>& blocks, cudaStream_t s, const std::string& origin) {
  if (blocks.empty()) return;
  cuda::DeviceBuffer<cuda::TileTask> d_tiles;
  cuda::DeviceBuffer<cuda::BlockTask> d_blocks;
  cuda::DeviceBuffer<int> flag(1);
  d_tiles.upload(tiles, s);
  d_blocks.upload(blocks, s);
  CLLM_CUDA_CHECK(cudaMemsetAsync(flag.data(), 0, sizeof(int), s));
  cuda::decode_tiles(d_src, d_dst, d_tiles.data(), d_blocks.data(), static_cast<uint32_t>(blocks.size()),
                     flag.data(), s);
  CLLM_CUDA_CHECK(cudaStreamSynchronize(s));
  check_decoder_flag(flag, origin);
}

WeightRing::WeightRing(std::vector<RingStep> steps, const FusedSteps* fused, uint64_t slot_bytes, int slots,
                       uint64_t staging_bytes, cudaStream_t compute, std::string origin)
    : steps_(std::move(steps)), fused_(fused), origin_(std::move(origin)), compute_(compute), slots_(slots) {
  CLLM_CHECK(slots == 1 || slots == 2, "weight ring: 1 or 2 slots, not ", slots);
  bool any_host = false;
  for (const RingStep& r : steps_) {
    any_host = any_host || r.from == RingStep::From::host;
    CLLM_CHECK(r.from != RingStep::From::fused || fused_, "weight ring: a fused step without its fused steps");
  }
  CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&decode_, cudaStreamNonBlocking));
  if (any_host) CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
  for (int i = 0; i < 2; ++i) {
    if (i < slots_) slot_[i].resize(slot_bytes);
    if (any_host) staging_[i].resize(staging_bytes);
    CLLM_CUDA_CHECK(cudaEventCreateWithFlags(&copied_[i], cudaEventDisableTiming));
    CLLM_CUDA_CHECK(cudaEventCreateWithFlags(&decoded_[i], cudaEventDisableTiming));
    CLLM_CUDA_CHECK(cudaEventCreateWithFlags(&computed_[i], cudaEventDisableTiming));
    CLLM_CUDA_CHECK(cudaEventCreateWithFlags(&staging_read_[i], cudaEventDisableTiming));
  }
  // Every compressed step's decoder tasks live on the device from the start.
  std::vector<cuda::TileTask> tiles;
  std::vector<cuda::BlockTask> blocks;
  for (const RingStep& r : steps_) {
    tile_base_.push_back(tiles.size());
    block_base_.push_back(blocks.size());
    tile_bytes_.push_back(0);
    if (r.from == RingStep::From::fused) continue;
    tiles.insert(tiles.end(), r.step->tiles.begin(), r.step->tiles.end());
    blocks.insert(blocks.end(), r.step->blocks.begin(), r.step->blocks.end());
    for (const cuda::TileTask& tile : r.step->tiles) tile_bytes_.back() += uint64_t{tile.n_elems} * tile.elem_bytes;
  }
  tiles_.upload(tiles, compute_);
  blocks_.upload(blocks, compute_);
  error_.resize(1);
  CLLM_CUDA_CHECK(cudaMemsetAsync(error_.data(), 0, sizeof(int), compute_));
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));
}

WeightRing::~WeightRing() {
  // Nothing may still run on the ring's streams when its buffers go.
  if (decode_) CLLM_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(decode_));
  if (copy_) CLLM_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(copy_));
  for (int i = 0; i < 2; ++i)
    for (cudaEvent_t e : {copied_[i], decoded_[i], computed_[i], staging_read_[i]})
      if (e) cudaEventDestroy(e);
  for (StepTimes& t : times_)
    for (int i = 0; i < 2; ++i)
      for (cudaEvent_t e : {t.copy[i], t.decode[i], t.wait[i]}) cudaEventDestroy(e);
  if (decode_) cudaStreamDestroy(decode_);
  if (copy_) cudaStreamDestroy(copy_);
}

WeightRing::StepTimes& WeightRing::times(size_t k) {
  while (times_.size() <= k) {
    StepTimes t{};
    for (int i = 0; i < 2; ++i) {
      CLLM_CUDA_CHECK(cudaEventCreate(&t.copy[i]));
      CLLM_CUDA_CHECK(cudaEventCreate(&t.decode[i]));
      CLLM_CUDA_CHECK(cudaEventCreate(&t.wait[i]));
    }
    times_.push_back(t);
  }
  return times_[k];
}

const uint8_t* WeightRing::acquire(size_t i) {
  CLLM_CHECK(i < steps_.size(), "weight ring: no step ", i);
  const RingStep& r = steps_[i];
  const WeightStep& step = *r.step;
  const bool on_host = r.from == RingStep::From::host;
  const int slot = static_cast<int>(count_ % slots_);
  StepTimes& t = times(pending_);
  pending_steps_.push_back(i);
  ++pending_;
  const uint8_t* src = r.source;
  const int stage = static_cast<int>(copies_ % 2);
  if (on_host) {
    // staging[stage] is free once the decode two copies back has read it (resident steps in
    // between do not count: the copy may run ahead of them)
    CLLM_CUDA_CHECK(cudaStreamWaitEvent(copy_, staging_read_[stage], 0));
    CLLM_CUDA_CHECK(cudaEventRecord(t.copy[0], copy_));
    CLLM_CUDA_CHECK(cudaMemcpyAsync(staging_[stage].data(), src, step.src_bytes, cudaMemcpyHostToDevice, copy_));
    CLLM_CUDA_CHECK(cudaEventRecord(t.copy[1], copy_));
    CLLM_CUDA_CHECK(cudaEventRecord(copied_[stage], copy_));
    CLLM_CUDA_CHECK(cudaStreamWaitEvent(decode_, copied_[stage], 0));
    src = staging_[stage].data();
  }
  // slot[slot] is free once the compute `slots_` steps back is done with it
  CLLM_CUDA_CHECK(cudaStreamWaitEvent(decode_, computed_[slot], 0));
  CLLM_CUDA_CHECK(cudaEventRecord(t.decode[0], decode_));
  if (r.from == RingStep::From::fused) {
    pending_bytes_.push_back(fused_->decode_into(r.fused_step, slot_[slot].data(), decode_));
  } else {
    cuda::decode_tiles(src, slot_[slot].data(), tiles_.data() + tile_base_[i], blocks_.data() + block_base_[i],
                       static_cast<uint32_t>(step.blocks.size()), error_.data(), decode_);
    pending_bytes_.push_back(tile_bytes_[i]);
  }
  CLLM_CUDA_CHECK(cudaEventRecord(t.decode[1], decode_));
  CLLM_CUDA_CHECK(cudaEventRecord(decoded_[slot], decode_));
  if (on_host) {
    CLLM_CUDA_CHECK(cudaEventRecord(staging_read_[stage], decode_));
    ++copies_;
  }
  CLLM_CUDA_CHECK(cudaEventRecord(t.wait[0], compute_));
  CLLM_CUDA_CHECK(cudaStreamWaitEvent(compute_, decoded_[slot], 0));
  CLLM_CUDA_CHECK(cudaEventRecord(t.wait[1], compute_));
  return slot_[slot].data();
}

void WeightRing::release() {
  const int slot = static_cast<int>(count_ % slots_);
  CLLM_CUDA_CHECK(cudaEventRecord(computed_[slot], compute_));
  ++count_;
}

void WeightRing::collect(GpuStats& stats) {
  for (size_t k = 0; k < pending_; ++k) {
    const StepTimes& t = times_[k];
    const RingStep& r = steps_[pending_steps_[k]];
    float ms = 0;
    if (r.from == RingStep::From::host) {
      CLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, t.copy[0], t.copy[1]));
      stats.h2d_ms += ms;
      stats.h2d_bytes += r.step->src_bytes;
    }
    CLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, t.decode[0], t.decode[1]));
    stats.decode_ms += ms;
    stats.decoded_bytes += pending_bytes_[k];
    CLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, t.wait[0], t.wait[1]));
    stats.stall_ms += ms;
    ++stats.steps;
  }
  pending_ = 0;
  pending_steps_.clear();
  pending_bytes_.clear();
  check_decoder_flag(error_, origin_);
}

}  // namespace cllm
