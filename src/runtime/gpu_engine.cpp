// The CUDA engine: loads the weights for the chosen mode, then runs forward passes whose
// layers take their weights from per-layer buffers (full) or from the two-slot ring
// (resident, lowmem). The kernels, shapes, alignments and order of operations are the same in
// every mode, so all three give the same logits bit for bit.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "common/error.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "cuda/blas.h"
#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "cuda/kernels.h"
#include "model/cpu_layer.h"
#include "model/cpu_ops.h"
#include "model/forward_cpu.h"
#include "model/tensor_data.h"
#include "runtime/gpu_engine.h"
#include "runtime/gpu_ring.h"
#include "runtime/placement_plan.h"

namespace cllm {

namespace {

using cuda::DeviceBuffer;

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
  const LlamaConfig& config() const override { return c_; }
  int context() const override { return context_; }
  Mode mode() const override { return mode_; }
  bool mode_was_chosen() const override { return chosen_; }
  const MemoryPlan& memory() const override { return plan_; }
  const Placements& placements() const override { return placements_; }
  std::string device_name() const override { return device_name_; }
  double load_ms() const override { return load_ms_; }
  bool pinned() const override { return host_store_.pinned(); }
  int cpu_max_batch() const override { return cpu_max_batch_; }
  std::string plan_summary() const override { return plan_summary_; }
  const GpuStats& stats() const override { return stats_; }
  void reset_stats() override {
    stats_ = GpuStats{};
    track_vram();
  }

 private:
  void allocate();
  void load_full(ThreadPool& pool);
  void load_ring(ThreadPool& pool);
  void embed(const int* tokens, int n);
  const uint8_t* acquire(size_t step);
  void release(size_t step);
  void run_layer(const WeightStep& step, const uint8_t* w, int n, int pos, const int* d_pos = nullptr);
  const float* forward_one_graph(int token, int pos);
  void drop_graph();
  void run_classifier(int rows);
  void track_vram() { stats_.vram_peak = std::max<uint64_t>(stats_.vram_peak, device_used_bytes() - vram_base_); }
  // CPU layers
  struct CpuRun {  // layers [first, last) of one batch, run by a host function on the stream
    CudaEngine* engine;
    int first, last, n, pos;
  };
  static void CUDART_CB cpu_run_entry(void* run);
  void cpu_run(const CpuRun& r);
  void enqueue_cpu_run(int first, int last, int n, int pos);
  void sync_cpu_kv(bool cpu_route, int pos);
  void plan_for_budget(const GpuOptions& opt, uint64_t available);
  void setup_cpu_layers(int threads);

  const CllmFile& file_;
  LlamaConfig c_;
  WeightSchedule sched_;
  std::vector<const WeightStep*> steps_;  // layers, then classifier slices
  Mode mode_ = Mode::full;
  // Full mode's weights are never written once loaded, so one token's products may load them
  // while the kernel before them finishes (matvec's overlap_previous); in the ring modes a
  // slot is rewritten as soon as it is released.
  bool weights_fixed() const { return mode_ == Mode::full; }
  Placements placements_;            // per step: decoded, resident or streamed
  std::vector<size_t> ring_index_;   // per step: its index in the ring (ring steps only)
  bool chosen_ = false;
  MemoryPlan plan_;
  int context_ = 0, batch_ = 0;
  DType act_ = DType::BF16, kv_ = DType::F16;
  std::string device_name_;
  double load_ms_ = 0;
  uint64_t vram_base_ = 0;  // device memory in use before this engine allocated anything
  GpuStats stats_;

