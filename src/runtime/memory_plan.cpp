#include "runtime/memory_plan.h"

#include <algorithm>

#include "common/error.h"
#include "cuda/attention_sizes.h"

namespace cllm {

namespace {
constexpr uint64_t kAlign = 256;
uint64_t align_up(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }
// A fused step: its fused layout as planned and its other tensors (weight_schedule.h), or the
// whole step decoded where it has no bf16 matrix.
void add_fused_step(const WeightStep& step, MemoryPlan& p) {
  p.weights += step.fused_bytes ? step.fused_bytes + step.fused_rest_bytes : align_up(step.slot_bytes);
  p.fused += step.fused_bytes;
}

// Fused mode: output_norm, every step fused, and the slots that prompts decode the steps
// into: two, one ahead of the other, or one where two do not fit (the load decodes the
// container's tiles into the first). token_embd stays decoded in pinned host RAM: a pass
// reads one row a token (a GPU kernel gathers them over PCIe, so the one-token pass is still
// a CUDA graph), not worth its GiB of VRAM (llama.cpp keeps it on the host too).
void plan_fused(const WeightSchedule& s, MemoryPlan& p, int slots) {
  p.weights = align_up(s.output_norm->raw_bytes());
  p.host_pinned = align_up(s.token_embd->raw_bytes());
  for (const auto* steps : {&s.layers, &s.classifier})
    for (const WeightStep& step : *steps) add_fused_step(step, p);
  p.slots = slots * align_up(s.slot_bytes);
}
}  // namespace

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::full: return "full";
    case Mode::resident: return "resident";
    case Mode::lowmem: return "lowmem";
    case Mode::hybrid: return "hybrid";
    case Mode::fused: return "fused";
  }
  return "?";
}

ActivationSizes activation_sizes(const LlamaConfig& c, DType act, int batch) {
  const uint64_t B = batch, a = dtype_size(act);
  ActivationSizes s;
  s.batch = batch;
  s.x = align_up(B * c.dim * 4);
  s.xn = align_up(B * std::max(c.dim, c.q_dim()) * a);
  s.q = align_up(B * c.q_dim() * 4);
  s.kv = align_up(B * c.kv_dim() * 4);
  s.ffn = align_up(B * std::max(c.ffn_dim, c.dim) * 4);  // gate and up; the gate also (B, dim) scratch (Gemma's post norms)
  s.h = align_up(B * c.ffn_dim * a);
  s.logits = align_up(static_cast<uint64_t>(c.vocab_size) * 4);
  s.tokens = align_up(std::max<uint64_t>(B * 4, B * c.dim * a));
  return s;
}

DType kv_cache_dtype(DType linear_dtype) { return linear_dtype == DType::F32 ? DType::F32 : DType::F16; }

uint64_t attention_workspace(const LlamaConfig& c, int context) {
  return align_up(cuda::attention_workspace_bytes(c.n_heads, c.head_dim, context));
}

uint64_t kv_layer_bytes(const LlamaConfig& c, DType linear_dtype, int context) {
  return static_cast<uint64_t>(context) * c.kv_dim() * dtype_size(kv_cache_dtype(linear_dtype));
}

std::string MemoryPlan::describe() const {
  std::string out = cat("weights ", format_gib(weights));
  if (fused) out += cat(" (", format_gib(fused), " in the fused layout)");
  if (slots) out += cat(" + slots ", format_gib(slots));
  if (staging) out += cat(" + staging ", format_gib(staging));
  out += cat(" + KV cache ", format_gib(kv_cache));
  if (host_kv) out += cat(" (", kv_layers - 1, " layers, and one for the CPU layers' prompts)");
  out += cat(" + activations ", format_gib(activations), " + cuBLAS ",
             format_gib(workspace), " = ", format_gib(total()));
  if (host_decoded) out += cat("; host RAM: ", format_gib(host_pinned), " pinned + ", format_gib(host_decoded),
                               " decoded and ", format_gib(host_kv), " of KV cache for the CPU layers");
  else if (mode == Mode::fused && host_pinned) out += cat("; host RAM: token_embd ", format_gib(host_pinned), " pinned");
  return out;
}

Placements uniform_placements(const WeightSchedule& s, Mode m) {
  CLLM_CHECK(m != Mode::hybrid, "hybrid placements come from a VRAM budget");
  const Placement p = m == Mode::full       ? Placement::decoded
                      : m == Mode::resident ? Placement::resident
                      : m == Mode::fused    ? Placement::fused
                                            : Placement::streamed;
  return Placements(s.layers.size() + s.classifier.size(), p);
}

Mode mode_of(const Placements& p) {
  const auto all = [&](Placement x) { return std::all_of(p.begin(), p.end(), [x](Placement y) { return y == x; }); };
  if (all(Placement::decoded)) return Mode::full;
  if (all(Placement::resident)) return Mode::resident;
  if (all(Placement::streamed)) return Mode::lowmem;
  if (all(Placement::fused)) return Mode::fused;
  return Mode::hybrid;
}

