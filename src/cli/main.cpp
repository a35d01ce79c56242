// codecllm: run Llama-family models from a lossless compressed container.
#include <cstdio>

#include "cli/commands.h"
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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; usage errors print CLI11's message and exit 2 (docs/cli.md).
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (verbose) cllm::log_set_level(cllm::LogLevel::debug);
  if (quiet) cllm::log_set_level(cllm::LogLevel::error);
  try {
    return action ? action() : 0;
  } catch (const cllm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