  cudaStream_t compute_ = nullptr;
  DeviceBuffer<uint8_t> workspace_;
  std::unique_ptr<cuda::Blas> blas_;
  // activations (memory_plan.h ActivationSizes)
  DeviceBuffer<float> x_, q_, k_, v_, gate_, up_, logits_, rope_cos_, rope_sin_;
  DeviceBuffer<uint8_t> xn_, h_, rows_;  // act dtype; rows_: token ids or gathered embedding rows
  DeviceBuffer<uint8_t> k_cache_, v_cache_;
  int logit_rows_ = 1;
  // weights
  DeviceBuffer<uint8_t> output_norm_;
  std::vector<DeviceBuffer<uint8_t>> full_layers_;  // full: one decoded group per layer
  std::vector<DeviceBuffer<uint8_t>> decoded_steps_;  // hybrid: the decoded steps' buffers
  DeviceBuffer<uint8_t> full_global_;               // full: token_embd, output_norm, output decoded
  uint64_t full_embd_offset_ = 0, full_classifier_offset_ = 0;
  DeviceBuffer<uint8_t> store_;                      // resident: every step's compressed bytes
  RegisteredHostMemory host_store_;                  // lowmem: a page-locked copy of the steps' bytes
  std::unique_ptr<WeightRing> ring_;
  std::vector<uint8_t> embd_host_;                   // ring modes: token_embd decoded, (vocab, dim)
  PinnedBuffer rows_host_;                           // ring modes: gathered rows on their way up
  cudaEvent_t rows_sent_ = nullptr;
  std::vector<float> logits_host_;
  // full mode, one token: the whole pass captured once as a CUDA graph (one launch instead of
  // ~8 per layer); the position comes from d_pos_, the token from rows_.
  bool use_graph_ = false;
  cudaGraphExec_t token_graph_ = nullptr;
  DeviceBuffer<int> d_pos_;
  // CPU layers (Placement::cpu): decoded weights in host RAM, their own KV cache there; the
  // device KV cache keeps their entries too, for batches that stream them instead. Positions
  // below kv_host_upto_ / kv_device_upto_ are valid in the host / device copy.
  int cpu_max_batch_ = 0;
  int ring_slots_ = 2;  // the ring's layer slots (the planner may take 1)
  std::string plan_summary_;
  std::vector<int> cpu_index_;      // per layer: its index among the CPU layers, -1 if none
  std::vector<CpuLayerMemory> cpu_slots_;  // per CPU layer: its decoded slot
  std::vector<CpuLayerWeights> cpu_weights_;  // per CPU layer: its tensors in that slot
  std::unique_ptr<ThreadPool> cpu_pool_;
  std::unique_ptr<CpuLayerForward> cpu_layer_;
  std::unique_ptr<CpuKvCache> cpu_kv_;
  PinnedBuffer x_host_;             // (cpu_max_batch, dim) fp32 residual stream on its way through the CPU
  std::vector<std::unique_ptr<CpuRun>> cpu_runs_;  // the runs enqueued by the current forward
  std::string cpu_error_;           // set by a host function, thrown after the stream synchronizes
  int kv_host_upto_ = 0, kv_device_upto_ = 0;
  cudaEvent_t done_ = nullptr;       // blocking-sync event: waiting for CPU layers leaves the cores to them
};

CudaEngine::CudaEngine(const CllmFile& file, const GpuOptions& opt) : file_(file) {
  Timer load;
  c_ = config_from_metadata(file.metadata());
  context_ = resolve_context(c_, opt.context);
  CLLM_CHECK(opt.max_batch >= 1, "max_batch must be >= 1, found ", opt.max_batch);
  batch_ = std::min(opt.max_batch, context_);
  CLLM_CHECK(c_.head_dim <= cuda::kMaxHeadDim && c_.head_dim % 2 == 0, "'", file.path(), "': head_dim ", c_.head_dim,
             " is not supported by the GPU engine (even, at most ", cuda::kMaxHeadDim, ")");
  sched_ = plan_weight_schedule(file, c_);
  for (const auto& s : sched_.layers) steps_.push_back(&s);
  for (const auto& s : sched_.classifier) steps_.push_back(&s);
  act_ = sched_.linear_dtype;
  kv_ = kv_cache_dtype(act_);

  CLLM_CUDA_CHECK(cudaSetDevice(opt.device));
  CLLM_CUDA_CHECK(cudaFree(nullptr));  // create the context before measuring what is in use
  cudaDeviceProp prop;
  CLLM_CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device));
  device_name_ = prop.name;
  size_t free = 0, total = 0;
  CLLM_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  vram_base_ = total - free;
  // Keep a margin for cuBLAS's own state and the driver.
  const uint64_t margin = std::max<uint64_t>(256ull << 20, total / 50);
  uint64_t available = free > margin ? free - margin : 0;
  if (opt.vram_limit) available = std::min<uint64_t>(available, opt.vram_limit);

  if (!opt.placements.empty()) {
    CLLM_CHECK(opt.placements.size() == steps_.size(), "placements for ", opt.placements.size(), " steps, the model has ",
               steps_.size());
    placements_ = opt.placements;
    ring_slots_ = opt.ring_slots;
    const MemoryPlan need = plan_memory(sched_, c_, placements_, context_, batch_, ring_slots_);
    if (need.total() > available)
      fail("out of VRAM: the given placements need ", need.describe(), ", ", format_gib(available), " available");
    cpu_max_batch_ = std::find(placements_.begin(), placements_.end(), Placement::cpu) == placements_.end()
                         ? 0
                         : std::max(0, std::min(opt.cpu_max_batch < 0 ? 1 : opt.cpu_max_batch, batch_));
  } else if (opt.vram_budget) {
    CLLM_CHECK(!opt.mode, "a VRAM budget plans where each layer lives: it takes no mode (found ",
               mode_name(*opt.mode), ")");
    plan_for_budget(opt, std::min(opt.vram_budget, available));
    chosen_ = true;
  } else if (!opt.mode) {
    placements_ = uniform_placements(sched_, choose_mode(sched_, c_, context_, batch_, available));
    chosen_ = true;
  } else {
    const Mode m = *opt.mode;
    CLLM_CHECK(m != Mode::hybrid, "mode hybrid comes from a VRAM budget or given placements");
    if (plan_memory(sched_, c_, m, context_, batch_).total() > available)
      fail(out_of_vram_message(sched_, c_, m, context_, batch_, available));
    placements_ = uniform_placements(sched_, m);
  }
  mode_ = mode_of(placements_);
  plan_ = plan_memory(sched_, c_, placements_, context_, batch_, ring_slots_);

  // The compute stream gets the highest priority: the ring's decoder fills whatever SMs the
  // layer's kernels leave free instead of holding them while compute waits.
  int least = 0, greatest = 0;
  CLLM_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  CLLM_CUDA_CHECK(cudaStreamCreateWithPriority(&compute_, cudaStreamNonBlocking, greatest));
  try {
    allocate();
    ThreadPool pool(std::max(1, opt.threads));
    if (mode_ == Mode::full) load_full(pool);
    else load_ring(pool);
    setup_cpu_layers(std::max(1, opt.threads));
  } catch (const Error& e) {
    if (std::string(e.what()).find("out of memory") == std::string::npos) throw;
    fail("out of VRAM while allocating the ", mode_name(mode_), " plan (", plan_.describe(), "), ",
         format_gib(available), " available: ", e.what());
  }
  use_graph_ = mode_ == Mode::full && !std::getenv("CLLM_NO_GRAPHS");
  d_pos_.resize(1);
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));
  track_vram();
  load_ms_ = load.ms();
}

