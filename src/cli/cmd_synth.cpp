// codecllm synth OUT_DIR --preset NAME: a Hugging Face folder with a known model's exact
// shapes and Gaussian bf16 weights, for measuring without downloads.
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
  uint64_t seed = 42;
  bool force = false, list = false;
};

int run_synth(const SynthArgs& a) {
  if (a.list) {
    for (const auto& p : model_presets()) std::printf("%-16s %s\n", p.name.c_str(), p.description.c_str());
    return 0;
  }
  if (a.out.empty() || a.preset.empty()) fail("synth: give an output folder and --preset NAME (see --list)");
  if (is_directory(a.out) && !a.force && path_exists(path_join(a.out, "config.json")))
    fail("'", a.out, "' already holds a model (config.json): refusing to overwrite it (use --force)");
  const ModelPreset preset = find_model_preset(a.preset);
  SynthOptions opt;
  opt.layers = a.layers;
  opt.seed = a.seed;
  opt.threads = a.threads > 0 ? a.threads : hardware_threads();
  opt.overwrite = a.force;
  opt.tokenizer_dir = a.tokenizer_dir;
  ProgressBar bar("synth " + preset.name);
  opt.progress = [&](uint64_t done, uint64_t total) { bar.update(done, total); };
  const SynthSummary s = synth_model(preset, a.out, opt);
  bar.finish();
  std::fprintf(stderr, "wrote '%s': preset %s, %.3f B parameters, %s in %d shard%s, in %.1f s with %d threads; tokenizer: %s\n",
               a.out.c_str(), preset.name.c_str(), static_cast<double>(s.parameters) / 1e9,
               format_bytes(static_cast<double>(s.bytes)).c_str(), s.shards, s.shards == 1 ? "" : "s", s.seconds, opt.threads,
               s.tokenizer.c_str());
  return 0;
}

}  // namespace

void register_synth(CLI::App& app, Action& action) {
  auto a = std::make_shared<SynthArgs>();
  CLI::App* cmd = app.add_subcommand("synth", "Write a synthetic Hugging Face model with a known model's shapes");
  cmd->add_option("output", a->out, "Folder to write (created if missing)");
  cmd->add_option("--preset", a->preset, "Model shapes: tiny-test, llama3-tiny, tinyllama-1.1b, llama2-7b, llama3.1-8b (see --list)");
  cmd->add_option("--layers", a->layers, "Keep only this many layers (default: all)")->check(CLI::PositiveNumber);
  cmd->add_option("-s,--seed", a->seed, "Random seed")->default_val(42);
  cmd->add_option("-t,--threads", a->threads, "Threads (0 = all hardware threads)")->default_val(0)->check(CLI::NonNegativeNumber);
  cmd->add_option("--tokenizer-dir", a->tokenizer_dir,
                  "Copy tokenizer.json and tokenizer_config.json from this folder (default for Llama 3's vocabulary: "
                  "$CLLM_SHARED_MODELS/llama3.1 or ../shared/models/llama3.1 when there)")
      ->check(CLI::ExistingDirectory);
  cmd->add_flag("-f,--force", a->force, "Overwrite the files of an existing folder");
  cmd->add_flag("--list", a->list, "List the presets and exit");
  cmd->callback([a, &action] { action = [a] { return run_synth(*a); }; });
}

}  // namespace cllm::cli
