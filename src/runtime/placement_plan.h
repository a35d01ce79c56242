// The hybrid planner (issue 8): for a VRAM budget, where each layer lives and runs, from the
// machine's measured path speeds (path_speeds.h).
//
// A forward pass is two chains of work that overlap: the compute chain and the PCIe chain
// (streamed steps' compressed bytes, copied up to two steps ahead while the compute runs).
// On the compute chain, the GPU's layer kernels and the decoder add up: they share its memory
// bandwidth (a mix of decoded and resident steps took about the sum of their times; the
// measurements are in docs/architecture.md, "The planner"). A CPU run and the GPU do not
// overlap either, except that the decoder fills the free ring slots while the CPU computes:
// the decodes of the `ring_slots` ring steps after a run hide under it. So a pass takes about
//
//   max(compute, PCIe)
//   compute = sum(cpu runs: hand-over + cpu_ms(bytes, n)) + sum(GPU steps: bytes / gpu_gbs)
//             + sum(ring steps: bytes / decoder) - the decodes hidden under CPU runs
//   PCIe    = sum(streamed: compressed bytes / pcie), at PCIe's rate beside the CPU layers
//             when there are any (both read host memory)
//
// The planner tries every count of decoded, resident, fused, CPU and streamed layers (and the
// classifier decoded, resident, streamed or fused), with a ring of two layer slots or one,
// that fits the budget, and keeps the one with the shortest one-token pass. (One slot frees a layer's
// VRAM for a resident layer; it costs nothing where CPU layers separate the ring's steps,
// since the next step decodes while the CPU computes.) CPU and streamed layers are interleaved so that PCIe copies the
// next streamed layer while the CPU computes. Prompt batches larger than cpu_max_batch route
// the CPU layers through the ring instead (streamed), where the GPU's GEMMs win.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/memory_plan.h"
#include "runtime/path_speeds.h"

namespace cllm {

// A fused step's kernels against a decoded one's, per decoded byte: fused mode's tg128 over full
// mode's on the 8B (177.59 / 190.92 on the H200, docs/benchmarks.md "Fused steps in hybrid
// plans"; 0.96-0.98 on the H100). The path speeds measure no fused product; the planner takes
// the lower ratio for every card.
inline constexpr double kFusedSpeed = 0.93;

struct PassEstimate {
  double compute_ms = 0;  // the compute chain: CPU runs, GPU kernels, decodes not hidden
  double cpu_ms = 0;      // its CPU runs (with their hand-overs)
  double gpu_ms = 0;      // the GPU kernels (all of them on the chain)
  double decode_ms = 0;   // every decode (some hidden under CPU runs)
  double pcie_ms = 0;     // the PCIe chain
  double total_ms() const;
  const char* bound() const;  // "PCIe", else "CPU" or "GPU": whichever has most of the compute chain
};

// The estimate of one pass of n tokens. cpu_route: the cpu steps run on the CPU (else streamed).
// ring_slots: how many ring steps after a CPU run decode while it runs.
PassEstimate estimate_pass(const WeightSchedule& s, const Placements& p, const PathSpeeds& speeds, int n,
                           bool cpu_route, int ring_slots = 2);

struct PlacementPlan {
  Placements placements;
  int cpu_max_batch = 0;  // batches of up to this many tokens compute the cpu steps on the CPU
  int ring_slots = 2;     // the ring's layer slots (plan_memory)
  PassEstimate token;     // estimated one-token pass
};

// The fastest placements for one token that fit `budget` bytes of VRAM and keep the CPU
// layers' decoded weights and KV cache within host_ram bytes (0: no limit). Throws when no
// plan fits: naming the smallest plan's need (every layer on the CPU) and the context.
PlacementPlan plan_placements(const WeightSchedule& s, const LlamaConfig& c, int context, int batch, uint64_t budget,
                              const PathSpeeds& speeds, uint64_t host_ram);

// The largest batch (up to 64) for which computing p's cpu steps on the CPU beats streaming
// them; 0 when there are none or streaming always wins.
int cpu_max_batch(const WeightSchedule& s, const Placements& p, const PathSpeeds& speeds, int ring_slots = 2);

// count[k] steps of placement k (Placement's order) spread evenly over n layers (every
// placement's steps as far apart as they can be), e.g. 2 cpu + 2 streamed -> cpu, streamed,
// cpu, streamed.
inline constexpr int kPlacements = 5;
Placements interleave_layers(const int (&count)[kPlacements]);

}  // namespace cllm
