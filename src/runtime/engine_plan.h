// The GPU engine's plan: from what the user asked (a mode, a VRAM budget, or given
// placements), the model's weight schedule, the free VRAM and this machine's measured path
// speeds, where each weight step lives, how many ring slots there are, which batches compute
// the CPU layers on the CPU, and the memory all that needs. A pure function: no CUDA, no
// allocation, so every rule is tested without a GPU. The engine then allocates exactly
// `memory` (memory_plan.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "runtime/memory_plan.h"
#include "runtime/path_speeds.h"
#include "runtime/weight_schedule.h"

namespace cllm {

// What the user asked for: a mode, auto (the fastest mode that fits), a VRAM budget for
// the hybrid planner (then no mode), or placements given outright.
struct EngineRequest {
  std::optional<Mode> mode;  // full, resident, lowmem or fused; none: auto (choose_mode)
  uint64_t vram_budget = 0;  // bytes; 0: none
  // Given placements (tests, experiments): one per weight step, cpu only on layers;
  // cpu_max_batch >= 0 then sets the largest batch the CPU layers compute (-1: 1).
  Placements placements;
  int cpu_max_batch = -1;
  int ring_slots = 2;
};

struct EnginePlan {
  Placements placements;   // one per weight step
  Mode mode = Mode::full;  // what the placements amount to
  bool chosen = false;     // by auto or the budget planner, not named by the user
  int ring_slots = 2;
  int cpu_max_batch = 0;   // batches of up to this many tokens compute the cpu steps on the CPU
  MemoryPlan memory;       // what the engine allocates
  std::string summary;     // budget plans: the speeds and the estimate, for the user; else ""
};

// The machine the plan is for. speeds is read only for a VRAM budget (then it must be valid);
// speeds_cached only words the summary.
struct EngineMachine {
  uint64_t available = 0;  // free VRAM less a margin, bytes
  uint64_t host_ram = 0;   // host RAM available for the CPU layers (0: no limit)
  PathSpeeds speeds;
  bool speeds_cached = false;
};

// Throws with the needed and available VRAM (and the mode that would fit) when nothing
// asked for fits.
EnginePlan plan_engine(const WeightSchedule& s, const LlamaConfig& c, const EngineRequest& r, int context, int batch,
                       const EngineMachine& m);

}  // namespace cllm
