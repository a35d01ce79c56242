// codecllm bench MODEL.cllm: llama-bench's pp/tg measurements for each memory mode
// (runtime/model_bench.h); with --codec, the codec's speed on the file (CPU encoder and
// decoder; GPU decoder against the card's measured ceilings).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/progress.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "runtime/codec_bench.h"
#include "runtime/device_select.h"
#include "runtime/memory_plan.h"
#include "runtime/model_bench.h"

namespace cllm::cli {

namespace {

struct BenchArgs {
  std::string model, output = "md", device = "auto";
  bool codec = false;
  int reps = 5, threads = 0;
  std::vector<std::string> modes = {"auto"};
  std::vector<std::string> budgets;
  std::vector<int> n_prompt = {512}, n_gen = {128};
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

void print_model_csv(const ModelBenchResult& r) {
  std::printf("model,device,mode,test,n_tokens,mean_tps,std_tps,vram_peak,decode_gbps,h2d_gbps,stall_pct,"
              "roofline_tps,bound,load_s,samples_s\n");
  for (const auto& row : r.rows) {
    std::string samples;
    for (double s : row.samples_s) samples += (samples.empty() ? "" : ";") + std::to_string(s);
    std::printf("\"%s\",\"%s\",%s,%s,%d,%.4f,%.4f,%llu,%.2f,%.2f,%.2f,%.4f,%s,%.3f,\"%s\"\n", r.model.c_str(),
                r.device.c_str(), row.mode.c_str(), row.test.c_str(), row.n_tokens, row.mean_tps, row.std_tps,
                static_cast<unsigned long long>(row.vram_peak), row.decode_gbps, row.h2d_gbps, row.stall_pct,
                row.roofline_tps, row.bound.c_str(), row.load_s, samples.c_str());
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
  for (const auto& row : r.rows)
    j["rows"].push_back({{"mode", row.mode}, {"budget", row.budget}, {"placement", row.placement},
                         {"test", row.test}, {"n_tokens", row.n_tokens},
                         {"mean_tps", row.mean_tps}, {"std_tps", row.std_tps}, {"samples_s", row.samples_s},
                         {"vram_peak", row.vram_peak}, {"decode_gbps", row.decode_gbps}, {"h2d_gbps", row.h2d_gbps},
                         {"stall_pct", row.stall_pct}, {"roofline_tps", row.roofline_tps}, {"bound", row.bound},
                         {"load_s", row.load_s}});
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
  opt.modes = a.modes;
  opt.budgets = a.budgets;
  if (!a.budgets.empty()) {
    if (!opt.gpu) fail("--vram-budget plans GPU memory: use --device cuda (or leave it out)");
    if (a.modes != std::vector<std::string>{"auto"})
      fail("--vram-budget plans where each layer lives: leave --mode out");
    for (const auto& b : a.budgets)
      if (b != "auto") parse_size(b);  // a bad size fails before anything loads
  }
  if (!opt.gpu) {
    for (const auto& m : a.modes)
      if (m != "auto") fail("--mode ", m, " is a GPU memory mode: use --device cuda (or leave --mode out)");
    opt.modes = {"cpu"};
  }
  opt.n_prompt = a.n_prompt;
  opt.n_gen = a.n_gen;
  opt.reps = a.reps;
  opt.threads = a.threads > 0 ? a.threads : hardware_threads();
  opt.progress = [](const std::string& s) { log_info("bench: ", s); };
  const ModelBenchResult r = bench_model(f, opt);
  if (a.output == "json") print_model_json(r);
  else if (a.output == "csv") print_model_csv(r);
  else print_model_md(r);
  return 0;
}

int run_bench(const BenchArgs& a) {
  const Device dev = select_device(a.device);
  const CllmFile f = CllmFile::open(a.model);
  if (!a.codec) return run_model_bench(a, f, dev);
  CodecBenchOptions opt;
  opt.reps = a.reps;
  opt.threads = a.threads;
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
  cmd->add_option("--mode", a->modes, "GPU memory modes to run, comma-separated: full,resident,lowmem,auto")
      ->delimiter(',')
      ->check(CLI::IsMember({"full", "resident", "lowmem", "auto"}));
  cmd->add_option("--vram-budget", a->budgets,
                  "VRAM budgets to run, comma-separated (2.5G,8G,auto): each plans every layer's placement")
      ->delimiter(',');
  cmd->add_option("-p,--n-prompt", a->n_prompt, "Prompt lengths, comma-separated (pp tests; 0: none)")
      ->delimiter(',')
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-n,--n-gen", a->n_gen, "Generated lengths, comma-separated (tg tests; 0: none)")
      ->delimiter(',')
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-r,--repetitions", a->reps, "Timed repetitions after one warm-up")->default_val(5)->check(CLI::Range(1, 1000));
  cmd->add_option("-t,--threads", a->threads, "CPU threads for the multi-threaded rows (0 = all)")->default_val(0)->check(CLI::NonNegativeNumber);
  cmd->add_option("-o,--output", a->output, "Output format")->default_val("md")->check(CLI::IsMember({"md", "csv", "json"}));
  cmd->add_option("--device", a->device, "cpu, cuda or auto")->default_val("auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  cmd->callback([a, &action] { action = [a] { return run_bench(*a); }; });
}

}  // namespace cllm::cli
