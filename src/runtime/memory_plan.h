// The GPU runtime's memory modes and what each needs in VRAM, computed from the weight
// schedule before anything is allocated: `auto` picks with it, an out-of-memory error quotes
// it, and the engine allocates exactly these buffers (gpu_forward.cpp), so the estimate is
// the allocation.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"

#include "common/units.h"  // format_gib, for the messages of every user of a plan
#include "model/llama_config.h"
#include "runtime/weight_schedule.h"

namespace cllm {

enum class Mode {
  full,      // every layer decoded once at load, in VRAM
  resident,  // compressed weights in VRAM, decoded into two layer slots as the layers run
  lowmem,    // compressed weights in pinned host RAM, copied and decoded into two slots
  hybrid,    // a mix per weight step, planned for a VRAM budget (placement_plan.h)
  fused,     // every step's bf16 matrices in the fused layout in VRAM, products decode in registers
};
const char* mode_name(Mode m);

// Where one weight step (a layer, or a classifier slice) lives and how it reaches a layer.
enum class Placement : uint8_t {
  decoded,   // decoded once at load into its own VRAM buffer
  resident,  // compressed in VRAM, decoded into a ring slot before it runs
  streamed,  // compressed in pinned host RAM, copied over PCIe and decoded into a ring slot
  cpu,       // layers only: computed on the CPU from weights decoded once into host RAM, for
             // batches of up to cpu_max_batch tokens; larger batches stream it like `streamed`
             // (so its compressed bytes are in pinned host RAM too)
  fused,     // its bf16 matrices in the fused layout in VRAM (made at load), its other tensors
             // decoded; one token reads the fused planes, batches decode them into a slot
             // (fused mode's own slots; in a hybrid plan the ring's). Where the step has no
             // bf16 matrix (f32, f16 weights) it is kept decoded, as `decoded`.
};
// One per step, in schedule order (layers, then classifier slices).
using Placements = std::vector<Placement>;
Placements uniform_placements(const WeightSchedule& s, Mode m);  // full, resident, lowmem or fused
// The mode a set of placements amounts to: full, resident, lowmem or fused when uniform, else hybrid.
Mode mode_of(const Placements& p);
// "12 decoded, 3 resident, 20 streamed" (", 9 CPU" when there are CPU layers, ", 4 fused" when fused ones)
std::string describe_placements(const Placements& p);
// A placement whose steps go through the ring for every pass (resident, streamed, and cpu for
// large batches); fused steps go through it for batches only.
inline bool in_ring(Placement p) { return p != Placement::decoded && p != Placement::fused; }
// A placement whose compressed bytes cross PCIe on each pass through the ring.
inline bool on_host(Placement p) { return p == Placement::streamed || p == Placement::cpu; }

// Sizes of the activation buffers for batches of up to `batch` tokens.
struct ActivationSizes {
  int batch = 0;
  uint64_t x = 0;       // (batch, dim) fp32 residual stream
  uint64_t xn = 0;      // (batch, max(dim, q_dim)) act: normed input, attention output
  uint64_t q = 0;       // (batch, q_dim) fp32
  uint64_t kv = 0;      // (batch, kv_dim) fp32, for k and for v each
  uint64_t ffn = 0;     // (batch, ffn) fp32, for gate and for up each
  uint64_t h = 0;       // (batch, ffn) act: SwiGLU output
  uint64_t logits = 0;  // (1, vocab) fp32 (more rows are allocated when all rows are asked for)
  uint64_t tokens = 0;  // (batch) int32 token ids, or gathered embedding rows (batch, dim) act
  uint64_t total() const { return x + xn + q + 2 * kv + 2 * ffn + h + logits + tokens; }
};
ActivationSizes activation_sizes(const LlamaConfig& c, DType act, int batch);

// The KV cache's dtype: f32 for f32 models (the fp32 reference stays close), else f16.
DType kv_cache_dtype(DType linear_dtype);
// The decode attention's split-K partials (cuda/attention_sizes.h), bytes, aligned.
uint64_t attention_workspace(const LlamaConfig& c, int context);
// One layer's keys (or values): (context, kv_dim) in kv_cache_dtype, bytes.
uint64_t kv_layer_bytes(const LlamaConfig& c, DType linear_dtype, int context);

constexpr uint64_t kBlasWorkspaceBytes = 32ull << 20;  // fixed, so cuBLAS is deterministic

struct MemoryPlan {
  Mode mode = Mode::full;
  uint64_t weights = 0;      // full: all groups decoded; resident: compressed store; lowmem: output_norm;
                             // fused: token_embd, output_norm and the fused steps
  uint64_t fused = 0;        // fused: the part of weights in the fused layout (planned with an escape
                             // allowance; the engine puts the loaded size here after load)
  uint64_t slots = 0;        // the ring's layer slots, or fused prompts' slots: two, or one (ring_slots)
  uint64_t staging = 0;      // two staging buffers for compressed bytes (lowmem)
  uint64_t kv_cache = 0;     // (kv_layers, context, kv_dim) keys and values in VRAM
  uint64_t kv_layers = 0;    // the GPU layers, and one shared by the CPU layers' prompt batches
  uint64_t activations = 0;  // ActivationSizes::total() plus RoPE tables and attention's workspace
  uint64_t workspace = kBlasWorkspaceBytes;
  uint64_t host_pinned = 0;  // streamed and cpu steps: the compressed store in pinned host RAM
  uint64_t host_decoded = 0; // cpu steps: their weights decoded in host RAM
  uint64_t host_kv = 0;      // cpu steps: their keys and values, in host RAM only
  uint64_t total() const { return weights + slots + staging + kv_cache + activations + workspace; }
  std::string describe() const;  // "weights 10.71 GiB + slots 0.81 GiB + ... = 12.3 GiB"
};

// ring_slots: layer slots in the ring, 2 (a step decodes while the one before computes) or 1
// (the hybrid planner's choice when CPU layers sit between the ring's steps, which hides the
// decode anyway, and the VRAM of a slot holds more resident layers).
MemoryPlan plan_memory(const WeightSchedule& s, const LlamaConfig& c, const Placements& p, int context, int batch,
                       int ring_slots = 2);
// ring_slots for fused mode: the slots prompts decode the steps into, 2 (the next step decodes
// while this one's GEMMs run) or 1 (the decode and the GEMMs take turns).
MemoryPlan plan_memory(const WeightSchedule& s, const LlamaConfig& c, Mode m, int context, int batch,
                       int ring_slots = 2);
// The least VRAM mode m runs in: fused with one slot, the other modes as plan_memory.
MemoryPlan plan_memory_least(const WeightSchedule& s, const LlamaConfig& c, Mode m, int context, int batch);
// Fused mode's slots in `available` bytes: 2 where they fit, else 1.
int fused_slots(const WeightSchedule& s, const LlamaConfig& c, int context, int batch, uint64_t available);

// The uniform modes from the fastest to the slowest for one token: fused reads 0.76 x full's
// bytes and runs at about full's speed (0.93 x on the H200, 0.96 x on the H100; docs/benchmarks.md),
// far ahead of resident (~0.3 x: it decodes every layer into a slot per token); for f32 and
// f16 models fused is full with token_embd in pinned host RAM.
inline constexpr Mode kModesFastestFirst[] = {Mode::full, Mode::fused, Mode::resident, Mode::lowmem};

// The fastest mode (kModesFastestFirst) whose least plan (plan_memory_least) fits `available` bytes.
// Throws when none fits, giving lowmem's need and what is available.
Mode choose_mode(const WeightSchedule& s, const LlamaConfig& c, int context, int batch, uint64_t available);

// The error when mode m does not fit `available` bytes: the need, what is available, and the
// mode that would fit (Remedy::mode) or, when none does, the context (Remedy::smaller_context).
// "out of VRAM: mode full needs 16.2 GiB (...), 11.0 GiB available; mode lowmem (2.1 GiB) would fit"
Error out_of_vram_error(const WeightSchedule& s, const LlamaConfig& c, Mode m, int context, int batch,
                        uint64_t available);

}  // namespace cllm
