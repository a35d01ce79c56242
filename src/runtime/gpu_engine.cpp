// The CUDA engine: opens the device, plans (engine_plan.h), loads the weights into their
// stores (gpu_weights.h) and hands forward passes to GpuForward.
#include <algorithm>
#include <cstdint>

#include "common/error.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "model/forward_cpu.h"
#include "runtime/gpu_calibration.h"
#include "runtime/gpu_cpu_layers.h"
#include "runtime/gpu_engine.h"
#include "runtime/gpu_forward.h"
#include "runtime/gpu_weights.h"

namespace cllm {

namespace {

uint64_t device_used_bytes() {
  size_t free = 0, total = 0;
  CLLM_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return total - free;
}

class CudaEngine final : public GpuEngine {
 public:
  CudaEngine(const CllmFile& file, const GpuOptions& opt);
  ~CudaEngine() override;

  const float* forward(const int* tokens, int n, int pos, bool all_logits) override;
  const float* forward_batch(const int* tokens, const BatchSegment* segs, int n_segs) override;
  const LlamaConfig& config() const override { return c_; }
  int context() const override { return context_; }
  int sequences() const override { return sequences_; }
  int batch_capacity() const override { return batch_; }
  Mode mode() const override { return plan_.mode; }
  bool mode_was_chosen() const override { return plan_.chosen; }
  const MemoryPlan& memory() const override { return plan_.memory; }
  const Placements& placements() const override { return plan_.placements; }
  std::string device_name() const override { return device_name_; }
  double load_ms() const override { return load_ms_; }
  bool pinned() const override { return weights_->pinned(); }
  int cpu_max_batch() const override { return plan_.cpu_max_batch; }
  std::string plan_summary() const override { return plan_.summary; }
  const GpuStats& stats() const override { return stats_; }
  void reset_stats() override {
    stats_ = GpuStats{};
    track_vram();
  }

 private:
  uint64_t open_device(int device);  // returns the VRAM available to the plan
  void track_vram() { stats_.vram_peak = std::max<uint64_t>(stats_.vram_peak, device_used_bytes() - vram_base_); }