void CudaEngine::drop_graph() {
  if (token_graph_) cudaGraphExecDestroy(token_graph_);
  token_graph_ = nullptr;
}

const float* CudaEngine::forward_one_graph(int token, int pos) {
  if (!token_graph_) {
    // The same kernels with the same arguments as the uncaptured path, except that RoPE and
    // attention read the position from device memory.
    cudaGraph_t graph = nullptr;
    CLLM_CUDA_CHECK(cudaStreamBeginCapture(compute_, cudaStreamCaptureModeThreadLocal));
    cuda::gather_rows_f32(full_global_.data() + full_embd_offset_, sched_.token_embd->dtype, c_.dim,
                          reinterpret_cast<const int*>(rows_.data()), 1, x_.data(), compute_);
    for (size_t l = 0; l < sched_.layers.size(); ++l)
      run_layer(sched_.layers[l], full_layers_[l].data(), 1, 0, d_pos_.data());
    cuda::rmsnorm(x_.data(), output_norm_.data(), sched_.output_norm->dtype, xn_.data(), act_, 1, c_.dim, c_.norm_eps,
                  compute_);
    run_classifier(1);
    CLLM_CUDA_CHECK(cudaStreamEndCapture(compute_, &graph));
    const cudaError_t err = cudaGraphInstantiate(&token_graph_, graph, 0);
    cudaGraphDestroy(graph);
    CLLM_CUDA_CHECK(err);
  }
  const int args[2] = {token, pos};
  CLLM_CUDA_CHECK(cudaMemcpyAsync(rows_.data(), &args[0], sizeof(int), cudaMemcpyHostToDevice, compute_));
  CLLM_CUDA_CHECK(cudaMemcpyAsync(d_pos_.data(), &args[1], sizeof(int), cudaMemcpyHostToDevice, compute_));
  CLLM_CUDA_CHECK(cudaGraphLaunch(token_graph_, compute_));
  logits_host_.resize(c_.vocab_size);
  CLLM_CUDA_CHECK(cudaMemcpyAsync(logits_host_.data(), logits_.data(), sizeof(float) * c_.vocab_size,
                                  cudaMemcpyDeviceToHost, compute_));
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));
  ++stats_.forwards;
  return logits_host_.data();
}

CudaEngine::~CudaEngine() {
  if (compute_) cudaStreamSynchronize(compute_);
  drop_graph();
  ring_.reset();
  blas_.reset();
  if (rows_sent_) cudaEventDestroy(rows_sent_);
  if (done_) cudaEventDestroy(done_);
  if (compute_) cudaStreamDestroy(compute_);
}

