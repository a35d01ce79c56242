// How fast this machine moves a layer's weights along each path the hybrid runtime can use
// (issue 8): over PCIe compressed, through the GPU decoder, through HBM in the layer kernels,
// and through the CPU's memory in the CPU layer. Measured once at load by a short
// calibration (about half a second), then cached per machine and model shape, so the planner
// (placement_plan.h) works from this machine's numbers, not from constants.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "model/llama_config.h"
#include "runtime/weight_schedule.h"

namespace cllm {

// Rates in GB/s (1e9 bytes per second) of the bytes each path moves; times in ms.
struct PathSpeeds {
  double pcie_gbs = 0;     // pinned host -> device copies (compressed bytes)
  double pcie_busy_gbs = 0;  // the same while the CPU layers run: they share host memory (0: not measured)
  double decode_gbs = 0;   // the GPU tile decoder (decoded bytes written)
  double gpu_gbs = 0;      // one-token layer kernels (decoded weight bytes read): HBM copy rate x efficiency
  double cpu_gbs_1 = 0;    // CpuLayerForward at 1 token (decoded weight bytes read per second)
  double cpu_gbs_8 = 0;    // ... at 8 tokens (weight bytes per second of the 8-token pass)
  double handover_ms = 0;  // GPU -> CPU -> GPU hand-over of the activations, fixed cost per run of CPU layers
  int cpu_threads = 0;     // the threads cpu_gbs were measured with

  bool valid() const { return pcie_gbs > 0 && decode_gbs > 0 && gpu_gbs > 0 && cpu_gbs_1 > 0 && cpu_gbs_8 > 0; }
  double pcie_with_cpu_gbs() const { return pcie_busy_gbs > 0 ? pcie_busy_gbs : pcie_gbs; }
  // Milliseconds the CPU layer needs for a layer of `bytes` decoded weights at n tokens
  // (linear in n between the two measured points, and beyond).
  double cpu_ms(double bytes, int n) const;
  std::string describe() const;  // "PCIe 55.1 GB/s, decoder 1480 GB/s, GPU layers 2520 GB/s, CPU 98 GB/s (16 threads) ..."
};

// Work that competes with the CPU layers for host memory while they are timed: in a hybrid
// pass, PCIe copies read host RAM while the CPU layers do. start() begins it, running() says
// whether it still runs, finish() waits for it.
struct BackgroundLoad {
  std::function<void()> start;
  std::function<bool()> running;
  std::function<void()> finish;
};

// The CPU half of the calibration: times CpuLayerForward on a layer of the schedule's shape
// (synthetic weights of its dtype, in host RAM) at 1 and 8 tokens, the median of passes
// repeated while `load` (when given) runs; fills cpu_gbs_1/8 and cpu_threads. threads >= 1.
void measure_cpu_layer(const WeightSchedule& s, const LlamaConfig& c, int threads, PathSpeeds& out,
                       const BackgroundLoad* load = nullptr);

// Host RAM available for new allocations (MemAvailable), bytes; 0 when unknown.
uint64_t host_ram_available();

// The cache: $XDG_CACHE_HOME/codecllm/path-speeds.json (or ~/.cache/...), one entry per key.
// load returns false when there is no entry (or CLLM_RECALIBRATE is set); save is best effort
// (a cache that cannot be written only costs a calibration next time).
std::string path_speeds_key(const std::string& gpu_name, const WeightSchedule& s, const LlamaConfig& c, int threads);
bool load_path_speeds(const std::string& key, PathSpeeds& out);
void save_path_speeds(const std::string& key, const PathSpeeds& speeds);

}  // namespace cllm
