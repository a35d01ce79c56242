// The two-slot layer ring (CUDA builds only). Each weight step is decoded into one of two
// VRAM layer slots just before the compute stream needs it; in lowmem mode its compressed
// bytes first travel host -> device into one of two staging buffers. A fused step (a batch
// of a hybrid plan's fused placement) is decoded from its fused layout instead, by the
// fixed-length decoder. Three streams overlap the work of consecutive steps, and events
// order the ring:
//
//   copy stream:    copy(c) into staging[c%2]   after the decode of copy c-2 has read staging[c%2]
//   decode stream:  decode(s) into slot[s%2]    after its copy, and after compute(s-2) is done with slot[s%2]
//   compute stream: layer s reads slot[s%2]     after decode(s)
//
// With one slot (the hybrid planner's choice, see plan_memory), s%1 and compute(s-1).
//
// (s counts the ring's steps, c only those copied from the host: copies run up to two
// streamed steps ahead whatever resident steps lie between.)
//
// The host enqueues everything without waiting, so copies and decodes of the next steps run
// while the current one computes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "runtime/gpu_stats.h"
#include "runtime/weight_schedule.h"

namespace cllm {

class FusedSteps;

// One step of the ring and where its weights come from.
struct RingStep {
  enum class From : uint8_t {
    device,  // compressed bytes in VRAM (resident)
    host,    // compressed bytes in host memory (streamed: pinned, or pageable after a failed pinned allocation)
    fused,   // the fused layout in VRAM (gpu_fused_steps.h)
  };
  const WeightStep* step = nullptr;
  From from = From::device;
  const uint8_t* source = nullptr;  // device, host: the compressed bytes
  size_t fused_step = 0;            // fused: its index in the FusedSteps
};

class WeightRing {
 public:
  // fused: where the From::fused steps are kept (null when there are none). origin names the
  // file in errors. slots: 2, or 1 (then a step's decode waits for the step before it to compute).
  WeightRing(std::vector<RingStep> steps, const FusedSteps* fused, uint64_t slot_bytes, int slots,
             uint64_t staging_bytes, cudaStream_t compute, std::string origin);
  ~WeightRing();
  WeightRing(const WeightRing&) = delete;
  WeightRing& operator=(const WeightRing&) = delete;

  // Enqueues step i's copy and decode into the next slot and makes the compute stream wait
  // for it. Returns the slot; valid for the compute stream's work until release().
  const uint8_t* acquire(size_t i);
  // The compute work reading the slot of the last acquire() has been enqueued.
  void release();
  // After the compute stream has synchronized: adds the timings of the steps since the last
  // call to stats. Throws if the decoder found corrupt data.
  void collect(GpuStats& stats);

 private:
  struct StepTimes {
    cudaEvent_t copy[2], decode[2], wait[2];  // start, end
  };
  StepTimes& times(size_t k);

  std::vector<RingStep> steps_;
  const FusedSteps* fused_ = nullptr;
  std::string origin_;
  cudaStream_t compute_, copy_ = nullptr, decode_ = nullptr;
  cuda::DeviceBuffer<uint8_t> slot_[2], staging_[2];
  cuda::DeviceBuffer<cuda::TileTask> tiles_;
  cuda::DeviceBuffer<cuda::BlockTask> blocks_;
  std::vector<size_t> tile_base_, block_base_;  // per step: its first task in tiles_/blocks_
  std::vector<uint64_t> tile_bytes_;            // per step: the bytes its tiles decode to (0: fused)
  cuda::DeviceBuffer<int> error_;
  cudaEvent_t copied_[2] = {}, decoded_[2] = {}, computed_[2] = {}, staging_read_[2] = {};
  int slots_ = 2;        // layer slots in use: slot_[0 .. slots_)
  uint64_t count_ = 0;   // acquisitions so far: the next slot is count_ % slots_
  uint64_t copies_ = 0;  // host copies so far: the next staging buffer is copies_ % 2
  std::vector<StepTimes> times_;
  size_t pending_ = 0;  // timed steps not yet collected
  std::vector<size_t> pending_steps_;
  std::vector<uint64_t> pending_bytes_;  // the bytes each of them decoded
};

// Decodes all tiles of a plan from device memory src into dst, synchronously (full mode's
// load). Throws naming origin if the decoder found corrupt data.
void decode_on_device(const uint8_t* d_src, uint8_t* d_dst, const std::vector<cuda::TileTask>& tiles,
                      const std::vector<cuda::BlockTask>& blocks, cudaStream_t s, const std::string& origin);

}  // namespace cllm
