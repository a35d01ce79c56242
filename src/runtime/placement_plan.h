// The hybrid planner (issue 8): for a VRAM budget, where each layer lives and runs, from the
// machine's measured path speeds (path_speeds.h).
//
// A forward pass is three chains of work that overlap: the compute chain (each layer's GPU
// kernels, and the CPU layers, which the GPU waits for), the decoder chain (resident and
// streamed steps decoded into the ring) and the PCIe chain (streamed steps' compressed bytes,
// copied while the other two run). The decoder and the layers' kernels share the GPU's memory
// bandwidth, so they add up (measured on the H200: 24 decoded + 11 resident steps took 11 ms
// a token, about their sum; overlapped, it would have been 6 ms). A pass takes about as long
// as the longest of:
//
//   compute = gpu + sum(cpu: cpu_ms(bytes, n) + hand-over)
//   GPU     = gpu + sum(resident, streamed: bytes / decoder)
//   PCIe    = sum(streamed: compressed bytes / pcie), at PCIe's rate beside the CPU layers
//             when there are any (both read host memory)
//   where gpu = sum(decoded, resident, streamed: bytes / gpu_gbs)
//
// The planner tries every count of decoded, resident, CPU and streamed layers (and the
// classifier decoded, resident or streamed), with a ring of two layer slots or one, that fits
// the budget, and keeps the one with the shortest one-token pass. (One slot frees a layer's
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

struct PassEstimate {
  double compute_ms = 0;  // the compute chain: GPU kernels, CPU layers, hand-overs
  double gpu_ms = 0;      // the GPU kernels' part of it
  double decode_ms = 0, pcie_ms = 0;
  double total_ms() const;
  const char* bound() const;  // the longest: "compute", "decoder" (GPU kernels + decoder) or "PCIe"
};

// The estimate of one pass of n tokens. cpu_route: the cpu steps run on the CPU (else streamed).
// ring_slots 1: a ring step right after another waits for it to compute before it decodes,
// so its decode joins the compute chain.
PassEstimate estimate_pass(const WeightSchedule& s, const Placements& p, const PathSpeeds& speeds, int n,
                           bool cpu_route, int ring_slots = 2);

struct PlacementPlan {
  Placements placements;
  int cpu_max_batch = 0;  // batches of up to this many tokens compute the cpu steps on the CPU
  int ring_slots = 2;     // the ring's layer slots (plan_memory)
  PassEstimate token;     // estimated one-token pass
};

// The fastest placements for one token that fit `budget` bytes of VRAM and keep the CPU
// layers' decoded weights within host_ram bytes (0: no limit). Throws when even everything
// streamed (lowmem) does not fit the budget.
PlacementPlan plan_placements(const WeightSchedule& s, const LlamaConfig& c, int context, int batch, uint64_t budget,
                              const PathSpeeds& speeds, uint64_t host_ram);

// The largest batch (up to 64) for which computing p's cpu steps on the CPU beats streaming
// them; 0 when there are none or streaming always wins.
int cpu_max_batch(const WeightSchedule& s, const Placements& p, const PathSpeeds& speeds, int ring_slots = 2);

// count[k] steps of placement k spread evenly over n layers (every placement's steps as far
// apart as they can be), e.g. 2 cpu + 2 streamed -> cpu, streamed, cpu, streamed.
Placements interleave_layers(const int (&count)[4]);

}  // namespace cllm
