#include "runtime/placement_plan.h"

#include <algorithm>

#include "common/error.h"

namespace cllm {

double PassEstimate::total_ms() const { return std::max(compute_ms, pcie_ms); }

const char* PassEstimate::bound() const {
  if (pcie_ms >= compute_ms) return "PCIe";
  return cpu_ms > compute_ms - cpu_ms ? "CPU" : "GPU";
}

PassEstimate estimate_pass(const WeightSchedule& s, const Placements& pl, const PathSpeeds& v, int n, bool cpu_route,
                           int ring_slots) {
  CLLM_CHECK(v.valid(), "estimate_pass: path speeds not measured");
  const auto ms = [](double bytes, double gbs) { return bytes / (gbs * 1e6); };
  PassEstimate e;
  const auto route = [&](size_t i) { return pl[i] == Placement::cpu && !cpu_route ? Placement::streamed : pl[i]; };
  // Copies slow down while CPU layers read host memory too.
  const bool cpu_busy = cpu_route && std::find(pl.begin(), pl.end(), Placement::cpu) != pl.end();
  const double pcie_gbs = cpu_busy ? v.pcie_with_cpu_gbs() : v.pcie_gbs;
  double run_ms = 0;   // the current run of CPU layers, so far
  double hide_ms = 0;  // CPU time left to hide decodes under, after a run
  int hide_steps = 0;  // ring steps whose decode may still hide there (one per free slot)
  for (size_t i = 0; i < pl.size(); ++i) {
    const WeightStep& step = i < s.layers.size() ? s.layers[i] : s.classifier[i - s.layers.size()];
    const double D = static_cast<double>(step.slot_bytes), C = static_cast<double>(step.src_bytes);
    const Placement p = route(i);
    if (p == Placement::cpu) {
      if (run_ms == 0) run_ms = v.handover_ms;  // one hand-over per run of CPU layers
      run_ms += v.cpu_ms(D, n);
      continue;
    }
    if (run_ms > 0) {  // a run just ended: the next ring steps decoded while it ran
      e.cpu_ms += run_ms;
      hide_ms = run_ms, hide_steps = ring_slots, run_ms = 0;
    }
    const double kernels = ms(D, p == Placement::fused ? v.gpu_gbs * kFusedSpeed : v.gpu_gbs);
    e.gpu_ms += kernels;
    double on_gpu = kernels;
    if (in_ring(p)) {
      const double decode = ms(D, v.decode_gbs);
      e.decode_ms += decode;
      double hidden = 0;
      if (hide_steps > 0) {
        hidden = std::min(decode, hide_ms);
        --hide_steps, hide_ms -= hidden;
      }
      on_gpu += decode - hidden;
    }
    e.compute_ms += on_gpu;
    if (p == Placement::streamed) e.pcie_ms += ms(C, pcie_gbs);
  }
  e.cpu_ms += run_ms;
  e.compute_ms += e.cpu_ms;
  return e;
}

Placements interleave_layers(const int (&count)[4]) {
  const int n = count[0] + count[1] + count[2] + count[3];
  Placements out;
  int used[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; ++i) {
    // The placement furthest behind its even share of the first i + 1 layers goes next.
    int pick = -1;
    double most = -1e30;
    for (int k = 0; k < 4; ++k) {
      if (used[k] == count[k]) continue;
      const double behind = static_cast<double>(count[k]) * (i + 1) / n - used[k];
      if (behind > most + 1e-12) most = behind, pick = k;
    }
    ++used[pick];
    out.push_back(static_cast<Placement>(pick));
  }
  return out;
}

int cpu_max_batch(const WeightSchedule& s, const Placements& p, const PathSpeeds& v, int ring_slots) {
  if (std::find(p.begin(), p.end(), Placement::cpu) == p.end()) return 0;
  int best = 0;
  for (int n = 1; n <= 64; ++n) {
    if (estimate_pass(s, p, v, n, true, ring_slots).total_ms() >= estimate_pass(s, p, v, n, false, ring_slots).total_ms())
      break;
    best = n;
  }
  return best;
}

PlacementPlan plan_placements(const WeightSchedule& s, const LlamaConfig& c, int context, int batch, uint64_t budget,
                              const PathSpeeds& speeds, uint64_t host_ram) {
  const int L = static_cast<int>(s.layers.size());
  const size_t K = s.classifier.size();
  PlacementPlan best;
  double best_ms = 1e300;
  uint64_t best_vram = 0;
  int best_cpu = 0;
  for (int slots : {2, 1})
    for (Placement classifier : {Placement::decoded, Placement::resident, Placement::streamed})
      for (int nd = 0; nd <= L; ++nd)
        for (int nr = 0; nd + nr <= L; ++nr)
          for (int nc = 0; nd + nr + nc <= L; ++nc) {
            const int count[4] = {nd, nr, L - nd - nr - nc, nc};
            Placements p = interleave_layers(count);
            p.insert(p.end(), K, classifier);
            const MemoryPlan m = plan_memory(s, c, p, context, batch, slots);
            if (m.total() > budget) continue;
            if (host_ram && m.host_decoded + m.host_pinned + m.host_kv > host_ram) continue;
            const double t = estimate_pass(s, p, speeds, 1, true, slots).total_ms();
            // Faster wins; at equal speed (within 0.5%), fewer CPU layers, then less VRAM.
            const bool same = t > best_ms * 0.995 && t < best_ms * 1.005;
            if ((!same && t < best_ms) || (same && (nc < best_cpu || (nc == best_cpu && m.total() < best_vram)))) {
              best.placements = std::move(p);
              best.ring_slots = slots;
              best_ms = std::min(best_ms, t);
              best_vram = m.total();
              best_cpu = nc;
            }
          }
  // Fused mode, every step in the fused layout (it mixes with no other placement yet), where it
  // fits and beats the mixed plans: below full mode's VRAM those keep some steps in the ring.
  // (Only for a schedule of a file: the fused layout's sizes come from its tensors.)
  // Two slots for prompts where they fit, else one (fused_slots).
  const Placements fused = uniform_placements(s, Mode::fused);
  const int slots = s.token_embd ? fused_slots(s, c, context, batch, budget) : 2;
  const MemoryPlan fm = s.token_embd ? plan_memory(s, c, fused, context, batch, slots) : MemoryPlan{};
  if (fm.fused > 0 && fm.total() <= budget && (!host_ram || fm.host_pinned <= host_ram)) {
    const double t = estimate_pass(s, fused, speeds, 1, true).total_ms();
    if (t < best_ms) best.placements = fused, best.ring_slots = slots, best_ms = t;
  }
  if (best.placements.empty()) {
    // The least VRAM any plan needs: every layer on the CPU (its KV cache in host RAM), the
    // classifier streamed, one ring slot.
    Placements least(L, Placement::cpu);
    least.insert(least.end(), K, Placement::streamed);
    const MemoryPlan m = plan_memory(s, c, least, context, batch, 1);
    if (m.total() > budget)
      fail_with({Remedy::smaller_context, std::to_string(context)},
                "out of VRAM: the smallest plan (every layer on the CPU, the classifier streamed) needs ", m.describe(),
                ", the budget is ", format_gib(budget));
    fail("out of host RAM: the plans that fit ", format_gib(budget), " of VRAM need more than the ",
         format_gib(host_ram), " of host RAM available (", format_gib(m.host_pinned + m.host_decoded + m.host_kv),
         " with every layer on the CPU)");
  }
  best.cpu_max_batch = cpu_max_batch(s, best.placements, speeds, best.ring_slots);
  best.token = estimate_pass(s, best.placements, speeds, 1, true, best.ring_slots);
  return best;
}

}  // namespace cllm
