#include "cli/engine_flags.h"

#include <algorithm>
#include <climits>

#include "common/error.h"
#include "common/thread_pool.h"
#include "common/units.h"

namespace cllm::cli {

namespace {

const char* const kModeHelp =
    "full (decoded weights in VRAM), resident (compressed in VRAM, decoded per layer), lowmem (compressed in "
    "host RAM, streamed per layer), fused (bf16 matrices in VRAM in a 12-bit lossless layout, decoded inside the "
    "products), auto (the fastest that fits: full, fused, resident or lowmem)";
const char* const kBudgetHelp =
    "each layer is placed decoded in VRAM, compressed in VRAM, streamed from host RAM, or computed on the CPU "
    "(or every layer fused), the fastest mix that fits by this machine's measured bandwidths (set CLLM_RECALIBRATE=1 to measure again)";

}  // namespace

std::vector<std::string> split_list(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const auto& v : values) {
    size_t start = 0;
    for (size_t comma; (comma = v.find(',', start)) != std::string::npos; start = comma + 1)
      out.push_back(v.substr(start, comma - start));
    out.push_back(v.substr(start));
  }
  return out;
}

namespace {

const std::vector<std::string> kModes = {"full", "resident", "lowmem", "fused", "auto"};

// Checks each value of a comma list. Every command's variables are read, whichever command
// runs (CLI11 reads the environment for all of them), so run's --mode must let bench's
// CLLM_ARG_MODE=full,lowmem through; check_engine_flags then asks run for one value.
CLI::Validator each_value(std::string (*check)(const std::string&), const std::string& what) {
  return CLI::Validator(
      [check](std::string& s) -> std::string {
        for (const auto& v : split_list({s})) {
          const std::string err = check(v);
          if (!err.empty()) return err;
        }
        return "";
      },
      what);
}

std::string check_mode(const std::string& s) {
  if (std::find(kModes.begin(), kModes.end(), s) != kModes.end()) return "";
  return "'" + s + "' is not a mode (expected full, resident, lowmem, fused or auto)";
}

std::string check_budget(const std::string& s) {
  try {
    parse_vram_budget(s);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

}  // namespace

int EngineFlags::resolved_threads() const { return threads > 0 ? threads : hardware_threads(); }

void add_engine_flags(CLI::App* cmd, EngineFlags& f, EngineFlagsFor use) {
  const bool lists = use == EngineFlagsFor::bench;
  f.use = use;
  cmd->add_option("--device", f.device, "Where the model runs: cpu, cuda or auto (cuda when usable, else cpu)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->default_str("auto")
      ->envname("CLLM_ARG_DEVICE");
  CLI::Option* mode =
      cmd->add_option("--mode", f.modes,
                      lists ? std::string("GPU memory modes to run, comma-separated: ") + kModeHelp
                            : std::string("GPU memory mode: ") + kModeHelp)
          ->check(each_value(check_mode, lists ? "{full,resident,lowmem,fused,auto},..." : "{full,resident,lowmem,fused,auto}"))
          ->default_str("auto")
          ->envname("CLLM_ARG_MODE");
  CLI::Option* budget =
      cmd->add_option("--vram-budget", f.budgets,
                      lists ? std::string("VRAM budgets to run, comma-separated (e.g. 2.5G,8G,auto; auto: what is "
                                          "free): for each, ") + kBudgetHelp
                            : std::string("Use at most this much VRAM (e.g. 2.5G, 8G; auto: what is free): ") +
                                  kBudgetHelp)
          ->check(each_value(check_budget, lists ? "SIZE|auto,..." : "SIZE|auto"))
          ->default_str("none: by --mode")
          ->envname("CLLM_ARG_VRAM_BUDGET");
  for (CLI::Option* o : {mode, budget}) {
    if (lists) o->delimiter(',');
    else o->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
  cmd->add_option("-t,--threads", f.threads, "CPU threads (0: all hardware threads)")
      ->check(CLI::Range(0, 4096))
      ->default_str(cat("0 (all: ", hardware_threads(), ")"))
      ->envname("CLLM_ARG_THREADS");
  cmd->add_option("-c,--ctx-size", f.context,
                  lists ? "Context size in tokens (0: the largest depth + test, as llama-bench)"
                        : "Context size in tokens (0: min(model context, 4096))")
      ->check(CLI::Range(0, INT_MAX))
      ->default_str(lists ? "0 (d + max(p, n))" : "min(model, 4096)")
      ->envname("CLLM_ARG_CTX_SIZE");
  cmd->add_flag("--no-verify", f.no_verify, "Skip the tiles' checksums at open")
      ->default_str("false")
      ->envname("CLLM_ARG_NO_VERIFY");
}

std::optional<Mode> parse_mode_choice(const std::string& text) {
  if (text == "auto") return std::nullopt;
  for (Mode m : {Mode::full, Mode::resident, Mode::lowmem, Mode::fused})
    if (text == mode_name(m)) return m;
  fail("unknown mode '", text, "' (expected full, resident, lowmem, fused or auto)");
}

uint64_t parse_vram_budget(const std::string& text) { return text == "auto" ? UINT64_MAX : parse_size(text); }

void check_engine_flags(const EngineFlags& f, Device device) {
  const std::vector<std::string> modes = split_list(f.modes), budgets = split_list(f.budgets);
  if (f.use == EngineFlagsFor::one_engine) {
    if (modes.size() > 1) fail("--mode takes one mode here (bench takes a list): found '", join(f.modes), "'");
    if (budgets.size() > 1) fail("--vram-budget takes one size here (bench takes a list): found '", join(f.budgets), "'");
  }
  if (device == Device::cpu) {
    for (const auto& m : modes)
      if (m != "auto") fail("--mode ", m, " is a GPU memory mode: use --device cuda (or leave --mode out)");
    if (!budgets.empty()) fail("--vram-budget plans GPU memory: use --device cuda (or leave --vram-budget out)");
  }
  if (!budgets.empty())
    for (const auto& m : modes)
      if (m != "auto")
        fail("--vram-budget plans where each layer lives: leave --mode out (found --mode ", m, ")");
}

std::string remedy_in_flags(const Remedy& r) {
  switch (r.kind) {
    case Remedy::none: return "";
    case Remedy::mode: return cat("use --mode ", r.value);
    case Remedy::context_at_most: return cat("use -c ", r.value, " or less");
    case Remedy::smaller_context: return cat("use a -c smaller than ", r.value);
    case Remedy::cpu_device: return "use --device cpu";
  }
  return "";
}

GpuOptions gpu_options(const EngineFlags& f) {
  GpuOptions g;
  g.mode = parse_mode_choice(f.modes.empty() ? "auto" : f.modes.front());
  if (!f.budgets.empty()) g.vram_budget = parse_vram_budget(f.budgets.front());
  g.context = f.context;
  g.threads = f.resolved_threads();
  return g;
}

}  // namespace cllm::cli