void CudaEngine::allocate() {
  const ActivationSizes a = activation_sizes(c_, act_, batch_);
  workspace_.resize(kBlasWorkspaceBytes);
  blas_ = std::make_unique<cuda::Blas>(compute_, workspace_.data(), workspace_.size());
  blas_->overlap_single_token_products(weights_fixed());
  x_.resize(a.x / 4);
  xn_.resize(a.xn);
  q_.resize(a.q / 4);
  k_.resize(a.kv / 4);
  v_.resize(a.kv / 4);
  gate_.resize(a.ffn / 4);
  up_.resize(a.ffn / 4);
  h_.resize(a.h);
  logits_.resize(a.logits / 4);
  rows_.resize(a.tokens);
  const uint64_t kv_bytes = static_cast<uint64_t>(c_.n_layers) * context_ * c_.kv_dim() * dtype_size(kv_);
  k_cache_.resize(kv_bytes);
  v_cache_.resize(kv_bytes);
  // RoPE angles exactly as the CPU reference computes them.
  const cpu::RopeTable rope =
      cpu::rope_table(cpu::rope_frequencies(c_.head_dim, c_.rope_theta, c_.rope_scaling), context_);
  rope_cos_.upload(rope.cos, compute_);
  rope_sin_.upload(rope.sin, compute_);
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));  // rope is a temporary
  // output_norm: small, decoded on the host, kept in VRAM in every mode
  std::vector<uint8_t> norm(sched_.output_norm->raw_bytes());
  decode_tensor(file_, *sched_.output_norm, norm.data(), nullptr);
  output_norm_.upload(norm, compute_);
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));
}

void CudaEngine::load_full(ThreadPool&) {
  // Each group: its compressed bytes up through a staging buffer, decoded into its own
  // buffer with the same layout as a ring slot.
  const GroupDecodePlan global = plan_group_decode(file_, sched_.global_group);
  full_embd_offset_ = global.tensors.at(sched_.token_embd->name).offset;
  full_classifier_offset_ = global.tensors.at(sched_.classifier_tensor->name).offset;
  DeviceBuffer<uint8_t> staging(std::max(sched_.max_src_bytes, global.src_bytes));
  auto load_group = [&](uint64_t src_offset, uint64_t src_bytes, const std::vector<cuda::TileTask>& tiles,
                        const std::vector<cuda::BlockTask>& blocks, DeviceBuffer<uint8_t>& dst, uint64_t dst_bytes) {
    dst.resize(dst_bytes);
    CLLM_CUDA_CHECK(cudaMemcpy(staging.data(), file_.file_data() + src_offset, src_bytes, cudaMemcpyHostToDevice));
    decode_on_device(staging.data(), dst.data(), tiles, blocks, compute_, file_.path());
  };
  load_group(global.src_offset, global.src_bytes, global.tiles, global.blocks, full_global_, global.slot_bytes);
  full_layers_.resize(sched_.layers.size());
  for (size_t l = 0; l < sched_.layers.size(); ++l) {
    const WeightStep& s = sched_.layers[l];
    load_group(s.src_offset, s.src_bytes, s.tiles, s.blocks, full_layers_[l], s.slot_bytes);
  }
}