  LlamaConfig c_;
  WeightSchedule sched_;
  EnginePlan plan_;
  int context_ = 0, batch_ = 0, sequences_ = 1;  // context_: positions per sequence
  std::string device_name_;
  double load_ms_ = 0;
  uint64_t vram_base_ = 0;  // device memory in use before this engine allocated anything
  GpuStats stats_;
  cudaStream_t compute_ = nullptr;
  std::unique_ptr<GpuCpuLayers> cpu_;
  std::unique_ptr<GpuWeights> weights_;
  std::unique_ptr<GpuForward> forward_;
};

uint64_t CudaEngine::open_device(int device) {
  CLLM_CUDA_CHECK(cudaSetDevice(device));
  CLLM_CUDA_CHECK(cudaFree(nullptr));  // create the context before measuring what is in use
  cudaDeviceProp prop;
  CLLM_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  device_name_ = prop.name;
  size_t free = 0, total = 0;
  CLLM_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  vram_base_ = total - free;
  // Keep a margin for cuBLAS's own state and the driver.
  const uint64_t margin = std::max<uint64_t>(256ull << 20, total / 50);
  return free > margin ? free - margin : 0;
}

CudaEngine::CudaEngine(const CllmFile& file, const GpuOptions& opt) {
  Timer load;
  c_ = config_from_metadata(file.metadata());
  context_ = resolve_context(c_, opt.context);
  CLLM_CHECK(opt.max_batch >= 1, "max_batch must be >= 1, found ", opt.max_batch);
  CLLM_CHECK(opt.sequences >= 1, "sequences must be >= 1, found ", opt.sequences);
  sequences_ = opt.sequences;
  batch_ = std::min(opt.max_batch, context_);
  CLLM_CHECK(c_.head_dim <= cuda::kMaxHeadDim && c_.head_dim % 2 == 0, "'", file.path(), "': head_dim ", c_.head_dim,
             " is not supported by the GPU engine (even, at most ", cuda::kMaxHeadDim, ")");
  sched_ = plan_weight_schedule(file, c_);
  const int threads = std::max(1, opt.threads);

  EngineMachine machine;
  machine.available = open_device(opt.device);
  if (opt.vram_limit) machine.available = std::min<uint64_t>(machine.available, opt.vram_limit);
  if (opt.vram_budget && opt.placements.empty()) {
    machine.speeds = gpu_path_speeds(file, sched_, c_, threads, device_name_, machine.speeds_cached);
    machine.host_ram = host_ram_available();
  }
  const EngineRequest request{opt.mode, opt.vram_budget, opt.placements, opt.cpu_max_batch, opt.ring_slots};
  // The plan counts the KV cache of every sequence: sequences x context positions a layer.
  plan_ = plan_engine(sched_, c_, request, context_ * sequences_, batch_, machine);
  if (sequences_ > 1)
    for (const Placement p : plan_.placements)
      if (p == Placement::cpu)
        fail("'", file.path(), "': ", sequences_, " sequences need every layer on the GPU, but the plan for this "
             "VRAM budget computes some on the CPU (their caches hold one sequence): raise the budget, use one "
             "sequence, or choose a --mode");

  // The compute stream gets the highest priority: the ring's decoder fills whatever SMs the
  // layer's kernels leave free instead of holding them while compute waits.
  int least = 0, greatest = 0;
  CLLM_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  CLLM_CUDA_CHECK(cudaStreamCreateWithPriority(&compute_, cudaStreamNonBlocking, greatest));
  try {
    ThreadPool pool(threads);
    cpu_ = std::make_unique<GpuCpuLayers>(c_.n_layers, stats_);
    weights_ = load_gpu_weights(file, sched_, plan_.placements, plan_.ring_slots, batch_, compute_, pool, *cpu_);
    if (plan_.memory.fused > 0) {  // the plan allowed for escapes; from here on it says what the load made
      plan_.memory.weights = plan_.memory.weights - plan_.memory.fused + weights_->fused_bytes();
      plan_.memory.fused = weights_->fused_bytes();
    }
    if (cpu_->empty()) plan_.cpu_max_batch = 0;
    cpu_->setup(c_, context_, kv_cache_dtype(sched_.linear_dtype), plan_.cpu_max_batch, threads);
    const GpuForwardShape shape{context_, sequences_, batch_, plan_.cpu_max_batch, plan_.placements};
    forward_ = std::make_unique<GpuForward>(file, c_, sched_, shape, *weights_, *cpu_, compute_);
  } catch (const Error& e) {
    if (std::string(e.what()).find("out of memory") == std::string::npos) throw;
    fail("out of VRAM while allocating the ", mode_name(plan_.mode), " plan (", plan_.memory.describe(), "), ",
         format_gib(machine.available), " available: ", e.what());
  }
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));
  track_vram();
  load_ms_ = load.ms();
}

CudaEngine::~CudaEngine() {
  if (compute_) CLLM_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(compute_));
  forward_.reset();
  weights_.reset();
  cpu_.reset();
  if (compute_) CLLM_CUDA_CHECK_NOTHROW(cudaStreamDestroy(compute_));
}

const float* CudaEngine::forward(const int* tokens, int n, int pos, bool all_logits) {
  const float* logits = forward_->forward(tokens, n, pos, all_logits);
  weights_->collect(stats_);
  ++stats_.forwards;
  track_vram();
  return logits;
}

const float* CudaEngine::forward_batch(const int* tokens, const BatchSegment* segs, int n_segs) {
  check_batch(tokens, segs, n_segs, sequences_, context_, batch_, c_.vocab_size);
  // one segment of sequence 0 is forward()'s pass, bit for bit (its graph, its CPU route)
  if (n_segs == 1 && segs[0].seq == 0) return forward(tokens, segs[0].n, segs[0].pos, false);
  const float* logits = forward_->forward_batch(tokens, segs, n_segs);
  weights_->collect(stats_);
  ++stats_.forwards;
  track_vram();
  return logits;
}

}  // namespace

std::unique_ptr<GpuEngine> GpuEngine::open(const CllmFile& file, const GpuOptions& opt) {
  return std::make_unique<CudaEngine>(file, opt);
}

}  // namespace cllm
