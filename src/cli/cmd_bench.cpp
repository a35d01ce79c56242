// codecllm bench MODEL.cllm: llama-bench's pp/tg measurements for each memory mode
// (runtime/model_bench.h); with --codec, the codec's speed on the file (CPU encoder and
// decoder; GPU decoder against the card's measured ceilings).
#include <cmath>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "cli/progress.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "runtime/codec_bench.h"
#include "runtime/device_select.h"
#include "model/llama_config.h"
#include "runtime/memory_plan.h"
#include "runtime/model_bench.h"

namespace cllm::cli {

namespace {

struct BenchArgs {
  std::string model, output = "md";
  bool codec = false;
  int reps = 5;
  EngineFlags engine;  // --device, --mode, --vram-budget (lists), -t, -c, --no-verify (cli/engine_flags.h)
  std::vector<int> n_prompt = {512}, n_gen = {128}, n_depth = {0}, n_parallel = {1};
};

// "8.03 B", "1.10 B", "5.05 M", "260.1 K", as llama-bench's params column.
std::string params(uint64_t n) {
  char buf[32];
  if (n >= 1000000000ull) std::snprintf(buf, sizeof buf, "%.2f B", n / 1e9);
  else if (n >= 1000000ull) std::snprintf(buf, sizeof buf, "%.2f M", n / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1f K", n / 1e3);
  return buf;
}

std::string gib(uint64_t b) { return b ? format_bytes(static_cast<double>(b)) : "-"; }
std::string num(double v, const char* fmt = "%.1f") {
  if (v <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

void print_model_md(const ModelBenchResult& r) {
  const double ratio = r.decoded_bytes ? static_cast<double>(r.compressed_bytes) / r.decoded_bytes : 0;
  std::printf("| model | size | params | ratio | backend | mode | test | t/s | of roofline | VRAM | decode GB/s | "
              "H2D GB/s | stall |\n");
  std::printf("|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& row : r.rows)
    std::printf("| %s | %s | %s | %.3f | %s | %s | %s | %.2f ± %.2f | %s | %s | %s | %s | %s |\n", r.model.c_str(),
                format_bytes(static_cast<double>(r.file_bytes)).c_str(), params(r.params).c_str(), ratio,
                r.device == "cpu" ? "CPU" : "CUDA",
                (row.budget.empty() ? row.mode : row.mode + " @" + row.budget + " (" + row.placement + ")").c_str(),
                row.test.c_str(), row.mean_tps, row.std_tps,
                row.roofline_tps > 0 ? (num(100 * row.mean_tps / row.roofline_tps, "%.0f") + "% " + row.bound).c_str() : "-",
                gib(row.vram_peak).c_str(), num(row.decode_gbps).c_str(), num(row.h2d_gbps).c_str(),
                row.roofline_tps > 0 ? (num(row.stall_pct, "%.0f") + "%").c_str() : "-");
  if (r.device != "cpu")
    std::printf("\n%s ceilings, measured in this run: copy %.0f GB/s (read+write), host-to-device pinned %.1f GB/s, "
                "cuBLAS bf16 GEMM %.0f TFLOP/s\n",
                r.device.c_str(), r.copy_gbps, r.h2d_pinned_gbps, r.gemm_tflops);
}

// Tokens per second of each repetition (llama-bench's samples_ts).
std::vector<double> samples_tps(const ModelBenchRow& row) {
  std::vector<double> tps;
  for (double s : row.samples_s) tps.push_back(s > 0 ? row.n_tokens / s : 0.0);
  return tps;
}

// llama-bench's nanosecond figures: per repetition, their mean and standard deviation.
std::vector<uint64_t> samples_ns(const ModelBenchRow& row) {
  std::vector<uint64_t> ns;
  for (double s : row.samples_s) ns.push_back(static_cast<uint64_t>(s * 1e9 + 0.5));
  return ns;
}

std::pair<double, double> mean_stddev(const std::vector<uint64_t>& v) {
  double sum = 0, sum2 = 0;
  for (uint64_t x : v) sum += static_cast<double>(x);
  const double n = static_cast<double>(v.size()), mean = n > 0 ? sum / n : 0;
  for (uint64_t x : v) sum2 += (x - mean) * (x - mean);
  return {mean, n > 1 ? std::sqrt(sum2 / (n - 1)) : 0.0};
}

// The columns up to samples_s are the first version's; llama-bench's follow.
void print_model_csv(const ModelBenchResult& r) {
  std::printf("model,device,mode,test,n_tokens,mean_tps,std_tps,vram_peak,decode_gbps,h2d_gbps,stall_pct,"
              "roofline_tps,bound,load_s,samples_s,n_prompt,n_gen,n_depth,avg_ts,stddev_ts,samples_ts,n_parallel\n");
  for (const auto& row : r.rows) {
    std::string samples, tps;
    for (double s : row.samples_s) samples += (samples.empty() ? "" : ";") + std::to_string(s);
    for (double t : samples_tps(row)) tps += (tps.empty() ? "" : ";") + std::to_string(t);
    std::printf("\"%s\",\"%s\",%s,\"%s\",%d,%.4f,%.4f,%llu,%.2f,%.2f,%.2f,%.4f,%s,%.3f,\"%s\",%d,%d,%d,%.4f,%.4f,\"%s\",%d\n",
                r.model.c_str(), r.device.c_str(), row.mode.c_str(), row.test.c_str(), row.n_tokens, row.mean_tps,
                row.std_tps, static_cast<unsigned long long>(row.vram_peak), row.decode_gbps, row.h2d_gbps,
                row.stall_pct, row.roofline_tps, row.bound.c_str(), row.load_s, samples.c_str(), row.n_prompt,
                row.n_gen, row.n_depth, row.mean_tps, row.std_tps, tps.c_str(), row.n_parallel);
  }
}

void print_model_json(const ModelBenchResult& r) {
  nlohmann::json j;
  j["model"] = r.model;
  j["device"] = r.device;
  j["file_bytes"] = r.file_bytes;
  j["params"] = r.params;
  j["decoded_bytes"] = r.decoded_bytes;
  j["compressed_bytes"] = r.compressed_bytes;
  j["ceilings"] = {{"copy_gbps", r.copy_gbps}, {"h2d_pinned_gbps", r.h2d_pinned_gbps}, {"gemm_tflops", r.gemm_tflops}};
  j["rows"] = nlohmann::json::array();
  for (const auto& row : r.rows) {
    const std::vector<uint64_t> ns = samples_ns(row);
    const auto [avg_ns, stddev_ns] = mean_stddev(ns);
    j["rows"].push_back({{"mode", row.mode}, {"budget", row.budget}, {"placement", row.placement},
                         {"test", row.test}, {"n_tokens", row.n_tokens},
                         {"mean_tps", row.mean_tps}, {"std_tps", row.std_tps}, {"samples_s", row.samples_s},
                         {"vram_peak", row.vram_peak}, {"decode_gbps", row.decode_gbps}, {"h2d_gbps", row.h2d_gbps},
                         {"stall_pct", row.stall_pct}, {"roofline_tps", row.roofline_tps}, {"bound", row.bound},
                         {"load_s", row.load_s},
                         // llama-bench's names, so that its scripts read these rows
                         {"n_prompt", row.n_prompt}, {"n_gen", row.n_gen}, {"n_depth", row.n_depth}, {"n_parallel", row.n_parallel},
                         {"avg_ns", static_cast<uint64_t>(avg_ns + 0.5)},
                         {"stddev_ns", static_cast<uint64_t>(stddev_ns + 0.5)}, {"avg_ts", row.mean_tps},
                         {"stddev_ts", row.std_tps}, {"samples_ns", ns}, {"samples_ts", samples_tps(row)}});
  }
  std::printf("%s\n", j.dump(2).c_str());
}

void print_md(const CllmFile& f, const CodecBenchResult& r) {
  std::printf("| model | size | test | decoded | ms | GB/s | ceiling GB/s | of ceiling |\n");
  std::printf("|---|---:|---|---:|---:|---:|---:|---:|\n");
  for (const auto& row : r.rows) {
    std::printf("| %s | %s | %s | %s | %.2f | %.1f | %s | %s |\n", path_basename(f.path()).c_str(),
                format_bytes(static_cast<double>(f.file_size())).c_str(), row.test.c_str(), format_bytes(row.bytes).c_str(),
                row.ms, row.gbps(), row.ceiling_gbps > 0 ? std::to_string(static_cast<int>(row.ceiling_gbps)).c_str() : "-",
                row.ceiling_gbps > 0 ? (std::to_string(static_cast<int>(100 * row.gbps() / row.ceiling_gbps)) + "%").c_str() : "-");
  }
  if (!r.device.empty())
    std::printf("\n%s: copy %.0f GB/s (read+write), host-to-device pinned %.1f GB/s, pageable %.1f GB/s; "
                "GPU output %s the CPU reference decoder\n",
                r.device.c_str(), r.copy_gbps, r.h2d_pinned_gbps, r.h2d_pageable_gbps,
                r.gpu_bit_exact ? "identical to" : "DIFFERS FROM");
}

void print_csv(const CodecBenchResult& r) {
  std::printf("test,bytes,ms,gbps,ceiling_gbps,samples_ms\n");
  for (const auto& row : r.rows) {
    std::string samples;
    for (double s : row.samples_ms) samples += (samples.empty() ? "" : ";") + std::to_string(s);
    std::printf("\"%s\",%.0f,%.4f,%.2f,%.2f,\"%s\"\n", row.test.c_str(), row.bytes, row.ms, row.gbps(), row.ceiling_gbps, samples.c_str());
  }
}

void print_json(const CllmFile& f, const CodecBenchResult& r) {
  nlohmann::json j;
  j["model"] = f.path();
  j["device"] = r.device;
  j["copy_gbps"] = r.copy_gbps;
  j["h2d_pinned_gbps"] = r.h2d_pinned_gbps;
  j["h2d_pageable_gbps"] = r.h2d_pageable_gbps;
  j["gpu_bit_exact"] = r.gpu_bit_exact;
  for (const auto& row : r.rows)
    j["rows"].push_back({{"test", row.test}, {"bytes", row.bytes}, {"ms", row.ms}, {"gbps", row.gbps()},
                         {"ceiling_gbps", row.ceiling_gbps}, {"ceiling", row.ceiling}, {"samples_ms", row.samples_ms}});
  std::printf("%s\n", j.dump(2).c_str());
}

int run_model_bench(const BenchArgs& a, const CllmFile& f, Device dev) {
  ModelBenchOptions opt;
  opt.gpu = dev == Device::cuda;
  opt.engines.clear();
  if (!a.engine.budgets.empty())
    for (const auto& b : split_list(a.engine.budgets)) opt.engines.push_back({std::nullopt, parse_vram_budget(b), b});
  else
    for (const auto& m : split_list(a.engine.modes)) opt.engines.push_back({parse_mode_choice(m), 0, ""});
  opt.n_prompt = a.n_prompt;
  opt.n_gen = a.n_gen;
  opt.n_depth = a.n_depth;
  opt.n_parallel = a.n_parallel;
  opt.context = a.engine.context;
  opt.reps = a.reps;
  opt.threads = a.engine.resolved_threads();
  // Depth and test must fit the context: -c, or the model's own (the default context is their sum).
  const int needed = bench_context(opt);
  if (opt.context > 0 && needed > opt.context)
    fail("bench: the tests need ", needed, " positions (depth -d plus the longest of -p and -n), more than -c ",
         opt.context, ": use -c ", needed, " or more (or leave -c out: the default is what the tests need)");
  const int model_context = config_from_metadata(f.metadata()).context_length;
  if (std::max(opt.context, needed) > model_context)
    fail("bench: ", opt.context > needed ? cat("-c ", opt.context) : cat("the tests need ", needed, " positions (-d + -p or -n), which"),
         " exceed the model's context of ", model_context, ": use smaller ", opt.context > needed ? "-c" : "-d, -p or -n");
  opt.progress = [](const std::string& s) { log_info("bench: ", s); };
  const ModelBenchResult r = bench_model(f, opt);
  if (a.output == "json") print_model_json(r);
  else if (a.output == "csv") print_model_csv(r);
  else print_model_md(r);
  return 0;
}

int run_bench(const BenchArgs& a) {
  const Device dev = select_device(a.engine.device);
  if (!a.codec) check_engine_flags(a.engine, dev);
  CllmOpenOptions open_opt;
  open_opt.verify_checksums = !a.engine.no_verify;
  const CllmFile f = CllmFile::open(a.model, open_opt);
  if (!a.codec) return run_model_bench(a, f, dev);
  CodecBenchOptions opt;
  opt.reps = a.reps;
  opt.threads = a.engine.threads;
  opt.gpu = dev == Device::cuda;
  const CodecBenchResult r = bench_codec(f, opt);
  if (a.output == "json") print_json(f, r);
  else if (a.output == "csv") print_csv(r);
  else print_md(f, r);
  return 0;
}

}  // namespace

void register_bench(CLI::App& app, Action& action) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure speed like llama-bench: pp/tg tokens per second per mode");
  cmd->add_option("model", a->model, "The .cllm file")->required();
  cmd->add_flag("--codec", a->codec, "Measure the codec: CPU encoder/decoder, GPU decoder and the card's ceilings");
  cmd->add_option("-p,--n-prompt", a->n_prompt, "Prompt lengths, comma-separated (pp tests; 0: none)")
      ->delimiter(',')
      ->default_str("512")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-n,--n-gen", a->n_gen, "Generated lengths, comma-separated (tg tests; 0: none)")
      ->delimiter(',')
      ->default_str("128")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-d,--n-depth", a->n_depth,
                  "KV cache depths, comma-separated: each test runs after this many tokens fill the cache (untimed)")
      ->delimiter(',')
      ->default_str("0")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--parallel", a->n_parallel,
                  "Sequences decoding together (alias -np), comma-separated (tg tests; each sequence has its own cache of -d "
                  "tokens, rows count all their tokens; pp tests run at 1 only)")
      ->delimiter(',')
      ->default_str("1")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("-r,--repetitions", a->reps, "Timed repetitions after one warm-up")->default_val(5)->check(CLI::Range(1, 1000));
  cmd->add_option("-o,--output", a->output, "Output format")->default_val("md")->check(CLI::IsMember({"md", "csv", "json"}));
  add_engine_flags(cmd, a->engine, EngineFlagsFor::bench);
  cmd->callback([a, &action] { action = [a] { return run_bench(*a); }; });
}

}  // namespace cllm::cli
