// codecllm bench MODEL.cllm --codec: the codec's speed on a real file (CPU encoder and
// decoder; GPU decoder against the card's measured ceilings).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/progress.h"
#include "common/error.h"
#include "common/file_io.h"
#include "runtime/codec_bench.h"
#include "runtime/device_select.h"

namespace cllm::cli {

namespace {

struct BenchArgs {
  std::string model, output = "md", device = "auto";
  bool codec = false;
  int reps = 5, threads = 0;
};

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

int run_bench(const BenchArgs& a) {
  if (!a.codec)
    fail("model benchmarks (pp512/tg128) need the GPU engine, which this version does not have yet: "
         "use 'codecllm bench --codec MODEL.cllm' to measure the codec");
  const Device dev = select_device(a.device);
  const CllmFile f = CllmFile::open(a.model);
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
  CLI::App* cmd = app.add_subcommand("bench", "Measure speed (this version: the codec, with --codec)");
  cmd->add_option("model", a->model, "The .cllm file")->required();
  cmd->add_flag("--codec", a->codec, "Measure the codec: CPU encoder/decoder, GPU decoder and the card's ceilings");
  cmd->add_option("-r,--repetitions", a->reps, "Timed repetitions after one warm-up (median reported)")->default_val(5)->check(CLI::Range(1, 1000));
  cmd->add_option("-t,--threads", a->threads, "CPU threads for the multi-threaded rows (0 = all)")->default_val(0)->check(CLI::NonNegativeNumber);
  cmd->add_option("-o,--output", a->output, "Output format")->default_val("md")->check(CLI::IsMember({"md", "csv", "json"}));
  cmd->add_option("--device", a->device, "cpu, cuda or auto")->default_val("auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  cmd->callback([a, &action] { action = [a] { return run_bench(*a); }; });
}

}  // namespace cllm::cli