void CudaEngine::load_ring(ThreadPool& pool) {
  // Per step, by placement: decoded into its own buffer now; compressed bytes in VRAM
  // (resident); or in pinned host memory (streamed; pageable, straight from the mapped file,
  // when pinning fails). Each store keeps its steps 256-byte aligned.
  std::vector<uint64_t> at(steps_.size(), 0);
  uint64_t device_end = 0, host_end = 0, staging_bytes = 0, slot_bytes = 0;
  for (size_t i = 0; i < steps_.size(); ++i) {
    const uint64_t bytes = (steps_[i]->src_bytes + 255) / 256 * 256;
    if (placements_[i] == Placement::resident) at[i] = std::exchange(device_end, device_end + bytes);
    if (on_host(placements_[i])) {
      at[i] = std::exchange(host_end, host_end + bytes);
      staging_bytes = std::max(staging_bytes, steps_[i]->src_bytes);
    }
    if (placements_[i] != Placement::decoded) slot_bytes = std::max(slot_bytes, steps_[i]->slot_bytes);
  }
  decoded_steps_.resize(steps_.size());
  cpu_index_.assign(sched_.layers.size(), -1);
  {
    // Decoded steps into their VRAM buffers; CPU layers through a temporary slot into host RAM.
    DeviceBuffer<uint8_t> staging, slot;
    for (size_t i = 0; i < steps_.size(); ++i) {
      if (placements_[i] != Placement::decoded && placements_[i] != Placement::cpu) continue;
      const WeightStep& s = *steps_[i];
      staging.resize(std::max<size_t>(staging.size(), s.src_bytes));
      CLLM_CUDA_CHECK(cudaMemcpy(staging.data(), file_.file_data() + s.src_offset, s.src_bytes, cudaMemcpyHostToDevice));
      if (placements_[i] == Placement::decoded) {
        decoded_steps_[i].resize(s.slot_bytes);
        decode_on_device(staging.data(), decoded_steps_[i].data(), s.tiles, s.blocks, compute_, file_.path());
        continue;
      }
      slot.resize(std::max<size_t>(slot.size(), s.slot_bytes));
      decode_on_device(staging.data(), slot.data(), s.tiles, s.blocks, compute_, file_.path());
      cpu_index_[s.layer] = static_cast<int>(cpu_slots_.size());
      cpu_slots_.push_back(allocate_cpu_layer_memory(s.slot_bytes));
      CLLM_CUDA_CHECK(cudaMemcpy(cpu_slots_.back().get(), slot.data(), s.slot_bytes, cudaMemcpyDeviceToHost));
      std::array<DType, kCpuLayerTensors> dtype{};
      for (int t = 0; t < kCpuLayerTensors; ++t) dtype[t] = s.tensor[t]->dtype;
      cpu_weights_.push_back(cpu_layer_weights_in_slot(cpu_slots_.back().get(), s.offset, dtype));
    }
  }
  store_.resize(device_end);
  for (size_t i = 0; i < steps_.size(); ++i)
    if (placements_[i] == Placement::resident)
      CLLM_CUDA_CHECK(cudaMemcpy(store_.data() + at[i], file_.file_data() + steps_[i]->src_offset,
                                 steps_[i]->src_bytes, cudaMemcpyHostToDevice));
  // Streamed steps: copied by the pool into huge-page memory, then locked in place. (Locking
  // the mapped file's page-cache pages instead avoids the copy but took longer: 7.6 s against
  // 5.1 s of load for the 8B on the H200; docs/perf-notes.md.)
  if (host_end > 0 && !std::getenv("CLLM_NO_PINNED") && host_store_.allocate(host_end)) {
    pool.parallel_for(steps_.size(), [&](size_t i) {
      if (on_host(placements_[i]))
        std::memcpy(host_store_.data() + at[i], file_.file_data() + steps_[i]->src_offset, steps_[i]->src_bytes);
    });
    if (!host_store_.pin()) host_store_.release();  // no gain over the mapped file's own pages
  }
  const bool pinned_copy = host_store_.pinned();
  if (host_end > 0 && !pinned_copy)
    log_warn("could not lock ", format_gib(host_end),
             " of host memory for DMA: streaming the weights from pageable memory (slower)");

  std::vector<const WeightStep*> ring_steps;
  std::vector<const uint8_t*> sources;
  std::vector<bool> on_host_steps;
  ring_index_.assign(steps_.size(), SIZE_MAX);
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (placements_[i] == Placement::decoded) continue;
    ring_index_[i] = ring_steps.size();
    ring_steps.push_back(steps_[i]);
    const bool host = on_host(placements_[i]);
    on_host_steps.push_back(host);
    if (!host) sources.push_back(store_.data() + at[i]);
    else if (pinned_copy) sources.push_back(host_store_.data() + at[i]);
    else sources.push_back(file_.file_data() + steps_[i]->src_offset);
  }
  if (!ring_steps.empty())
    ring_ = std::make_unique<WeightRing>(ring_steps, std::move(sources), std::move(on_host_steps), slot_bytes, ring_slots_,
                                         staging_bytes,
                                         compute_, file_.path());
  // Embedding rows are looked up on the host, so token_embd never sits whole in VRAM.
  embd_host_.resize(sched_.token_embd->raw_bytes());
  decode_tensor(file_, *sched_.token_embd, embd_host_.data(), &pool);
  if (!rows_host_.allocate(rows_.size())) fail("could not allocate ", rows_.size(), " bytes of pinned host memory");
  CLLM_CUDA_CHECK(cudaEventCreateWithFlags(&rows_sent_, cudaEventDisableTiming));
}

const uint8_t* CudaEngine::acquire(size_t i) {
  if (mode_ != Mode::full) {
    if (placements_[i] == Placement::decoded) return decoded_steps_[i].data();
    return ring_->acquire(ring_index_[i]);
  }
  const WeightStep& s = *steps_[i];
  if (s.layer >= 0) return full_layers_[s.layer].data();
  const uint64_t row_bytes = static_cast<uint64_t>(c_.dim) * dtype_size(act_);
  return full_global_.data() + full_classifier_offset_ + s.row_begin * row_bytes;
}

void CudaEngine::release(size_t i) {
  if (mode_ != Mode::full && placements_[i] != Placement::decoded) ring_->release();
}

void CudaEngine::embed(const int* tokens, int n) {
  const DType dt = sched_.token_embd->dtype;
  if (mode_ == Mode::full) {
    CLLM_CUDA_CHECK(cudaMemcpyAsync(rows_.data(), tokens, sizeof(int) * n, cudaMemcpyHostToDevice, compute_));
    cuda::gather_rows_f32(full_global_.data() + full_embd_offset_, dt, c_.dim, reinterpret_cast<const int*>(rows_.data()),
                          n, x_.data(), compute_);
    return;
  }
  // The previous batch's rows must have left the pinned buffer before it is rewritten.
  CLLM_CUDA_CHECK(cudaEventSynchronize(rows_sent_));
  const size_t row_bytes = static_cast<size_t>(c_.dim) * dtype_size(dt);
  for (int t = 0; t < n; ++t)
    std::memcpy(rows_host_.data() + t * row_bytes, embd_host_.data() + static_cast<size_t>(tokens[t]) * row_bytes,
                row_bytes);
  CLLM_CUDA_CHECK(cudaMemcpyAsync(rows_.data(), rows_host_.data(), n * row_bytes, cudaMemcpyHostToDevice, compute_));
  CLLM_CUDA_CHECK(cudaEventRecord(rows_sent_, compute_));
  cuda::gather_rows_f32(rows_.data(), dt, c_.dim, nullptr, n, x_.data(), compute_);
}

