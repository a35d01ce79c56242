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
#include "model/batch.h"
#include "runtime/gpu_engine.h"
#include "runtime/weight_schedule.h"

namespace cllm {

namespace {

using ForwardCall = std::function<void(const int* tokens, int n, int pos)>;

// n fixed token ids spread over the vocabulary; `salt` makes the depth's fill differ from the tests.
std::vector<int> bench_tokens(int n, int vocab, uint64_t salt) {
  std::vector<int> tokens(n);
  for (int i = 0; i < n; ++i) tokens[i] = static_cast<int>((1 + salt + 7919ull * i) % vocab);
  return tokens;
}

// run_once once to warm up, then reps times timed; seconds per run.
template <class Run>
std::vector<double> time_runs(const Run& run_once, int reps) {
  run_once();
  std::vector<double> s;
  for (int r = 0; r < reps; ++r) {
    Timer t;
    run_once();
    s.push_back(t.seconds());
  }
  return s;
}

// One warm-up and reps timed runs of one test at positions depth..; seconds per run. The
// cache's first `depth` positions were filled before and are only read, so every run sees
// the same cache.
std::vector<double> time_test(const ForwardCall& fwd, bool prompt, int n_tokens, int depth, int vocab, int reps) {
  const std::vector<int> tokens = bench_tokens(n_tokens, vocab, 0);
  const auto run_once = [&] {
    if (prompt) fwd(tokens.data(), n_tokens, depth);
    else
      for (int i = 0; i < n_tokens; ++i) fwd(&tokens[i], 1, depth + i);
  };
  return time_runs(run_once, reps);
}

// The same for `parallel` sequences decoding together: n_tokens steps of one token each
// (different ids per sequence), sequence s at positions depth.. of its own cache.
std::vector<double> time_parallel_test(const BatchForwardFn& fwd, int n_tokens, int parallel, int depth, int vocab,
                                       int reps) {
  const std::vector<int> tokens = bench_tokens(n_tokens * parallel, vocab, 0);
  std::vector<BatchSegment> segs(parallel);
  const auto run_once = [&] {
    for (int i = 0; i < n_tokens; ++i) {
      for (int s = 0; s < parallel; ++s) segs[s] = {s, depth + i, 1};
      fwd(&tokens[static_cast<size_t>(i) * parallel], segs.data(), parallel);
    }
  };
  return time_runs(run_once, reps);
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

// What every test of one run shares: the options, the model's shape and weight schedule, and
// the result so far (its ceilings and sizes feed the rooflines).
struct BenchRun {
  const ModelBenchOptions& opt;
  const LlamaConfig& c;
  const WeightSchedule& sched;
  uint64_t token_bytes;  // bytes a single token reads in mode full: all weights but the embedding rows
  ModelBenchResult& res;

  void say(const std::string& s) const {
    if (opt.progress) opt.progress(s);
  }
};

// One opened engine: a GPU engine, or a CPU engine (model/cpu_engine.h).
struct OpenEngine {
  std::unique_ptr<GpuEngine> gpu;
  std::unique_ptr<CpuEngine> cpu;
  double load_s = 0;
  int sequences = 1;

  void forward(const int* t, int n, int pos) {
    if (gpu) gpu->forward(t, n, pos);
    else cpu->forward(t, n, pos);
  }
  void forward_batch(const int* t, const BatchSegment* segs, int n) {
    if (gpu) gpu->forward_batch(t, segs, n);
    else cpu->forward_batch(t, segs, n);
  }
  int batch_capacity() const { return gpu ? gpu->batch_capacity() : cpu->batch_capacity(); }
  // The first `depth` positions of every sequence's cache, from `tokens` (untimed).
  void fill(const std::vector<int>& tokens, int depth) {
    if (sequences == 1) return forward(tokens.data(), depth, 0);
    for (int s = 0; s < sequences; ++s)
      for (int pos = 0; pos < depth; pos += batch_capacity()) {
        const BatchSegment seg{s, pos, std::min(batch_capacity(), depth - pos)};
        forward_batch(tokens.data() + pos, &seg, 1);
      }
  }
};

// The file's sizes and counts, the same for every engine.
ModelBenchResult describe_model(const CllmFile& file, const WeightSchedule& sched) {
  ModelBenchResult res;
  res.model = path_basename(file.path());
  res.file_bytes = file.file_size();
  for (const auto& t : file.tensors())
    if (t.dtype != DType::U8) res.params += t.n_elems();
  res.decoded_bytes = sched.decoded_bytes;
  for (const auto* steps : {&sched.layers, &sched.classifier})
    for (const auto& s : *steps) res.compressed_bytes += s.src_bytes;
  return res;
}

// The device's name and, on a GPU, the card's ceilings the rooflines divide by.
void measure_device(const BenchRun& run) {
  ModelBenchResult& res = run.res;
  if (!run.opt.gpu) {
    res.device = "cpu";
    return;
  }
  const auto devs = cuda::list_devices();
  if (devs.empty()) fail_with({Remedy::cpu_device, ""}, "no CUDA device (", cuda::why_unavailable(), ")");
  res.device = devs[0].name;
  run.say("measuring the card's ceilings (copy, host-to-device, GEMM)");
  const cuda::Ceilings ceil = cuda::measure_ceilings(size_t{1} << 30, 5);
  res.copy_gbps = ceil.copy_gbps;
  res.h2d_pinned_gbps = ceil.h2d_pinned_gbps;
  res.gemm_tflops = cuda::measure_gemm_tflops(8192, 8192, 8192, 5);
}

std::string engine_label(bool gpu, const ModelBenchEngine& engine) {
  return !gpu                 ? std::string("cpu")
         : engine.vram_budget ? "VRAM budget " + engine.budget
         : engine.mode        ? cat("mode ", mode_name(*engine.mode))
                              : std::string("mode auto");
}

// Opens one engine with room for `sequences` x `context` positions, timing the load.
OpenEngine open_engine(const BenchRun& run, const CllmFile& file, const ModelBenchEngine& engine, int context,
                       int sequences) {
  const ModelBenchOptions& opt = run.opt;
  OpenEngine e;
  e.sequences = sequences;
  Timer load;
  run.say(cat("loading ", run.res.model, " (", engine_label(opt.gpu, engine),
              sequences > 1 ? cat(", ", sequences, " sequences") : "", ")"));
  if (opt.gpu) {
    GpuOptions g;
    g.mode = engine.mode;
    g.vram_budget = engine.vram_budget;
    g.context = context;
    g.sequences = sequences;
    g.threads = opt.threads;
    e.gpu = GpuEngine::open(file, g);
  } else {
    e.cpu = make_cpu_engine(file, CpuForwardOptions{context, opt.threads, 512, sequences});
  }
  e.load_s = load.seconds();
  if (e.gpu && e.gpu->mode() == Mode::hybrid)
    run.say(cat("plan: ", describe_placements(e.gpu->placements()),
                e.gpu->plan_summary().empty() ? "" : "; " + e.gpu->plan_summary()));
  return e;
}

// The compressed bytes of the weight steps placed to stream over PCIe.
uint64_t streamed_bytes(const Placements& pl, const WeightSchedule& sched) {
  uint64_t streamed = 0;
  for (size_t i = 0; i < pl.size(); ++i) {
    const WeightStep& step = sched.step(i);
    if (pl[i] == Placement::streamed) streamed += step.src_bytes;
  }
  return streamed;
}

// What one token of a plan without streamed steps reads from HBM: a decoded step's slot, a
// fused step's planes (as planned) and other tensors, a resident step's compressed bytes and
// its decoded slot written and read back.
double token_hbm_bytes(const Placements& pl, const WeightSchedule& sched) {
  double bytes = 0;
  for (size_t i = 0; i < pl.size(); ++i) {
    const WeightStep& step = sched.step(i);
    if (pl[i] == Placement::fused && step.fused_bytes) bytes += step.fused_bytes + step.fused_rest_bytes;
    else if (pl[i] == Placement::resident) bytes += step.src_bytes + 2.0 * step.slot_bytes;
    else bytes += step.slot_bytes;
  }
  return bytes;
}

// Rooflines: a prompt is bound by GEMM throughput; a token by reading the weights
// (full: decoded from HBM; resident: compressed + decoded written + read; lowmem: PCIe;
// fused: the fused planes and the decoded small tensors from HBM).
void set_roofline(const BenchRun& run, ModelBenchRow& row, bool prompt, const GpuEngine& gpu) {
  const ModelBenchResult& res = run.res;
  const WeightSchedule& sched = run.sched;
  const double params = static_cast<double>(res.params);
  if (prompt) {
    row.bound = "GEMM";
    row.roofline_tps = res.gemm_tflops * 1e12 / (2.0 * params);
  } else if (gpu.mode() == Mode::lowmem) {
    row.bound = "PCIe";
    row.roofline_tps = res.h2d_pinned_gbps * 1e9 / res.compressed_bytes;
  } else if (gpu.mode() == Mode::hybrid) {
    // The streamed steps' bytes over PCIe; the rest runs from VRAM alongside.
    const uint64_t streamed = streamed_bytes(gpu.placements(), sched);
    row.bound = streamed ? "PCIe" : "HBM";
    row.roofline_tps = streamed ? res.h2d_pinned_gbps * 1e9 / streamed
                                : res.copy_gbps * 1e9 / token_hbm_bytes(gpu.placements(), sched);
  } else if (gpu.mode() == Mode::fused) {
    // What a token reads: every weight the store holds in VRAM (token_embd is on the host).
    row.bound = "HBM";
    row.roofline_tps = res.copy_gbps * 1e9 / static_cast<double>(gpu.memory().weights);
  } else {
    row.bound = "HBM";
    const double bytes = gpu.mode() == Mode::full ? run.token_bytes
                                                  : res.compressed_bytes + 2.0 * sched.decoded_bytes;
    row.roofline_tps = res.copy_gbps * 1e9 / bytes;
  }
}

// The GPU's counters over the warm-up and the timed runs, as rates and shares of the wall time.
void set_gpu_stats(ModelBenchRow& row, const GpuStats& st, int reps) {
  double wall = 0;
  for (double s : row.samples_s) wall += s;
  const double wall_ms = wall * 1e3 * (reps + 1) / reps;  // the warm-up ran too
  row.vram_peak = st.vram_peak;
  row.decode_gbps = st.decode_ms > 0 ? st.decoded_bytes / (st.decode_ms * 1e-3) / 1e9 : 0;
  row.h2d_gbps = st.h2d_ms > 0 ? st.h2d_bytes / (st.h2d_ms * 1e-3) / 1e9 : 0;
  row.stall_pct = wall_ms > 0 ? 100.0 * st.stall_ms / wall_ms : 0;
}

// One test (pp or tg of n tokens at `depth`) on an engine whose cache holds the depth's tokens.
ModelBenchRow run_test(const BenchRun& run, OpenEngine& e, const std::string& budget, bool prompt, int n, int depth) {
  const ModelBenchOptions& opt = run.opt;
  const std::string mode_used = e.gpu ? mode_name(e.gpu->mode()) : "cpu";
  ModelBenchRow row;
  row.mode = mode_used;
  row.budget = budget;
  if (e.gpu) row.placement = describe_placements(e.gpu->placements());
  const int parallel = e.sequences;
  row.test = bench_test_name(prompt, n, depth, parallel);
  row.n_tokens = n * parallel;
  row.n_parallel = parallel;
  (prompt ? row.n_prompt : row.n_gen) = n;
  row.n_depth = depth;
  row.load_s = e.load_s;
  run.say(cat(row.test, " in mode ", mode_used, ": 1 warm-up + ", opt.reps, " runs"));
  if (e.gpu) e.gpu->reset_stats();
  if (parallel > 1) {
    const BatchForwardFn fwd = [&](const int* t, const BatchSegment* sg, int k) {
      e.forward_batch(t, sg, k);
      return nullptr;
    };
    row.samples_s = time_parallel_test(fwd, n, parallel, depth, run.c.vocab_size, opt.reps);
  } else {
    const ForwardCall fwd = [&](const int* t, int k, int pos) { e.forward(t, k, pos); };
    row.samples_s = time_test(fwd, prompt, n, depth, run.c.vocab_size, opt.reps);
  }
  summarize(row);
  if (e.gpu) {
    set_gpu_stats(row, e.gpu->stats(), opt.reps);
    set_roofline(run, row, prompt, *e.gpu);
    row.roofline_tps *= parallel;  // a step reads the weights once for all its sequences
  }
  run.say(cat(row.test, " ", mode_used, ": ", row.mean_tps, " t/s"));
  return row;
}

// Every test at every depth on one engine, appending a row each.
void run_tests(const BenchRun& run, OpenEngine& e, const std::string& budget) {
  const ModelBenchOptions& opt = run.opt;
  for (int depth : opt.n_depth) {
    bool filled = depth == 0;
    for (int pass = 0; pass < 2; ++pass)
      for (int n : pass == 0 ? opt.n_prompt : opt.n_gen) {
        if (n <= 0 || (pass == 0 && e.sequences > 1)) continue;  // pp tests at one sequence only
        if (!filled) {  // the depth's tokens, as one prompt (the engines batch it), untimed
          run.say(cat("filling the KV cache with ", depth, " tokens",
                      e.sequences > 1 ? cat(" for each of ", e.sequences, " sequences") : ""));
          e.fill(bench_tokens(depth, run.c.vocab_size, 104729), depth);
          filled = true;
        }
        run.res.rows.push_back(run_test(run, e, budget, pass == 0, n, depth));
      }
  }
}

}  // namespace

int bench_context(const ModelBenchOptions& opt) {
  int context = 1;
  for (int d : opt.n_depth)
    for (const auto* lengths : {&opt.n_prompt, &opt.n_gen})
      for (int n : *lengths) context = std::max(context, d + n);
  return context;
}

std::string bench_test_name(bool prompt, int n_tokens, int depth, int parallel) {
  return cat(prompt ? "pp" : "tg", n_tokens, parallel > 1 ? cat(" x", parallel) : "", depth > 0 ? cat(" @ d", depth) : "");
}

ModelBenchResult bench_model(const CllmFile& file, const ModelBenchOptions& opt) {
  const LlamaConfig c = config_from_metadata(file.metadata());
  const WeightSchedule sched = plan_weight_schedule(file, c);
  ModelBenchResult res = describe_model(file, sched);
  const uint64_t token_bytes = sched.decoded_bytes - sched.token_embd->raw_bytes() *
                                                         (c.tie_embeddings ? 0 : 1);
  const BenchRun run{opt, c, sched, token_bytes, res};
  const int needed = bench_context(opt);
  const int context = opt.context > 0 ? opt.context : needed;
  CLLM_CHECK(needed <= context, "bench: the tests need ", needed, " positions (depth + test), more than the context of ",
             context);
  CLLM_CHECK(context <= c.context_length, "bench: a context of ", context, " positions does not fit the model's ",
             c.context_length);
  measure_device(run);

  // One engine per configuration: a mode, or a VRAM budget (planned per layer).
  const std::vector<ModelBenchEngine> engines = opt.gpu ? opt.engines : std::vector<ModelBenchEngine>{{}};
  for (const ModelBenchEngine& engine : engines)
    for (int parallel : opt.n_parallel) {
      CLLM_CHECK(parallel >= 1, "bench: -np ", parallel, ", expected >= 1");
      OpenEngine e = open_engine(run, file, engine, context, parallel);
      run_tests(run, e, engine.budget);
    }
  return res;
}

}  // namespace cllm
