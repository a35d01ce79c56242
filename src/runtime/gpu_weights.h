// Where the GPU engine's weights live and how a layer gets them (CUDA builds only): the
// weight stores behind acquire / release / embed. The forward pass asks for step i's decoded
// weights (a WeightStep's slot layout) and never learns where they came from.
//
//   decoded store (full mode): every group decoded once at load, one VRAM buffer per layer,
//     token_embd and the classifier in the global group's buffer;
//   placed store (resident, lowmem, hybrid): each step by its placement (memory_plan.h):
//     decoded into its own buffer, compressed in VRAM, compressed in pinned host RAM, in the
//     fused layout (gpu_fused_steps.h), or computed on the CPU (its decoded weights handed to
//     GpuCpuLayers); the ring steps decode into the ring's slots (gpu_ring.h), fused ones for
//     batches only; embedding rows are looked up on the host, so token_embd never sits whole
//     in VRAM;
//   fused store (fused mode): each step's bf16 matrices in the fused layout, made on the GPU
//     at load; one token's products read them (fused()), batches get the step decoded into
//     one of two slots of its own by acquire(), the next step ahead in the other.
//
// A new kind of store is one more implementation of GpuWeights.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <memory>

#include "common/thread_pool.h"
#include "cuda/fused_matvec.h"
#include "format/cllm_reader.h"
#include "runtime/gpu_cpu_layers.h"
#include "runtime/gpu_stats.h"
#include "runtime/memory_plan.h"
#include "runtime/weight_schedule.h"

namespace cllm {

// A fused step's weights as one token's products read them: each bf16 matrix in the fused
// layout and every other tensor decoded, by role (null where the step has none); a
// classifier slice's rows in `slice`.
struct FusedStepView {
  std::array<const cuda::FusedWeights*, kLayerTensors> matrix{};
  std::array<const uint8_t*, kLayerTensors> tensor{};
  const cuda::FusedWeights* slice = nullptr;
};

// A step's weights as the layer's kernels take them: the slot layout (weight_schedule.h)
// or, for a fused step at one token, its fused view.
struct StepWeights {
  const WeightStep* step = nullptr;
  const uint8_t* slot = nullptr;
  const FusedStepView* fused = nullptr;
  // Tensor t decoded (null for a fused matrix).
  const void* at(LayerTensor t) const { return fused ? fused->tensor[t] : slot + step->offset[t]; }
  // Tensor t in the fused layout, or null when it is decoded.
  const cuda::FusedWeights* matrix(LayerTensor t) const { return fused ? fused->matrix[t] : nullptr; }
};

class GpuWeights {
 public:
  virtual ~GpuWeights() = default;
  // Step i's decoded weights (layers, then classifier slices, as in the schedule), ready for
  // the next work enqueued on the compute stream; valid for that work until release(i).
  virtual const uint8_t* acquire(size_t i) = 0;
  // The compute work reading step i's weights has been enqueued.
  virtual void release(size_t i) = 0;
  // x (n, dim) fp32 = the token_embd rows of tokens (host ids), on the compute stream;
  // d_rows: a device buffer of at least n ints and n rows of token_embd's dtype.
  virtual void embed(const int* tokens, int n, uint8_t* d_rows, float* x) = 0;
  // True when no weight is rewritten while kernels run (full mode): a pass may then be
  // captured as a CUDA graph, and a product may load its weights before the kernel before it
  // has finished (launch_overlap.cuh).
  virtual bool fixed() const { return false; }
  // fixed() stores: the gather of embed() from token ids already in device memory, for a
  // captured graph.
  virtual void embed_from_device(const int* d_tokens, int n, float* x);
  // After the compute stream has synchronized: the ring's timings since the last call.
  // Throws if the decoder found corrupt data.
  virtual void collect(GpuStats&) {}
  virtual bool pinned() const { return false; }  // the streamed steps' host copy is page-locked
  // Fused steps: what one token's products read (no decode, nothing to release); null for a
  // step that is not fused (then acquire() it).
  virtual const FusedStepView* fused(size_t i) const { return nullptr; }
  // The bytes of VRAM in the fused layout, as loaded (the fused store); 0 for the others.
  virtual uint64_t fused_bytes() const { return 0; }
};

// Loads the weights for placements p (all decoded: the decoded store). CPU layers' decoded
// weights go to cpu. threads: the host's pool for copying the streamed steps' bytes.
std::unique_ptr<GpuWeights> load_gpu_weights(const CllmFile& file, const WeightSchedule& s, const Placements& p,
                                             int ring_slots, int max_batch, cudaStream_t compute, ThreadPool& pool,
                                             GpuCpuLayers& cpu);

// The three stores (gpu_weights_decoded.cpp, gpu_weights_placed.cpp, gpu_weights_fused.cpp).
std::unique_ptr<GpuWeights> load_decoded_weights(const CllmFile& file, const WeightSchedule& s, cudaStream_t compute);
std::unique_ptr<GpuWeights> load_placed_weights(const CllmFile& file, const WeightSchedule& s, const Placements& p,
                                                int ring_slots, int max_batch, cudaStream_t compute, ThreadPool& pool,
                                                GpuCpuLayers& cpu);
std::unique_ptr<GpuWeights> load_fused_weights(const CllmFile& file, const WeightSchedule& s, int slots,
                                               cudaStream_t compute);

}  // namespace cllm
