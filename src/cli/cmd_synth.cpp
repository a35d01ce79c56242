// codecllm synth OUT --preset NAME: a known model's exact shapes with Gaussian bf16 weights, for
// measuring without downloads: a Hugging Face folder, or, when OUT ends in ".cllm", the
// compressed file itself, generated and encoded tile by tile.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/progress.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/thread_pool.h"
#include "convert/synth.h"

namespace cllm::cli {

namespace {

struct SynthArgs {
  std::string out, preset, tokenizer_dir;
  int layers = -1, threads = 0;
  uint32_t tile_elems = 1u << 20;
  uint64_t seed = 42;
  bool force = false, list = false;
  bool tile_elems_given = false;  // --tile-elems on the command line (only a .cllm output has tiles)
};

bool ends_with_cllm(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".cllm") == 0;
}

void print_summary(const SynthArgs& a, const ModelPreset& preset, const SynthSummary& s, int threads) {
  const double params = static_cast<double>(s.parameters) / 1e9;
  if (!ends_with_cllm(a.out)) {
    std::fprintf(stderr, "wrote '%s': preset %s, %.3f B parameters, %s in %d shard%s, in %.1f s with %d threads; tokenizer: %s\n",
                 a.out.c_str(), preset.name.c_str(), params, format_bytes(static_cast<double>(s.bytes)).c_str(), s.shards,
                 s.shards == 1 ? "" : "s", s.seconds, threads, s.tokenizer.c_str());
    return;
  }
  std::fprintf(stderr,
               "wrote '%s': preset %s, %.3f B parameters, %s (%.2f%% of %s bf16, %.3f bits/weight), in %.1f s with %d "
               "threads (%s/s of bf16); tokenizer: %s\n",
               a.out.c_str(), preset.name.c_str(), params, format_bytes(static_cast<double>(s.file_bytes)).c_str(),
               100.0 * static_cast<double>(s.file_bytes) / static_cast<double>(s.bytes ? s.bytes : 1),
               format_bytes(static_cast<double>(s.bytes)).c_str(), s.bits_per_weight, s.seconds, threads,
               format_bytes(static_cast<double>(s.bytes) / (s.seconds > 0 ? s.seconds : 1)).c_str(), s.tokenizer.c_str());
}

int run_synth(const SynthArgs& a) {
  if (a.list) {
    for (const auto& p : model_presets()) std::printf("%-16s %s\n", p.name.c_str(), p.description.c_str());
    return 0;
  }
  if (a.out.empty() || a.preset.empty()) fail("synth: give an output folder or .cllm file and --preset NAME (see --list)");
  const bool to_cllm = ends_with_cllm(a.out);
  if (!to_cllm && a.tile_elems_given)
    fail("synth: --tile-elems applies to a .cllm output only ('", a.out, "' is a folder; compress takes --tile-elems)");
  if (!to_cllm && is_directory(a.out) && !a.force && path_exists(path_join(a.out, "config.json")))
    fail("'", a.out, "' already holds a model (config.json): refusing to overwrite it (use --force)");
  const ModelPreset preset = find_model_preset(a.preset);
  SynthOptions opt;
  opt.layers = a.layers;
  opt.seed = a.seed;
  opt.threads = a.threads > 0 ? a.threads : hardware_threads();
  opt.overwrite = a.force;
  opt.tokenizer_dir = a.tokenizer_dir;
  opt.tile_elems = a.tile_elems;
  ProgressBar bar("synth " + preset.name);
  opt.progress = [&](uint64_t done, uint64_t total) { bar.update(done, total); };
  const SynthSummary s = to_cllm ? with_context("synthesizing '" + a.out + "'", [&] { return synth_model_cllm(preset, a.out, opt); })
                                 : synth_model(preset, a.out, opt);
  bar.finish();
  print_summary(a, preset, s, opt.threads);
  return 0;
}

}  // namespace

void register_synth(CLI::App& app, Action& action) {
  auto a = std::make_shared<SynthArgs>();
  CLI::App* cmd = app.add_subcommand(
      "synth", "Write a synthetic model with a known model's shapes: a Hugging Face folder, or a .cllm file");
  cmd->add_option("output", a->out,
                  "Folder to write (created if missing), or a file ending in .cllm: the compressed model, written "
                  "directly (same content as synth to a folder, then compress)");
  cmd->add_option("--preset", a->preset,
                  "Model shapes: tiny-test, llama3-tiny, tinyllama-1.1b, llama2-7b, llama3.1-8b, llama3.1-70b (see --list)");
  cmd->add_option("--layers", a->layers, "Keep only this many layers (default: all)")->check(CLI::PositiveNumber);
  cmd->add_option("-s,--seed", a->seed, "Random seed")->default_val(42);
  cmd->add_option("-t,--threads", a->threads, "Threads generating (and encoding) the weights (0 = all hardware threads)")->default_val(0)->check(CLI::NonNegativeNumber);
  cmd->add_option("--tokenizer-dir", a->tokenizer_dir,
                  "Copy tokenizer.json and tokenizer_config.json from this folder (default for Llama 3's vocabulary: "
                  "$CLLM_SHARED_MODELS/llama3.1 or ../shared/models/llama3.1 when there)")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--tile-elems", a->tile_elems, "Elements per tile, for a .cllm output (32768 .. 16777216)")
      ->default_val(1u << 20)
      ->check(CLI::Range(32768u, 1u << 24));
  cmd->add_flag("-f,--force", a->force, "Overwrite the files of an existing folder, or an existing .cllm file");
  cmd->add_flag("--list", a->list, "List the presets and exit");
  cmd->callback([a, cmd, &action] {
    a->tile_elems_given = cmd->count("--tile-elems") > 0;
    action = [a] { return run_synth(*a); };
  });
}

}  // namespace cllm::cli
