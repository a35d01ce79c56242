// Each subcommand lives in its own cmd_<name>.cpp and registers itself here: it declares its
// options on `app` and, when chosen, stores the function main() runs after parsing.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace cllm::cli {

using Action = std::function<int()>;  // returns the exit status; throws cllm::Error on failure

void register_compress(CLI::App& app, Action& action);
void register_info(CLI::App& app, Action& action);
void register_verify(CLI::App& app, Action& action);
void register_tokenize(CLI::App& app, Action& action);
void register_run(CLI::App& app, Action& action);
void register_bench(CLI::App& app, Action& action);
void register_synth(CLI::App& app, Action& action);
void register_serve(CLI::App& app, Action& action);

}  // namespace cllm::cli
