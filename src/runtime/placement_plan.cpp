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
    const WeightStep& step = s.step(i);
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

Placements interleave_layers(const int (&count)[kPlacements]) {
  int n = 0;
  for (int k = 0; k < kPlacements; ++k) n += count[k];
  Placements out;
  int used[kPlacements] = {};
  for (int i = 0; i < n; ++i) {
    // The placement furthest behind its even share of the first i + 1 layers goes next.
    int pick = -1;
    double most = -1e30;
    for (int k = 0; k < kPlacements; ++k) {
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
  // Fused steps where the layers have bf16 matrices (fused_bytes: a schedule of a bf16 file).
  const bool fusable = s.token_embd && std::all_of(s.layers.begin(), s.layers.end(), [](const WeightStep& w) {
    return w.fused_bytes > 0;
  });
  std::vector<Placement> classifiers = {Placement::decoded, Placement::resident, Placement::streamed};
  if (fusable) classifiers.push_back(Placement::fused);
  PlacementPlan best;
  double best_ms = 1e300;
  uint64_t best_vram = 0;
  int best_cpu = 0;
  const auto placements_of = [&](const int (&count)[kPlacements], Placement classifier) {
    Placements p = interleave_layers(count);
    p.insert(p.end(), K, classifier);
    return p;
  };
  const auto consider = [&](const Placements& p, const MemoryPlan& m, int slots, int nc) {
    const double t = estimate_pass(s, p, speeds, 1, true, slots).total_ms();
    // Faster wins; at equal speed (within 0.5%): fewer CPU layers, then two ring slots (prompts
    // decode the next step while this one computes), then less VRAM.
    const bool same = t > best_ms * 0.995 && t < best_ms * 1.005;
    const bool better_tie = nc != best_cpu ? nc < best_cpu
                            : slots != best.ring_slots ? slots > best.ring_slots
                                                       : m.total() < best_vram;
    if ((!same && t < best_ms) || (same && better_tie)) {
      best.placements = p;
      best.ring_slots = slots;
      best_ms = std::min(best_ms, t);
      best_vram = m.total();
      best_cpu = nc;
    }
  };
  // The search. Of the GPU placements (decoded, fused, resident: each smaller and slower than
  // the one before), a plan mixes at most two, a and b: the layers are alike, so under a VRAM
  // limit the fastest mix takes the two on either side of it. For each count of CPU layers and
  // of a, it takes as many b as fit: a GPU layer in place of a streamed one is never slower. The
  // rest are streamed. (The most b that fit only shrinks as a grows: O(L^2) plans per pair.)
  using P = Placement;
  const std::pair<P, P> pairs[] = {{P::decoded, P::fused}, {P::fused, P::resident}, {P::decoded, P::resident}};
  for (int slots : {2, 1})
    for (P classifier : classifiers)
      for (const auto& [a, b] : pairs) {
        if (!fusable && (a == P::fused || b == P::fused)) continue;
        for (int nc = 0; nc <= L; ++nc)
          for (int na = 0, nb = L - nc; na + nc <= L; ++na) {
            nb = std::min(nb, L - nc - na);
            Placements p;
            MemoryPlan m;
            for (; nb >= 0; --nb) {
              int count[kPlacements] = {};
              count[static_cast<int>(a)] = na, count[static_cast<int>(b)] = nb;
              count[static_cast<int>(P::cpu)] = nc, count[static_cast<int>(P::streamed)] = L - na - nb - nc;
              p = placements_of(count, classifier);
              m = plan_memory(s, c, p, context, batch, slots);
              if (m.total() <= budget) break;
            }
            if (nb < 0) break;  // not even na of a fit
            if (host_ram && m.host_decoded + m.host_pinned + m.host_kv > host_ram) continue;
            consider(p, m, slots, nc);
          }
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
