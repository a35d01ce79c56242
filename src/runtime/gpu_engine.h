// The GPU engine: a Llama forward pass on a CUDA device whose weights stay compressed
// (docs/architecture.md "GPU runtime"). Declared in every build; without CUDA, open() throws
// "no CUDA device (...): use --device cpu". Its rooms, along the data flow:
//
//   file -> weight schedule (weight_schedule.h) -> plan (engine_plan.h)
//        -> weights (gpu_weights.h: decoded, resident, streamed through the ring, CPU layers
//           via gpu_cpu_layers.h) -> forward pass (gpu_forward.h) -> logits
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "format/cllm_reader.h"
#include "model/batch.h"
#include "model/llama_config.h"
#include "runtime/engine_plan.h"
#include "runtime/gpu_stats.h"
#include "runtime/memory_plan.h"

namespace cllm {

struct GpuOptions {
  std::optional<Mode> mode;   // full, resident, lowmem or fused; none: the fastest that fits (choose_mode)
  int context = 0;            // KV cache positions of one sequence; 0 = min(model context, 4096)
  int sequences = 1;          // KV cache regions of `context` positions each (model/batch.h); more
                              // than 1 is refused with CPU layers in the plan (a hybrid budget's)
  int max_batch = 512;        // tokens per batch in prompt processing (llama.cpp's ubatch)
  int threads = 1;            // host threads for loading and the CPU layers
  uint64_t vram_limit = 0;    // treat at most this many bytes as free (0: what the device has free)
  uint64_t vram_budget = 0;   // bytes: plan each layer's placement for this much VRAM, capped at
                              // what is free (UINT64_MAX: all of it); 0: none. Takes no mode.
  // Given placements instead of a plan (tests, experiments): one per weight step, cpu only on
  // layers; cpu_max_batch >= 0 then sets the largest batch the CPU layers compute (-1: from
  // the calibration).
  Placements placements;
  int cpu_max_batch = -1;
  int ring_slots = 2;  // with given placements: the ring's layer slots (1 or 2)
  int device = 0;
};

class GpuEngine {
 public:
  // Plans the memory, picks the mode, allocates, loads the weights. Throws with the needed
  // and available VRAM (and the mode that would fit) when the mode does not fit.
  static std::unique_ptr<GpuEngine> open(const CllmFile& file, const GpuOptions& opt);
  virtual ~GpuEngine() = default;

  // As CpuForward::forward: tokens[0..n) at positions pos.., the last token's logits
  // (vocab floats), or every token's (n, vocab) with all_logits; valid until the next call.
  virtual const float* forward(const int* tokens, int n, int pos, bool all_logits = false) = 0;

  // model/batch.h's BatchForwardFn: the segments of several sequences in one pass, (n_segs,
  // vocab) logits, valid until the next call. Throws (check_batch) before touching a cache.
  virtual const float* forward_batch(const int* tokens, const BatchSegment* segs, int n_segs) = 0;

  virtual const LlamaConfig& config() const = 0;
  virtual int context() const = 0;         // positions per sequence
  virtual int sequences() const = 0;       // KV cache regions
  virtual int batch_capacity() const = 0;  // most tokens one forward_batch may hold
  virtual Mode mode() const = 0;
  virtual bool mode_was_chosen() const = 0;      // by auto
  virtual const MemoryPlan& memory() const = 0;  // the plan it allocated
  virtual const Placements& placements() const = 0;  // per weight step
  virtual std::string device_name() const = 0;   // "NVIDIA H100 80GB HBM3"
  virtual double load_ms() const = 0;
  virtual bool pinned() const = 0;               // lowmem: the host store is pinned
  virtual int cpu_max_batch() const = 0;         // batches up to this size compute the cpu steps on the CPU
  // With a --vram-budget plan: the calibration and the planner's estimate, for the user
  // ("measured: PCIe 55.1 GB/s, ...; estimated 11.8 tok/s, bound by compute"); else "".
  virtual std::string plan_summary() const = 0;
  virtual const GpuStats& stats() const = 0;
  virtual void reset_stats() = 0;
};

}  // namespace cllm