void CudaEngine::run_layer(const WeightStep& step, const uint8_t* w, int n, int pos, const int* d_pos) {
  const int dim = c_.dim, qd = c_.q_dim(), kvd = c_.kv_dim(), ffn = c_.ffn_dim;
  const auto W = [&](LayerTensor t) { return w + step.offset[t]; };
  const auto T = [&](LayerTensor t) { return step.tensor[t]->dtype; };
  const size_t layer_kv = static_cast<size_t>(context_) * kvd * dtype_size(kv_);
  uint8_t* kc = k_cache_.data() + step.layer * layer_kv;
  uint8_t* vc = v_cache_.data() + step.layer * layer_kv;
  cuda::Blas& b = *blas_;

  // attention block: x += wo . attention(rope(wq xn), rope(wk xn), wv xn), xn = rmsnorm(x)
  cuda::rmsnorm(x_.data(), W(kAttnNorm), T(kAttnNorm), xn_.data(), act_, n, dim, c_.norm_eps, compute_);
  if (n == 1) {  // one token: q, k and v in one launch
    cuda::MatVecJobs qkv;
    qkv.job[0] = {W(kAttnQ), q_.data(), qd, false};
    qkv.job[1] = {W(kAttnK), k_.data(), kvd, false};
    qkv.job[2] = {W(kAttnV), v_.data(), kvd, false};
    qkv.count = 3;
    qkv.overlap_previous = weights_fixed();
    cuda::matvec(qkv, act_, xn_.data(), dim, compute_);
  } else {
    b.linear(W(kAttnQ), act_, xn_.data(), q_.data(), qd, n, dim, qd, false);
    b.linear(W(kAttnK), act_, xn_.data(), k_.data(), kvd, n, dim, kvd, false);
    b.linear(W(kAttnV), act_, xn_.data(), v_.data(), kvd, n, dim, kvd, false);
  }
  const cuda::RopeArgs rope{c_.n_heads, c_.n_kv_heads, c_.head_dim, c_.rope_layout == RopeLayout::neox,
                            rope_cos_.data(), rope_sin_.data()};
  cuda::rope_store_kv(q_.data(), k_.data(), v_.data(), kc, vc, kv_, n, pos, d_pos, rope, compute_);
  cuda::attention(q_.data(), kc, vc, kv_, xn_.data(), act_, n, pos, d_pos, c_.n_heads, c_.n_kv_heads, c_.head_dim,
                  compute_);
  b.linear(W(kAttnOutput), act_, xn_.data(), x_.data(), dim, n, qd, dim, true);

  // feed-forward block: x += w_down (silu(w_gate xn) * (w_up xn)), xn = rmsnorm(x)
  cuda::rmsnorm(x_.data(), W(kFfnNorm), T(kFfnNorm), xn_.data(), act_, n, dim, c_.norm_eps, compute_);
  if (n == 1) {  // one token: both products and the SwiGLU in one launch
    cuda::matvec_swiglu(W(kFfnGate), W(kFfnUp), act_, xn_.data(), h_.data(), ffn, dim, compute_, weights_fixed());
  } else {
    b.linear(W(kFfnGate), act_, xn_.data(), gate_.data(), ffn, n, dim, ffn, false);
    b.linear(W(kFfnUp), act_, xn_.data(), up_.data(), ffn, n, dim, ffn, false);
    cuda::swiglu(gate_.data(), up_.data(), h_.data(), act_, static_cast<size_t>(n) * ffn, compute_);
  }
  b.linear(W(kFfnDown), act_, h_.data(), x_.data(), dim, n, ffn, dim, true);
}

void CudaEngine::run_classifier(int rows) {
  for (size_t k = 0; k < sched_.classifier.size(); ++k) {
    const WeightStep& s = sched_.classifier[k];
    const size_t step = sched_.layers.size() + k;
    const uint8_t* w = acquire(step);
    blas_->linear(w, act_, xn_.data(), logits_.data() + s.row_begin, c_.vocab_size, rows, c_.dim,
                  s.row_end - s.row_begin, false);
    release(step);
  }
}

