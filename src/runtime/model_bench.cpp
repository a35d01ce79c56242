#include "runtime/model_bench.h"

#include <cmath>
#include <memory>

#include "common/error.h"
#include "common/file_io.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "cuda/benchmarks.h"
#include "cuda/device_info.h"
#include "model/forward_cpu.h"
#include "model/llama_weights.h"
#include "runtime/gpu_engine.h"
#include "runtime/weight_schedule.h"

namespace cllm {

namespace {

using ForwardCall = std::function<void(const int* tokens, int n, int pos)>;

// One warm-up and reps timed runs of one test; seconds per run.
std::vector<double> time_test(const ForwardCall& fwd, bool prompt, int n_tokens, int vocab, int reps) {
  std::vector<int> tokens(n_tokens);
  for (int i = 0; i < n_tokens; ++i) tokens[i] = static_cast<int>((1 + 7919ull * i) % vocab);  // fixed, spread
  const auto run_once = [&] {
    if (prompt) fwd(tokens.data(), n_tokens, 0);
    else
      for (int i = 0; i < n_tokens; ++i) fwd(&tokens[i], 1, i);
  };
  run_once();
  std::vector<double> s;
  for (int r = 0; r < reps; ++r) {
    Timer t;
    run_once();
    s.push_back(t.seconds());
  }
  return s;
}

void summarize(ModelBenchRow& row) {
  double sum = 0, sum2 = 0;
  for (double s : row.samples_s) {
    const double tps = row.n_tokens / s;
    sum += tps;
    sum2 += tps * tps;
  }
  const double n = static_cast<double>(row.samples_s.size());
  row.mean_tps = sum / n;
  row.std_tps = n > 1 ? std::sqrt(std::max(0.0, (sum2 - sum * sum / n) / (n - 1))) : 0.0;
}

}  // namespace

ModelBenchResult bench_model(const CllmFile& file, const ModelBenchOptions& opt) {
  const auto say = [&](const std::string& s) {
    if (opt.progress) opt.progress(s);
  };
  const LlamaConfig c = config_from_metadata(file.metadata());
  const WeightSchedule sched = plan_weight_schedule(file, c);
  ModelBenchResult res;
  res.model = path_basename(file.path());
  res.file_bytes = file.file_size();
  for (const auto& t : file.tensors())
    if (t.dtype != DType::U8) res.params += t.n_elems();
  res.decoded_bytes = sched.decoded_bytes;
  for (const auto* steps : {&sched.layers, &sched.classifier})
    for (const auto& s : *steps) res.compressed_bytes += s.src_bytes;
  // Bytes a single token must read in each mode: all weights but the embedding rows.
  const uint64_t token_bytes = sched.decoded_bytes - sched.token_embd->raw_bytes() *
                                                         (c.tie_embeddings ? 0 : 1);
  int context = 1;
  for (int p : opt.n_prompt) context = std::max(context, p);
  for (int n : opt.n_gen) context = std::max(context, n);
  CLLM_CHECK(context <= c.context_length, "bench: ", context, " tokens do not fit the model's context of ",
             c.context_length);

  if (opt.gpu) {
    const auto devs = cuda::list_devices();
    CLLM_CHECK(!devs.empty(), "no CUDA device (", cuda::why_unavailable(), "): use --device cpu");
    res.device = devs[0].name;
    say("measuring the card's ceilings (copy, host-to-device, GEMM)");
    const cuda::Ceilings ceil = cuda::measure_ceilings(size_t{1} << 30, 5);
    res.copy_gbps = ceil.copy_gbps;
    res.h2d_pinned_gbps = ceil.h2d_pinned_gbps;
    res.gemm_tflops = cuda::measure_gemm_tflops(8192, 8192, 8192, 5);
  } else {
    res.device = "cpu";
  }

  // One engine per configuration: a mode, or a VRAM budget (planned per layer).
  std::vector<std::pair<std::string, std::string>> configs;  // (mode, budget)
  if (opt.gpu && !opt.budgets.empty())
    for (const auto& b : opt.budgets) configs.emplace_back("auto", b);
  else
    for (const auto& m : opt.modes) configs.emplace_back(m, "");
  for (const auto& [mode, budget] : configs) {
    std::unique_ptr<GpuEngine> gpu;
    std::unique_ptr<LlamaWeights> weights;
    std::unique_ptr<CpuForward> cpu;
    Timer load;
    say(cat("loading ", res.model, " (", opt.gpu ? (budget.empty() ? "mode " + mode : "VRAM budget " + budget) : "cpu", ")"));
    if (opt.gpu) {
      GpuOptions g;
      g.mode = parse_mode_choice(mode);
      if (!budget.empty()) g.vram_budget = parse_vram_budget(budget);
      g.context = context;
      g.threads = opt.threads;
      gpu = GpuEngine::open(file, g);
    } else {
      ThreadPool pool(opt.threads);
      weights = std::make_unique<LlamaWeights>(load_llama_weights(file, &pool));
      cpu = std::make_unique<CpuForward>(*weights, CpuForwardOptions{context, opt.threads, 512});
    }
    const double load_s = load.seconds();
    if (gpu && gpu->mode() == Mode::hybrid)
      say(cat("plan: ", describe_placements(gpu->placements()),
              gpu->plan_summary().empty() ? "" : "; " + gpu->plan_summary()));
    const ForwardCall fwd = [&](const int* t, int n, int pos) {
      if (gpu) gpu->forward(t, n, pos);
      else cpu->forward(t, n, pos);
    };
    const std::string mode_used = gpu ? mode_name(gpu->mode()) : "cpu";
    for (int pass = 0; pass < 2; ++pass)
      for (int n : pass == 0 ? opt.n_prompt : opt.n_gen) {
        if (n <= 0) continue;
        ModelBenchRow row;
        row.mode = mode_used;
        row.budget = budget;
        if (gpu) row.placement = describe_placements(gpu->placements());
        row.test = cat(pass == 0 ? "pp" : "tg", n);
        row.n_tokens = n;
        row.load_s = load_s;
        say(cat(row.test, " in mode ", mode_used, ": 1 warm-up + ", opt.reps, " runs"));
        if (gpu) gpu->reset_stats();
        row.samples_s = time_test(fwd, pass == 0, n, c.vocab_size, opt.reps);
        summarize(row);
        if (gpu) {
          const GpuStats& st = gpu->stats();
          double wall = 0;
          for (double s : row.samples_s) wall += s;
          const double wall_ms = wall * 1e3 * (opt.reps + 1) / opt.reps;  // the warm-up ran too
          row.vram_peak = st.vram_peak;
          row.decode_gbps = st.decode_ms > 0 ? st.decoded_bytes / (st.decode_ms * 1e-3) / 1e9 : 0;
          row.h2d_gbps = st.h2d_ms > 0 ? st.h2d_bytes / (st.h2d_ms * 1e-3) / 1e9 : 0;
          row.stall_pct = wall_ms > 0 ? 100.0 * st.stall_ms / wall_ms : 0;
          // Rooflines: a prompt is bound by GEMM throughput; a token by reading the weights
          // (full: decoded from HBM; resident: compressed + decoded written + read; lowmem: PCIe).
          const double params = static_cast<double>(res.params);
          if (pass == 0) {
            row.bound = "GEMM";
            row.roofline_tps = res.gemm_tflops * 1e12 / (2.0 * params);
          } else if (gpu->mode() == Mode::lowmem) {
            row.bound = "PCIe";
            row.roofline_tps = res.h2d_pinned_gbps * 1e9 / res.compressed_bytes;
          } else if (gpu->mode() == Mode::hybrid) {
            // The streamed steps' bytes over PCIe; the rest runs from VRAM alongside.
            uint64_t streamed = 0;
            const Placements& pl = gpu->placements();
            for (size_t i = 0; i < pl.size(); ++i) {
              const WeightStep& step =
                  i < sched.layers.size() ? sched.layers[i] : sched.classifier[i - sched.layers.size()];
              if (pl[i] == Placement::streamed) streamed += step.src_bytes;
            }
            row.bound = streamed ? "PCIe" : "HBM";
            row.roofline_tps = streamed ? res.h2d_pinned_gbps * 1e9 / streamed
                                        : res.copy_gbps * 1e9 / (res.compressed_bytes + 2.0 * sched.decoded_bytes);
          } else {
            row.bound = "HBM";
            const double bytes = gpu->mode() == Mode::full ? token_bytes
                                                           : res.compressed_bytes + 2.0 * sched.decoded_bytes;
            row.roofline_tps = res.copy_gbps * 1e9 / bytes;
          }
        }
        say(cat(row.test, " ", mode_used, ": ", row.mean_tps, " t/s"));
        res.rows.push_back(std::move(row));
      }
  }
  return res;
}

}  // namespace cllm
