// The bridge between the GPU engine and the layers it computes on the CPU (Placement::cpu,
// docs/architecture.md "CPU layers"): their decoded weights in host RAM, their KV cache
// there, the hand-over of the residual stream, and the KV copies between host and device
// when a batch takes the other route (CUDA builds only).
//
// A run of consecutive CPU layers is three items on the compute stream: x down into a mapped
// pinned buffer (a kernel, not the copy engine, which may be busy with a streamed layer's
// 290 MB), a host function running the layers, and x back up. Being stream-ordered, the host
// thread keeps enqueueing meanwhile, and the ring keeps copying and decoding the next steps.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "model/cpu_layer.h"
#include "runtime/gpu_host_memory.h"
#include "runtime/gpu_stats.h"
#include "runtime/weight_schedule.h"

namespace cllm {

// Where the device's KV cache keeps a layer's keys and values: (context, kv_dim) rows each.
struct DeviceKvLayer {
  uint8_t* k = nullptr;
  uint8_t* v = nullptr;
};

class GpuCpuLayers {
 public:
  GpuCpuLayers(int n_layers, GpuStats& stats) : index_(n_layers, -1), stats_(stats) {}
  ~GpuCpuLayers();
  GpuCpuLayers(const GpuCpuLayers&) = delete;
  GpuCpuLayers& operator=(const GpuCpuLayers&) = delete;

  // At load: layer step's decoded weights, copied from the device slot d_slot into host RAM.
  void add_layer(const WeightStep& step, const uint8_t* d_slot);
  // After the layers are added: the CPU's layer runner for batches of up to max_batch tokens,
  // its KV cache (context positions of kv_dt) and threads.
  void setup(const LlamaConfig& c, int context, DType kv_dt, int max_batch, int threads);

  bool empty() const { return slots_.empty(); }
  bool is_cpu(int layer) const { return index_[layer] >= 0; }

  // Enqueues layers [first, last) for n tokens at pos on the stream, reading and writing x
  // (n, dim) fp32 in device memory.
  void enqueue_run(int first, int last, int n, int pos, float* x, cudaStream_t s);
  // A CPU layer's keys and values live in host RAM only (page-locked). A batch too large for
  // the CPU (a prompt) runs the layer on the GPU instead: its rows 0..pos-1 go up into the
  // device layer `dev` first, and the rows the batch wrote (pos..pos+n-1) come back down.
  void kv_up(int layer, int pos, const DeviceKvLayer& dev, cudaStream_t s);
  void kv_down(int layer, int pos, int n, const DeviceKvLayer& dev, cudaStream_t s);
  // Waits for a pass enqueued on s (leaving the cores to the CPU layers while it waits).
  // Throws a CPU layer's error.
  void finish(bool cpu_route, cudaStream_t s);

 private:
  struct Run {  // layers [first, last) of one batch, run by a host function on the stream
    GpuCpuLayers* self;
    int first, last, n, pos;
  };
  static void CUDART_CB run_entry(void* run);
  void run(const Run& r);

  std::vector<int> index_;                    // per layer: its index among the CPU layers, -1 if none
  std::vector<CpuLayerMemory> slots_;         // per CPU layer: its decoded weights
  std::vector<CpuLayerWeights> weights_;      // per CPU layer: its tensors in that memory
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<CpuLayerForward> layer_;
  std::unique_ptr<CpuKvCache> kv_;
  PinnedBuffer x_host_;                       // (max_batch, dim) fp32 residual stream on its way through
  int dim_ = 0;
  std::vector<std::unique_ptr<Run>> runs_;    // the runs enqueued by the current pass
  std::string error_;                         // set by a host function, thrown after the stream synchronizes
  size_t kv_row_bytes_ = 0;                   // one position's keys (or values)
  std::vector<void*> registered_;             // the KV arrays page-locked for DMA
  cudaEvent_t done_ = nullptr;                // blocking-sync: waiting for CPU layers leaves the cores to them
  GpuStats& stats_;
};

}  // namespace cllm
