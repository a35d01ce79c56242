// codecllm: run Llama-family models from a lossless compressed container.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/log.h"

int main(int argc, char** argv) {
  cllm::install_cleanup_signal_handlers();
  CLI::App app{"codecllm: lossless compressed Llama inference", "codecllm"};
  app.set_version_flag("--version", "codecllm 0.1.0 (.cllm format v1)");
  app.require_subcommand(1);
  bool verbose = false, quiet = false;
  app.add_flag("--verbose", verbose, "More progress and debug output on stderr");
  app.add_flag("--quiet", quiet, "Only errors on stderr");

  cllm::cli::Action action;
  cllm::cli::register_compress(app, action);
  cllm::cli::register_info(app, action);
  cllm::cli::register_verify(app, action);
  cllm::cli::register_tokenize(app, action);
  cllm::cli::register_run(app, action);
  cllm::cli::register_bench(app, action);
  cllm::cli::register_synth(app, action);
  cllm::cli::register_serve(app, action);

  // llama.cpp's multi-letter single-dash flags, which CLI11 cannot declare, as their long names.
  std::vector<std::string> args(argv, argv + argc);
  for (auto& arg : args) {
    if (arg == "-cnv") arg = "--chat";
    else if (arg == "-sys") arg = "--system-prompt";
    else if (arg == "-np") arg = "--parallel";
    else if (arg == "-to") arg = "--timeout";
  }
  std::vector<char*> arg_ptrs;
  for (auto& arg : args) arg_ptrs.push_back(arg.data());
  try {
    app.parse(argc, arg_ptrs.data());
  } catch (const CLI::ParseError& e) {
    // CLI11 reports a misspelt command as "A subcommand is required": name it instead.
    if (app.get_subcommands().empty() && argc > 1 && args[1][0] != '-') {
      std::string known;
      for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
        known += (known.empty() ? "" : ", ") + sub->get_name();
      std::fprintf(stderr, "unknown command '%s' (commands: %s)\nRun with --help for more information.\n",
                   args[1].c_str(), known.c_str());
      return 2;
    }
    // --help and --version exit 0; usage errors print CLI11's message and exit 2 (docs/cli.md).
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (verbose) cllm::log_set_level(cllm::LogLevel::debug);
  if (quiet) cllm::log_set_level(cllm::LogLevel::error);
  try {
    return action ? action() : 0;
  } catch (const cllm::Error& e) {
    // The runtime says what is wrong and what would help (its Remedy); here that becomes a flag.
    const std::string hint = cllm::cli::remedy_in_flags(e.remedy());
    std::fprintf(stderr, "error: %s%s%s\n", e.what(), hint.empty() ? "" : ": ", hint.c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
