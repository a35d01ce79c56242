// The two-slot layer ring (CUDA builds only). Each weight step is decoded into one of two
// VRAM layer slots just before the compute stream needs it; in lowmem mode its compressed
// bytes first travel host -> device into one of two staging buffers. Three streams overlap
// the work of consecutive steps, and events order the ring:
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

#include "common/host_memory.h"
#include "cuda/device_buffer.h"
#include "runtime/gpu_engine.h"
#include "runtime/path_speeds.h"
#include "runtime/weight_schedule.h"

namespace cllm {

// Page-locked host memory (cudaHostAlloc), mapped into the device's address space;
// allocate() returns false when the system refuses.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  bool allocate(size_t bytes);
  uint8_t* data() { return ptr_; }
  uint8_t* device_data() { return device_ptr_; }  // the same bytes, for kernels to read and write
  size_t size() const { return size_; }

 private:
  uint8_t* ptr_ = nullptr;
  uint8_t* device_ptr_ = nullptr;
  size_t size_ = 0;
};

// The streamed steps' compressed bytes in host RAM, page-locked for DMA: allocated pageable on
// huge pages, filled by the caller's threads, then locked in place (cudaHostRegister). For the
// 8B's 10.6 GB that takes 0.5 s where cudaHostAlloc, which zeroes and locks 4 KiB pages one
// by one, takes 4.4 s (H100 host; docs/perf-notes.md): most of lowmem's time to first token.
class RegisteredHostMemory {
 public:
  RegisteredHostMemory() = default;
  ~RegisteredHostMemory() { release(); }
  RegisteredHostMemory(const RegisteredHostMemory&) = delete;
  RegisteredHostMemory& operator=(const RegisteredHostMemory&) = delete;
  bool allocate(size_t bytes);  // pageable until pin(); false when the system refuses
  bool pin();                   // false (and still pageable) when the driver refuses
  void release();
  uint8_t* data() { return memory_.get(); }
  bool pinned() const { return pinned_; }

 private:
  HostMemory memory_{nullptr, &std::free};
  size_t size_ = 0;
  bool pinned_ = false;
};

class WeightRing {
 public:
  // steps[i]'s compressed bytes are at sources[i]: device memory (resident), or host memory
  // when on_host[i] (streamed: pinned, or pageable after a failed pinned allocation). origin
  // names the file in errors.
  // slots: 2, or 1 (then a step's decode waits for the step before it to compute).
  WeightRing(std::vector<const WeightStep*> steps, std::vector<const uint8_t*> sources, std::vector<bool> on_host,
             uint64_t slot_bytes, int slots, uint64_t staging_bytes, cudaStream_t compute, std::string origin);
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

  std::vector<const WeightStep*> steps_;
  std::vector<const uint8_t*> sources_;
  std::vector<bool> on_host_;
  std::string origin_;
  cudaStream_t compute_, copy_ = nullptr, decode_ = nullptr;
  cuda::DeviceBuffer<uint8_t> slot_[2], staging_[2];
  cuda::DeviceBuffer<cuda::TileTask> tiles_;
  cuda::DeviceBuffer<cuda::BlockTask> blocks_;
  std::vector<size_t> tile_base_, block_base_;  // per step: its first task in tiles_/blocks_
  cuda::DeviceBuffer<int> error_;
  cudaEvent_t copied_[2] = {}, decoded_[2] = {}, computed_[2] = {}, staging_read_[2] = {};
  int slots_ = 2;        // layer slots in use: slot_[0 .. slots_)
  uint64_t count_ = 0;   // acquisitions so far: the next slot is count_ % slots_
  uint64_t copies_ = 0;  // host copies so far: the next staging buffer is copies_ % 2
  std::vector<StepTimes> times_;
  size_t pending_ = 0;  // timed steps not yet collected
  std::vector<size_t> pending_steps_;
};

// Decodes all tiles of a plan from device memory src into dst, synchronously (full mode's
// load). Throws naming origin if the decoder found corrupt data.
void decode_on_device(const uint8_t* d_src, uint8_t* d_dst, const std::vector<cuda::TileTask>& tiles,
                      const std::vector<cuda::BlockTask>& blocks, cudaStream_t s, const std::string& origin);

// The GPU half of the calibration (path_speeds.h), on the schedule's first layer: pinned
// host -> device copies of its compressed bytes, the decoder on them, a device copy of the
// decoded layer (gpu_gbs: the one-token kernels read weights at about 60% of the copy rate,
// as measured in full mode, docs/benchmarks.md), and the hand-over of one token's activations
// to a host function and back. Then measure_cpu_layer, with pinned copies keeping PCIe busy.
// Uses temporary buffers of one layer; about half a second for an 8B model.
void measure_paths(const CllmFile& file, const WeightSchedule& s, const LlamaConfig& c, int threads, cudaStream_t stream,
                   PathSpeeds& out);

}  // namespace cllm
