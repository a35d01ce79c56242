#include "runtime/gpu_cpu_layers.h"

#include <array>
#include <utility>

#include "common/error.h"
#include "common/timer.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace cllm {

GpuCpuLayers::~GpuCpuLayers() {
  for (void* a : registered_) cudaHostUnregister(a);
  if (done_) cudaEventDestroy(done_);
}

void GpuCpuLayers::add_layer(const WeightStep& step, const uint8_t* d_slot) {
  index_.at(step.layer) = static_cast<int>(slots_.size());
  slots_.push_back(allocate_cpu_layer_memory(step.slot_bytes));
  CLLM_CUDA_CHECK(cudaMemcpy(slots_.back().get(), d_slot, step.slot_bytes, cudaMemcpyDeviceToHost));
  weights_.push_back(cpu_layer_weights_in_slot(slots_.back().get(), cpu_slot_layout(step)));
}

void GpuCpuLayers::setup(const LlamaConfig& c, int context, DType kv_dt, int max_batch, int threads) {
  if (empty()) return;
  const int rows = std::max(1, max_batch);
  dim_ = c.dim;
  pool_ = std::make_unique<ThreadPool>(std::max(1, threads));
  CpuLayerOptions o;
  o.context = context;
  o.max_batch = rows;
  layer_ = std::make_unique<CpuLayerForward>(c, o, pool_.get());
  kv_ = std::make_unique<CpuKvCache>(static_cast<int>(slots_.size()), context, c.kv_dim(), kv_dt);
  kv_row_bytes_ = static_cast<size_t>(c.kv_dim()) * dtype_size(kv_dt);
  // Page-locked, so prompt batches move the rows at PCIe's rate (pageable: a sixth of it);
  // where the driver refuses, the copies still work, slower.
  for (int k = 0; k < kv_->n_layers(); ++k)
    for (void* a : {kv_->layer(k).k, kv_->layer(k).v}) {
      if (cudaHostRegister(a, context * kv_row_bytes_, cudaHostRegisterDefault) == cudaSuccess) registered_.push_back(a);
      else cudaGetLastError();
    }
  if (!x_host_.allocate(sizeof(float) * rows * c.dim)) fail("could not allocate pinned host memory for the CPU layers");
  CLLM_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventBlockingSync | cudaEventDisableTiming));
}

void CUDART_CB GpuCpuLayers::run_entry(void* run) {
  const auto* r = static_cast<const Run*>(run);
  r->self->run(*r);
}

void GpuCpuLayers::run(const Run& r) {
  // On CUDA's host-function thread, between the copies down and up: no CUDA calls here.
  if (!error_.empty()) return;
  Timer t;
  try {
    for (int l = r.first; l < r.last; ++l) {
      const int k = index_[l];
      layer_->forward(l, weights_[k], kv_->layer(k), reinterpret_cast<float*>(x_host_.data()), r.n, r.pos);
      ++stats_.cpu_steps;
    }
  } catch (const std::exception& e) {
    error_ = cat("CPU layer: ", e.what());
  }
  stats_.cpu_ms += t.ms();
}

void GpuCpuLayers::enqueue_run(int first, int last, int n, int pos, float* x, cudaStream_t s) {
  const size_t count = static_cast<size_t>(n) * dim_;
  float* x_mapped = reinterpret_cast<float*>(x_host_.device_data());
  cuda::copy_f32(x_mapped, x, count, s);
  runs_.push_back(std::make_unique<Run>(Run{this, first, last, n, pos}));
  CLLM_CUDA_CHECK(cudaLaunchHostFunc(s, run_entry, runs_.back().get()));
  cuda::copy_f32(x, x_mapped, count, s);
}

void GpuCpuLayers::kv_up(int layer, int pos, const DeviceKvLayer& dev, cudaStream_t s) {
  if (pos == 0) return;
  const CpuKvLayer h = kv_->layer(index_[layer]);
  const size_t bytes = pos * kv_row_bytes_;
  CLLM_CUDA_CHECK(cudaMemcpyAsync(dev.k, h.k, bytes, cudaMemcpyHostToDevice, s));
  CLLM_CUDA_CHECK(cudaMemcpyAsync(dev.v, h.v, bytes, cudaMemcpyHostToDevice, s));
}

void GpuCpuLayers::kv_down(int layer, int pos, int n, const DeviceKvLayer& dev, cudaStream_t s) {
  const CpuKvLayer h = kv_->layer(index_[layer]);
  const size_t offset = pos * kv_row_bytes_, bytes = n * kv_row_bytes_;
  CLLM_CUDA_CHECK(cudaMemcpyAsync(static_cast<uint8_t*>(h.k) + offset, dev.k + offset, bytes, cudaMemcpyDeviceToHost, s));
  CLLM_CUDA_CHECK(cudaMemcpyAsync(static_cast<uint8_t*>(h.v) + offset, dev.v + offset, bytes, cudaMemcpyDeviceToHost, s));
}

void GpuCpuLayers::finish(bool cpu_route, cudaStream_t s) {
  if (cpu_route && !empty()) {
    CLLM_CUDA_CHECK(cudaEventRecord(done_, s));
    CLLM_CUDA_CHECK(cudaEventSynchronize(done_));
  } else {
    CLLM_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  runs_.clear();
  if (!error_.empty()) fail(std::exchange(error_, std::string()));
}

}  // namespace cllm