std::string describe_placements(const Placements& p) {
  int n[5] = {0, 0, 0, 0, 0};
  for (Placement x : p) ++n[static_cast<int>(x)];
  std::string out = cat(n[0], " decoded, ", n[1], " resident, ", n[2], " streamed");
  if (n[3]) out += cat(", ", n[3], " CPU");
  if (n[4]) out += cat(", ", n[4], " fused");
  return out;
}

MemoryPlan plan_memory(const WeightSchedule& s, const LlamaConfig& c, const Placements& pl, int context, int batch,
                       int ring_slots) {
  CLLM_CHECK(pl.size() == s.layers.size() + s.classifier.size(), "placements for ", pl.size(), " steps, the schedule has ",
             s.layers.size() + s.classifier.size());
  CLLM_CHECK(ring_slots == 1 || ring_slots == 2, "the ring has 1 or 2 slots, not ", ring_slots);
  MemoryPlan p;
  p.mode = mode_of(pl);
  if (p.mode == Mode::full) {
    p.weights = s.decoded_bytes;  // the global group too: embeddings are gathered on the GPU
  } else if (p.mode == Mode::fused) {
    plan_fused(s, p, ring_slots);
  } else {
    // Embedding rows come from the host; each step by its placement.
    p.weights = align_up(s.output_norm->raw_bytes());
    uint64_t slot = 0, staging = 0;
    for (size_t i = 0; i < pl.size(); ++i) {
      const WeightStep& step = s.step(i);
      switch (pl[i]) {
        case Placement::fused:  // batches decode it into the ring's slots
          add_fused_step(step, p);
          if (step.fused_bytes) slot = std::max(slot, step.slot_bytes);
          break;
        case Placement::decoded: p.weights += align_up(step.slot_bytes); break;
        case Placement::resident:
          p.weights += align_up(step.src_bytes);
          slot = std::max(slot, step.slot_bytes);
          break;
        case Placement::cpu:
          CLLM_CHECK(step.layer >= 0, "only layers can be computed on the CPU");
          p.host_decoded += align_up(step.slot_bytes);
          [[fallthrough]];
        case Placement::streamed:
          p.host_pinned += align_up(step.src_bytes);
          slot = std::max(slot, step.slot_bytes);
          staging = std::max(staging, step.src_bytes);
          break;
      }
    }
    p.slots = ring_slots * align_up(slot);
    p.staging = staging ? 2 * align_up(staging) : 0;
  }
  // The KV cache, layer by layer: a GPU layer's keys and values live in VRAM; a CPU layer's
  // in host RAM only, and batches that run it on the GPU (prompts) bring its rows up into
  // one shared device layer.
  const int cpu_layers = static_cast<int>(std::count(pl.begin(), pl.end(), Placement::cpu));
  p.kv_layers = c.n_layers - cpu_layers + (cpu_layers > 0 ? 1 : 0);
  const uint64_t layer_kv = kv_layer_bytes(c, s.linear_dtype, context);
  p.kv_cache = 2 * align_up(p.kv_layers * layer_kv);
  p.host_kv = 2 * static_cast<uint64_t>(cpu_layers) * layer_kv;
  const uint64_t rope = 2 * align_up(static_cast<uint64_t>(context) * (c.head_dim / 2) * 4);
  p.activations = activation_sizes(c, s.linear_dtype, batch).total() + rope + attention_workspace(c, context);
  return p;
}

MemoryPlan plan_memory(const WeightSchedule& s, const LlamaConfig& c, Mode m, int context, int batch, int ring_slots) {
  return plan_memory(s, c, uniform_placements(s, m), context, batch, ring_slots);
}

MemoryPlan plan_memory_least(const WeightSchedule& s, const LlamaConfig& c, Mode m, int context, int batch) {
  return plan_memory(s, c, m, context, batch, m == Mode::fused ? 1 : 2);
}

int fused_slots(const WeightSchedule& s, const LlamaConfig& c, int context, int batch, uint64_t available) {
  return plan_memory(s, c, Mode::fused, context, batch, 2).total() <= available ? 2 : 1;
}

Mode choose_mode(const WeightSchedule& s, const LlamaConfig& c, int context, int batch, uint64_t available) {
  for (Mode m : kModesFastestFirst)
    if (plan_memory_least(s, c, m, context, batch).total() <= available) return m;
  throw out_of_vram_error(s, c, Mode::lowmem, context, batch, available);
}

Error out_of_vram_error(const WeightSchedule& s, const LlamaConfig& c, Mode m, int context, int batch,
                        uint64_t available) {
  const MemoryPlan need = plan_memory_least(s, c, m, context, batch);
  const std::string msg = cat("out of VRAM: mode ", mode_name(m), " needs ", format_gib(need.total()), " (",
                              need.describe(), "), ", format_gib(available), " available");
  for (Mode other : kModesFastestFirst) {
    const uint64_t t = plan_memory_least(s, c, other, context, batch).total();
    if (other != m && t <= available)
      return Error(msg + cat("; mode ", mode_name(other), " (", format_gib(t), ") would fit"),
                   {Remedy::mode, mode_name(other)});
  }
  return Error(msg + cat("; no mode fits a context of ", context), {Remedy::smaller_context, std::to_string(context)});
}

}  // namespace cllm