const float* CudaEngine::forward(const int* tokens, int n, int pos, bool all_logits) {
  const int vocab = c_.vocab_size;
  if (n < 1) fail("forward: no tokens");
  if (pos < 0 || pos + n > context_)
    fail("forward: positions ", pos, "..", pos + n - 1, " do not fit the context of ", context_, " tokens");
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail("forward: token id ", tokens[i], " out of range (vocabulary of ", vocab, ")");
  if (n == 1 && !all_logits && use_graph_) return forward_one_graph(tokens[0], pos);
  logits_host_.resize(static_cast<size_t>(all_logits ? n : 1) * vocab);
  if (all_logits && logit_rows_ < batch_) {  // every row's logits: a larger buffer, on demand
    drop_graph();  // it wrote into the old buffer
    logits_.resize(static_cast<size_t>(batch_) * vocab);
    logit_rows_ = batch_;
  }
  // Small batches compute the CPU layers on the CPU; larger ones stream them through the ring.
  const bool cpu_route = n <= cpu_max_batch_;
  if (!cpu_index_.empty()) sync_cpu_kv(cpu_route, pos);
  for (int b = 0; b < n; b += batch_) {
    const int nb = std::min(batch_, n - b);
    embed(tokens + b, nb);
    const int n_layers = static_cast<int>(sched_.layers.size());
    for (int l = 0; l < n_layers; ++l) {
      if (cpu_route && placements_[l] == Placement::cpu) {
        int last = l + 1;
        while (last < n_layers && placements_[last] == Placement::cpu) ++last;
        enqueue_cpu_run(l, last, nb, pos + b);
        l = last - 1;
        continue;
      }
      const uint8_t* w = acquire(l);
      run_layer(sched_.layers[l], w, nb, pos + b);
      release(l);
    }
    if (!all_logits && b + nb < n) continue;  // logits only where asked
    const int first = all_logits ? 0 : nb - 1, rows = nb - first;
    cuda::rmsnorm(x_.data() + static_cast<size_t>(first) * c_.dim, output_norm_.data(), sched_.output_norm->dtype,
                  xn_.data(), act_, rows, c_.dim, c_.norm_eps, compute_);
    run_classifier(rows);
    float* dst = logits_host_.data() + (all_logits ? static_cast<size_t>(b) * vocab : 0);
    CLLM_CUDA_CHECK(
        cudaMemcpyAsync(dst, logits_.data(), sizeof(float) * rows * vocab, cudaMemcpyDeviceToHost, compute_));
  }
  if (cpu_route && !cpu_index_.empty()) {
    CLLM_CUDA_CHECK(cudaEventRecord(done_, compute_));
    CLLM_CUDA_CHECK(cudaEventSynchronize(done_));
  } else {
    CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));
  }
  cpu_runs_.clear();
  if (!cpu_error_.empty()) fail(std::exchange(cpu_error_, std::string()));
  if (!cpu_index_.empty()) {  // the route taken holds positions pos .. pos+n-1 now; the other may not
    (cpu_route ? kv_host_upto_ : kv_device_upto_) = pos + n;
    int& other = cpu_route ? kv_device_upto_ : kv_host_upto_;
    other = std::min(other, pos);
  }
  if (ring_) ring_->collect(stats_);
  ++stats_.forwards;
  track_vram();
  return logits_host_.data();
}

// ---- CPU layers

void CudaEngine::plan_for_budget(const GpuOptions& opt, uint64_t budget) {
  // The paths' speeds on this machine: cached, or measured now (about half a second).
  PathSpeeds speeds;
  const int threads = std::max(1, opt.threads);
  const std::string key = path_speeds_key(device_name_, sched_, c_, threads);
  const bool cached = load_path_speeds(key, speeds);
  if (!cached) {
    Timer t;
    cudaStream_t stream = nullptr;
    CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    try {
      measure_paths(file_, sched_, c_, threads, stream, speeds);
    } catch (...) {
      cudaStreamDestroy(stream);
      throw;
    }
    CLLM_CUDA_CHECK(cudaStreamDestroy(stream));
    save_path_speeds(key, speeds);
    log_info("calibrated the weight paths in ", static_cast<int>(t.ms()), " ms: ", speeds.describe());
  }
  const PlacementPlan plan = plan_placements(sched_, c_, context_, batch_, budget, speeds, host_ram_available());
  placements_ = plan.placements;
  ring_slots_ = plan.ring_slots;
  cpu_max_batch_ = std::min(plan.cpu_max_batch, batch_);
  plan_summary_ = cat(cached ? "path speeds (cached): " : "path speeds (measured): ", speeds.describe(),
                      "; estimated ", plan.token.total_ms() > 0 ? 1000.0 / plan.token.total_ms() : 0.0,
                      " tok/s for one token, bound by ", plan.token.bound(),
                      ring_slots_ == 1 ? "; a ring of one slot" : "");
  if (cpu_max_batch_ > 0) plan_summary_ += cat("; CPU layers for batches of up to ", cpu_max_batch_, " tokens");
}

