#include "runtime/path_speeds.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "model/cpu_layer.h"

namespace cllm {

double PathSpeeds::cpu_ms(double bytes, int n) const {
  const double t1 = bytes / (cpu_gbs_1 * 1e6);  // ms of a 1-token pass
  const double t8 = bytes / (cpu_gbs_8 * 1e6);  // ms of an 8-token pass (the weights are read once)
  return t1 + (t8 - t1) * (n - 1) / 7.0;
}

std::string PathSpeeds::describe() const {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "PCIe %.1f GB/s (%.1f beside the CPU layers), decoder %.0f GB/s, GPU layers %.0f GB/s, CPU layers "
                "%.1f GB/s at 1 token and %.1f at 8 (%d threads), hand-over %.3f ms",
                pcie_gbs, pcie_with_cpu_gbs(), decode_gbs, gpu_gbs, cpu_gbs_1, cpu_gbs_8, cpu_threads, handover_ms);
  return buf;
}

namespace {

// A small finite value of each float dtype, as raw bits, so no slow path (NaN, denormals) is timed.
void fill_small(uint8_t* p, uint64_t bytes, DType t) {
  if (t == DType::F32) {
    const float v = 0.01f;
    for (uint64_t i = 0; i + 4 <= bytes; i += 4) std::memcpy(p + i, &v, 4);
    return;
  }
  const uint16_t v = t == DType::BF16 ? 0x3C24 : 0x211F;  // ~0.01 in bf16 and f16
  for (uint64_t i = 0; i + 2 <= bytes; i += 2) std::memcpy(p + i, &v, 2);
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  return "unknown CPU";
}

std::string cache_path() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/codecllm/path-speeds.json";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/codecllm/path-speeds.json";
  return "";
}

}  // namespace

void measure_cpu_layer(const WeightSchedule& s, const LlamaConfig& c, int threads, PathSpeeds& out,
                       const BackgroundLoad* load) {
  CLLM_CHECK(!s.layers.empty() && threads >= 1, "measure_cpu_layer: no layers or no threads");
  const WeightStep& step = s.layers.front();
  // The slot layout of layer 0, filled with small values; in memory like the engine's CPU layers.
  const CpuLayerMemory slot = allocate_cpu_layer_memory(step.slot_bytes);
  const CpuSlotLayout layout = cpu_slot_layout(step);
  for (int i = 0; i < kLayerTensors; ++i)  // each tensor's bytes up to the next one's (in slot order)
    if (layout.present[i]) {
      uint64_t end = step.slot_bytes;
      for (int j = 0; j < kLayerTensors; ++j)
        if (layout.present[j] && layout.offset[j] > layout.offset[i]) end = std::min(end, layout.offset[j]);
      fill_small(slot.get() + layout.offset[i], end - layout.offset[i], layout.dtype[i]);
    }
  const CpuLayerWeights w = cpu_layer_weights_in_slot(slot.get(), layout);
  ThreadPool pool(threads);
  CpuLayerOptions opt;
  opt.context = 64;
  opt.max_batch = 8;
  CpuLayerForward layer(c, opt, &pool);
  CpuKvCache kv(1, opt.context, c.kv_dim(), cpu_kv_dtype(w.linear_dtype()));
  std::vector<float> x(static_cast<size_t>(8) * c.dim, 0.5f);
  layer.forward(0, w, kv.layer(0), x.data(), 1, 0);  // warm-up: touches the pages
  // The median of passes repeated while the load runs (at least 3, at most 200).
  const auto median_ms = [&](int n) {
    std::vector<double> times;
    if (load) load->start();
    while (times.size() < 3 || (load && load->running() && times.size() < 200)) {
      Timer t;
      layer.forward(0, w, kv.layer(0), x.data(), n, 0);
      times.push_back(t.ms());
    }
    if (load) load->finish();
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    return times[times.size() / 2];
  };
  const double bytes = static_cast<double>(step.slot_bytes);
  out.cpu_gbs_1 = bytes / (median_ms(1) * 1e6);
  out.cpu_gbs_8 = bytes / (median_ms(8) * 1e6);
  out.cpu_threads = threads;
}

uint64_t host_ram_available() {
  std::ifstream in("/proc/meminfo");
  std::string name;
  uint64_t kib = 0;
  std::string unit;
  while (in >> name >> kib >> unit)
    if (name == "MemAvailable:") return kib * 1024;
  return 0;
}

std::string path_speeds_key(const std::string& gpu_name, const WeightSchedule& s, const LlamaConfig& c, int threads) {
  return cat(gpu_name, " | ", cpu_model_name(), " | ", threads, " threads | layer ", c.dim, "x", c.ffn_dim, " ",
             c.n_heads, "/", c.n_kv_heads, " heads ", dtype_name(s.linear_dtype), " | calibration v2");
}

bool load_path_speeds(const std::string& key, PathSpeeds& out) {
  if (std::getenv("CLLM_RECALIBRATE")) return false;
  const std::string path = cache_path();
  if (path.empty() || !path_exists(path)) return false;
  try {
    std::ifstream in(path);
    const nlohmann::json j = nlohmann::json::parse(in);
    if (!j.contains(key)) return false;
    const auto& e = j.at(key);
    PathSpeeds p;
    p.pcie_gbs = e.at("pcie_gbs");
    p.pcie_busy_gbs = e.at("pcie_busy_gbs");
    p.decode_gbs = e.at("decode_gbs");
    p.gpu_gbs = e.at("gpu_gbs");
    p.cpu_gbs_1 = e.at("cpu_gbs_1");
    p.cpu_gbs_8 = e.at("cpu_gbs_8");
    p.handover_ms = e.at("handover_ms");
    p.cpu_threads = e.at("cpu_threads");
    if (!p.valid()) return false;
    out = p;
    return true;
  } catch (const std::exception& e) {
    log_debug("ignoring the calibration cache '", path, "': ", e.what());
    return false;
  }
}

void save_path_speeds(const std::string& key, const PathSpeeds& p) {
  const std::string path = cache_path();
  if (path.empty()) return;
  try {
    nlohmann::json j = nlohmann::json::object();
    if (path_exists(path)) {
      std::ifstream in(path);
      j = nlohmann::json::parse(in, nullptr, false);
      if (!j.is_object()) j = nlohmann::json::object();
    }
    j[key] = {{"pcie_gbs", p.pcie_gbs},   {"pcie_busy_gbs", p.pcie_busy_gbs}, {"decode_gbs", p.decode_gbs}, {"gpu_gbs", p.gpu_gbs},
              {"cpu_gbs_1", p.cpu_gbs_1}, {"cpu_gbs_8", p.cpu_gbs_8},   {"handover_ms", p.handover_ms},
              {"cpu_threads", p.cpu_threads}};
    std::filesystem::create_directories(path.substr(0, path.rfind('/')));
    const std::string text = j.dump(2) + "\n";
    AtomicOutputFile f(path, /*overwrite=*/true);
    f.write(text.data(), text.size());
    f.commit();
  } catch (const std::exception& e) {
    log_debug("could not write the calibration cache '", path, "': ", e.what());
  }
}

}  // namespace cllm
