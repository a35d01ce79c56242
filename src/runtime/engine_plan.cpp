#include "runtime/engine_plan.h"

#include <algorithm>

#include "common/error.h"
#include "runtime/placement_plan.h"

namespace cllm {

namespace {

void plan_given(const WeightSchedule& s, const LlamaConfig& c, const EngineRequest& r, int context, int batch,
                uint64_t available, EnginePlan& p) {
  CLLM_CHECK(r.placements.size() == s.layers.size() + s.classifier.size(), "placements for ", r.placements.size(),
             " steps, the model has ", s.layers.size() + s.classifier.size());
  p.placements = r.placements;
  p.ring_slots = r.ring_slots;
  const MemoryPlan need = plan_memory(s, c, p.placements, context, batch, p.ring_slots);
  if (need.total() > available)
    fail("out of VRAM: the given placements need ", need.describe(), ", ", format_gib(available), " available");
  const bool any_cpu = std::find(p.placements.begin(), p.placements.end(), Placement::cpu) != p.placements.end();
  p.cpu_max_batch = any_cpu ? std::max(0, std::min(r.cpu_max_batch < 0 ? 1 : r.cpu_max_batch, batch)) : 0;
}

void plan_budget(const WeightSchedule& s, const LlamaConfig& c, const EngineRequest& r, int context, int batch,
                 const EngineMachine& m, EnginePlan& p) {
  if (r.mode) fail("a VRAM budget plans where each layer lives: it takes no mode (found ", mode_name(*r.mode), ")");
  CLLM_CHECK(m.speeds.valid(), "a VRAM budget needs the machine's measured path speeds");
  const PlacementPlan plan =
      plan_placements(s, c, context, batch, std::min(r.vram_budget, m.available), m.speeds, m.host_ram);
  p.placements = plan.placements;
  p.ring_slots = plan.ring_slots;
  p.cpu_max_batch = std::min(plan.cpu_max_batch, batch);
  p.chosen = true;
  p.summary = cat(m.speeds_cached ? "path speeds (cached): " : "path speeds (measured): ", m.speeds.describe(),
                  "; estimated ", plan.token.total_ms() > 0 ? 1000.0 / plan.token.total_ms() : 0.0,
                  " tok/s for one token, bound by ", plan.token.bound(), p.ring_slots == 1 ? "; a ring of one slot" : "");
  if (p.cpu_max_batch > 0) p.summary += cat("; CPU layers for batches of up to ", p.cpu_max_batch, " tokens");
}

}  // namespace

EnginePlan plan_engine(const WeightSchedule& s, const LlamaConfig& c, const EngineRequest& r, int context, int batch,
                       const EngineMachine& m) {
  EnginePlan p;
  if (!r.placements.empty()) {
    plan_given(s, c, r, context, batch, m.available, p);
  } else if (r.vram_budget) {
    plan_budget(s, c, r, context, batch, m, p);
  } else if (!r.mode) {
    p.placements = uniform_placements(s, choose_mode(s, c, context, batch, m.available));
    p.chosen = true;
  } else {
    const Mode mode = *r.mode;
    CLLM_CHECK(mode != Mode::hybrid, "hybrid placements come from a VRAM budget, not a mode");
    if (plan_memory_least(s, c, mode, context, batch).total() > m.available)
      throw out_of_vram_error(s, c, mode, context, batch, m.available);
    p.placements = uniform_placements(s, mode);
  }
  p.mode = mode_of(p.placements);
  if (r.placements.empty() && !r.vram_budget && p.mode == Mode::fused) {
    p.ring_slots = fused_slots(s, c, context, batch, m.available);
    if (p.ring_slots == 1)
      p.summary = "fused with one slot for prompts (two do not fit): a prompt's steps are decoded, then computed, in turn";
  }
  p.memory = plan_memory(s, c, p.placements, context, batch, p.ring_slots);
  return p;
}

}  // namespace cllm
