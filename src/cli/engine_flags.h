// The engine's flags, declared once for every command that loads a model (run, bench, and
// serve to come): where it runs, how the GPU holds the weights, threads, context, checksums.
// Each has an environment variable CLLM_ARG_<NAME> (llama.cpp's LLAMA_ARG_<NAME>) and shows
// its default in the help. The rules between them are checked in one place
// (check_engine_flags), and the runtime receives typed values (gpu_options).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/device_select.h"
#include "runtime/gpu_engine.h"

namespace cllm::cli {

// run (and serve) build one engine: one mode, one budget. bench builds one per mode or
// budget of a comma list, and picks its context from the tests.
enum class EngineFlagsFor { one_engine, bench };

struct EngineFlags {
  std::string device = "auto";                // cpu, cuda or auto
  // As given: bench's environment variables may hold "a,b" in one entry (split_list).
  std::vector<std::string> modes = {"auto"};  // full, resident, lowmem, auto; one_engine: one
  std::vector<std::string> budgets;           // "2.5G", "auto"; empty: by mode
  int threads = 0;                            // 0: all hardware threads
  int context = 0;                            // 0: the command's default
  bool no_verify = false;
  EngineFlagsFor use = EngineFlagsFor::one_engine;  // set by add_engine_flags

  int resolved_threads() const;  // threads, 0 resolved to the hardware's
};

// Declares --device, --mode, --vram-budget, -t/--threads, -c/--ctx-size and --no-verify on cmd.
void add_engine_flags(CLI::App* cmd, EngineFlags& f, EngineFlagsFor use);

// {"a,b", "c"} -> {"a", "b", "c"}
std::vector<std::string> split_list(const std::vector<std::string>& values);

// "full", "resident", "lowmem" -> the mode, "auto" -> none; throws naming the valid ones.
std::optional<Mode> parse_mode_choice(const std::string& text);
// A size ("2.5G") -> bytes, "auto" -> UINT64_MAX (all the free VRAM, which the engine caps).
uint64_t parse_vram_budget(const std::string& text);

// The rules between the flags on the device they will run on; throws cllm::Error naming the
// flag to change: run takes one mode and one budget, a mode other than auto and a VRAM budget need the GPU, and a budget plans
// every layer's place itself, so it takes no mode.
void check_engine_flags(const EngineFlags& f, Device device);

// The GPU engine's options for the first (run: the only) mode and budget, typed.
GpuOptions gpu_options(const EngineFlags& f);

// What to change, in flags, for an error's remedy: "use --mode lowmem", "use -c 512 or less",
// "use a -c smaller than 33280", "use --device cpu"; "" when it has none.
std::string remedy_in_flags(const Remedy& r);

}  // namespace cllm::cli