void CudaEngine::setup_cpu_layers(int threads) {
  if (cpu_slots_.empty()) {
    cpu_index_.clear();
    cpu_max_batch_ = 0;
    return;
  }
  const int rows = std::max(1, cpu_max_batch_);
  cpu_pool_ = std::make_unique<ThreadPool>(threads);
  CpuLayerOptions o;
  o.context = context_;
  o.max_batch = rows;
  cpu_layer_ = std::make_unique<CpuLayerForward>(c_, o, cpu_pool_.get());
  cpu_kv_ = std::make_unique<CpuKvCache>(static_cast<int>(cpu_slots_.size()), context_, c_.kv_dim(), kv_);
  if (!x_host_.allocate(sizeof(float) * rows * c_.dim)) fail("could not allocate pinned host memory for the CPU layers");
  CLLM_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventBlockingSync | cudaEventDisableTiming));
}

void CUDART_CB CudaEngine::cpu_run_entry(void* run) {
  const auto* r = static_cast<const CpuRun*>(run);
  r->engine->cpu_run(*r);
}

void CudaEngine::cpu_run(const CpuRun& r) {
  // On CUDA's host-function thread, between the copies down and up: no CUDA calls here.
  if (!cpu_error_.empty()) return;
  Timer t;
  try {
    for (int l = r.first; l < r.last; ++l) {
      const int k = cpu_index_[l];
      cpu_layer_->forward(cpu_weights_[k], cpu_kv_->layer(k), reinterpret_cast<float*>(x_host_.data()), r.n, r.pos);
      ++stats_.cpu_steps;
    }
  } catch (const std::exception& e) {
    cpu_error_ = cat("CPU layer: ", e.what());
  }
  stats_.cpu_ms += t.ms();
}

void CudaEngine::enqueue_cpu_run(int first, int last, int n, int pos) {
  // x down, the layers on the CPU, x up: all in stream order, so the host thread keeps
  // enqueueing (and the ring keeps copying and decoding the next steps) meanwhile. x moves
  // by a kernel through mapped memory, not cudaMemcpyAsync: a copy engine busy with a
  // streamed layer's 290 MB would hold the few KB of x back for milliseconds.
  const size_t count = static_cast<size_t>(n) * c_.dim;
  float* x_mapped = reinterpret_cast<float*>(x_host_.device_data());
  cuda::copy_f32(x_mapped, x_.data(), count, compute_);
  cpu_runs_.push_back(std::make_unique<CpuRun>(CpuRun{this, first, last, n, pos}));
  CLLM_CUDA_CHECK(cudaLaunchHostFunc(compute_, cpu_run_entry, cpu_runs_.back().get()));
  cuda::copy_f32(x_.data(), x_mapped, count, compute_);
}

void CudaEngine::sync_cpu_kv(bool cpu_route, int pos) {
  // Positions before pos that the route about to run lacks come from the other copy (after
  // switching between prompt batches and single tokens: a few KB per layer and token).
  int& upto = cpu_route ? kv_host_upto_ : kv_device_upto_;
  if (upto >= pos) return;
  const size_t row = static_cast<size_t>(c_.kv_dim()) * dtype_size(kv_);
  const size_t layer_kv = static_cast<size_t>(context_) * row;
  const size_t offset = upto * row, bytes = (pos - upto) * row;
  for (size_t l = 0; l < cpu_index_.size(); ++l) {
    const int k = cpu_index_[l];
    if (k < 0) continue;
    const CpuKvLayer h = cpu_kv_->layer(k);
    uint8_t* dk = k_cache_.data() + l * layer_kv + offset;
    uint8_t* dv = v_cache_.data() + l * layer_kv + offset;
    uint8_t* hk = static_cast<uint8_t*>(h.k) + offset;
    uint8_t* hv = static_cast<uint8_t*>(h.v) + offset;
    if (cpu_route) {
      CLLM_CUDA_CHECK(cudaMemcpyAsync(hk, dk, bytes, cudaMemcpyDeviceToHost, compute_));
      CLLM_CUDA_CHECK(cudaMemcpyAsync(hv, dv, bytes, cudaMemcpyDeviceToHost, compute_));
    } else {
      CLLM_CUDA_CHECK(cudaMemcpyAsync(dk, hk, bytes, cudaMemcpyHostToDevice, compute_));
      CLLM_CUDA_CHECK(cudaMemcpyAsync(dv, hv, bytes, cudaMemcpyHostToDevice, compute_));
    }
  }
  upto = pos;
}

}  // namespace

std::unique_ptr<GpuEngine> GpuEngine::open(const CllmFile& file, const GpuOptions& opt) {
  return std::make_unique<CudaEngine>(file, opt);
}

}  // namespace cllm
