#include "runtime/memory_plan.h"

#include <algorithm>
#include <cstdio>

#include "common/error.h"

namespace cllm {

namespace {
constexpr uint64_t kAlign = 256;
uint64_t align_up(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }
}  // namespace

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::full: return "full";
    case Mode::resident: return "resident";
    case Mode::lowmem: return "lowmem";
  }
  return "?";
}

Mode parse_mode(const std::string& s) {
  for (Mode m : {Mode::full, Mode::resident, Mode::lowmem})
    if (s == mode_name(m)) return m;
  fail("unknown mode '", s, "' (expected full, resident, lowmem or auto)");
}

ActivationSizes activation_sizes(const LlamaConfig& c, DType act, int batch) {
  const uint64_t B = batch, a = dtype_size(act);
  ActivationSizes s;
  s.batch = batch;
  s.x = align_up(B * c.dim * 4);
  s.xn = align_up(B * std::max(c.dim, c.q_dim()) * a);
  s.q = align_up(B * c.q_dim() * 4);
  s.kv = align_up(B * c.kv_dim() * 4);
  s.ffn = align_up(B * c.ffn_dim * 4);
  s.h = align_up(B * c.ffn_dim * a);
  s.logits = align_up(static_cast<uint64_t>(c.vocab_size) * 4);
  s.tokens = align_up(std::max<uint64_t>(B * 4, B * c.dim * a));
  return s;
}

DType kv_cache_dtype(DType linear_dtype) { return linear_dtype == DType::F32 ? DType::F32 : DType::F16; }

std::string format_gib(uint64_t bytes) {
  char buf[64];
  if (bytes >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1ull << 30));
  else std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / double(1ull << 20));
  return buf;
}

std::string MemoryPlan::describe() const {
  std::string out = cat("weights ", format_gib(weights));
  if (slots) out += cat(" + slots ", format_gib(slots));
  if (staging) out += cat(" + staging ", format_gib(staging));
  out += cat(" + KV cache ", format_gib(kv_cache), " + activations ", format_gib(activations), " + cuBLAS ",
             format_gib(workspace), " = ", format_gib(total()));
  return out;
}

MemoryPlan plan_memory(const WeightSchedule& s, const LlamaConfig& c, Mode m, int context, int batch) {
  MemoryPlan p;
  p.mode = m;
  const uint64_t norm = align_up(s.output_norm->raw_bytes());
  switch (m) {
    case Mode::full: p.weights = s.decoded_bytes; break;
    case Mode::resident:
      p.weights = s.store_bytes + norm;
      p.slots = 2 * align_up(s.slot_bytes);
      break;
    case Mode::lowmem:
      p.weights = norm;
      p.slots = 2 * align_up(s.slot_bytes);
      p.staging = 2 * align_up(s.max_src_bytes);
      p.host_pinned = s.store_bytes;
      break;
  }
  const DType kv = kv_cache_dtype(s.linear_dtype);
  p.kv_cache = 2 * align_up(static_cast<uint64_t>(c.n_layers) * context * c.kv_dim() * dtype_size(kv));
  const uint64_t rope = 2 * align_up(static_cast<uint64_t>(context) * (c.head_dim / 2) * 4);
  p.activations = activation_sizes(c, s.linear_dtype, batch).total() + rope;
  return p;
}

Mode choose_mode(const WeightSchedule& s, const LlamaConfig& c, int context, int batch, uint64_t available) {
  for (Mode m : {Mode::full, Mode::resident, Mode::lowmem})
    if (plan_memory(s, c, m, context, batch).total() <= available) return m;
  fail(out_of_vram_message(s, c, Mode::lowmem, context, batch, available));
}

std::string out_of_vram_message(const WeightSchedule& s, const LlamaConfig& c, Mode m, int context, int batch,
                                uint64_t available) {
  const MemoryPlan need = plan_memory(s, c, m, context, batch);
  std::string msg = cat("out of VRAM: --mode ", mode_name(m), " needs ", format_gib(need.total()), " (",
                        need.describe(), "), ", format_gib(available), " available");
  for (Mode other : {Mode::full, Mode::resident, Mode::lowmem}) {
    const uint64_t t = plan_memory(s, c, other, context, batch).total();
    if (other != m && t <= available) return msg + cat("; --mode ", mode_name(other), " (", format_gib(t), ") would fit");
  }
  return msg + cat("; no mode fits: try a smaller context (-c) than ", context);
}

}  // namespace cllm
