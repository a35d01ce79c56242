// codecllm run MODEL.cllm -p PROMPT: generate text, streamed to stdout token by token, with
// llama.cpp's sampling flags and a timing summary on stderr.
#include <climits>
#include <cstdio>
#include <random>

#include "cli/chat.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "common/file_io.h"
#include "common/log.h"
#include "common/timer.h"
#include "format/cllm_reader.h"
#include "model/generate.h"
#include "runtime/device_select.h"
#include "runtime/gpu_engine.h"
#include "runtime/model_engine.h"
#include "text/tokenizer.h"

namespace cllm::cli {

namespace {

struct RunArgs {
  std::string model_pos, model_opt, model;  // MODEL.cllm given as a positional or with -m
  std::string prompt, prompt_file;
  int n_predict = -1;
  SamplerParams sampling;
  EngineFlags engine;  // --device, --mode, --vram-budget, -t, -c, --no-verify (cli/engine_flags.h)
  bool no_bos = false;
  ChatArgs chat;  // --chat, --system-prompt, --chat-template, --verbose-prompt (cli/chat.h)
};

// A value in (lo, hi]: CLI11's Range is closed on both ends.
CLI::Validator half_open_range(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not a number";
        if (!(v > lo && v <= hi)) return cat("value ", s, " not in range (", lo, ", ", hi, "]");
        return "";
      },
      cat("FLOAT in (", lo, " - ", hi, "]"));
}

// A value in [lo, hi]. CLI11's Range lets NaN through (every comparison with NaN is false).
CLI::Validator closed_range(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not a number";
        if (!(v >= lo && v <= hi)) return cat("value ", s, " not in range [", lo, ", ", hi, "]");
        return "";
      },
      cat("FLOAT in [", lo, " - ", hi, "]"));
}

// x > 0 (CLI::PositiveNumber lets NaN through).
CLI::Validator positive() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not a number";
        if (!(v > 0)) return "value " + s + " must be > 0";
        return "";
      },
      "FLOAT > 0");
}

// x >= 0 (CLI::NonNegativeNumber's message would print the largest double in full).
CLI::Validator non_negative() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not a number";
        if (!(v >= 0)) return "value " + s + " must be >= 0";
        return "";
      },
      "FLOAT >= 0");
}

// printf into a std::string (the summary lines are fixed-width, as llama.cpp's).
template <class... Args>
std::string format(const char* fmt, Args... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

// "codecllm: prompt eval time =  12.34 ms /  10 tokens (  1.23 ms per token, 810.37 tokens per second)"
std::string timing_line(const char* what, double ms, int n, const char* unit) {
  std::string line = format("codecllm: %16s = %10.2f ms / %5d %-6s", what, ms, n, unit);
  if (n > 0 && ms > 0)
    line += format(" (%8.2f ms per token, %8.2f tokens per second)", ms / n, n * 1e3 / ms);
  return line;
}

// The GPU engine's lines for the summary: memory, decoder, PCIe and stalls (issue #4).
void log_gpu_summary(const GpuEngine& e, double eval_ms) {
  const GpuStats& s = e.stats();
  log_info(format("codecllm: %16s = %s (plan: %s)", "VRAM peak", format_gib(s.vram_peak).c_str(),
                  e.memory().describe().c_str()));
  if (e.mode() == Mode::full || e.mode() == Mode::fused) return;  // no ring: nothing decoded per token
  const double gb = 1e9;
  log_info(format("codecllm: %16s = %10.2f ms / %6.2f GB decoded (%7.1f GB/s), %llu layer steps", "decode time",
                  s.decode_ms, s.decoded_bytes / gb, s.decode_ms > 0 ? s.decoded_bytes / gb / (s.decode_ms / 1e3) : 0.0,
                  static_cast<unsigned long long>(s.steps)));
  if (s.h2d_bytes > 0)
    log_info(format("codecllm: %16s = %10.2f ms / %6.2f GB copied (%7.1f GB/s), %s host memory", "host->device",
                    s.h2d_ms, s.h2d_bytes / gb, s.h2d_ms > 0 ? s.h2d_bytes / gb / (s.h2d_ms / 1e3) : 0.0,
                    e.pinned() ? "pinned" : "pageable"));
  if (s.cpu_steps > 0)
    log_info(format("codecllm: %16s = %10.2f ms / %llu layer steps (%.2f ms per layer)", "CPU layers", s.cpu_ms,
                    static_cast<unsigned long long>(s.cpu_steps), s.cpu_ms / s.cpu_steps));
  log_info(format("codecllm: %16s = %10.2f ms (compute waiting for weights; %.1f%% of eval time)", "weight stalls",
                  s.stall_ms, eval_ms > 0 ? 100.0 * s.stall_ms / eval_ms : 0.0));
}

// The model's shape and the engine it runs on, for stderr.
void log_engine(const RunArgs& a, const ModelEngine& e) {
  const LlamaConfig& c = e.config();
  const int context = e.context();
  log_info(cat("model: ", path_basename(a.model), ": dim ", c.dim, ", ", c.n_layers, " layers, ", c.n_heads,
               " heads (", c.n_kv_heads, " kv), ffn ", c.ffn_dim, ", vocab ", c.vocab_size, ", rope ",
               rope_layout_name(c.rope_layout), c.rope_scaling.type == "llama3" ? " (llama3 scaling)" : ""));
  if (const GpuEngine* gpu = e.gpu.get()) {
    log_info(cat("device: cuda (", gpu->device_name(), "), mode ", mode_name(gpu->mode()),
                 gpu->mode() == Mode::hybrid ? " (" + describe_placements(gpu->placements()) + ")" : "",
                 gpu->mode_was_chosen() ? (a.engine.budgets.empty()
                                               ? " (chosen by --mode auto: the fastest that fits)"
                                               : " (planned for --vram-budget " + a.engine.budgets[0] + ")")
                                        : "",
                 ", context ",
                 context, " of ", c.context_length, "; VRAM plan: ", gpu->memory().describe()));
    if (!gpu->plan_summary().empty()) log_info("plan: ", gpu->plan_summary());
  } else {
    log_info(cat("device: cpu (", e.cpu->arithmetic(), "), ", e.cpu->threads(), " threads, context ", context, " of ",
                 c.context_length));
  }
}

// The seed is fixed here so that it can be printed before any output.
GenerateOptions generate_options(const RunArgs& a, const Tokenizer& tok) {
  GenerateOptions gen;
  gen.n_predict = a.n_predict;
  gen.add_bos = a.no_bos ? false : tok.add_bos();
  gen.sampling = a.sampling;
  if (gen.sampling.seed == -1) gen.sampling.seed = std::random_device{}();
  if (gen.sampling.temp > 0) log_info(cat("seed: ", gen.sampling.seed));
  else log_info("sampling: greedy (--temp 0)");
  return gen;
}

// -p's text, or -f's file without its final newline (as llama.cpp's -f).
std::string read_prompt(const RunArgs& a) {
  std::string prompt = a.prompt;
  if (!a.prompt_file.empty()) {
    prompt = read_text_file(a.prompt_file);
    if (!prompt.empty() && prompt.back() == '\n') prompt.pop_back();  // as llama.cpp's -f
  }
  return prompt;
}

// llama.cpp-style summary, then one line for scripts and regression checks.
void log_run_summary(const GenerateResult& r, double load_ms, const Timer& total, const GpuEngine* gpu) {
  const int n_prompt = static_cast<int>(r.prompt.size());
  log_info("");
  const int n_sampled = static_cast<int>(r.generated.size());
  log_info(format("codecllm: %16s = %10.2f ms", "load time", load_ms));
  log_info(timing_line("prompt eval time", r.prompt_ms, n_prompt, "tokens"));
  log_info(timing_line("eval time", r.eval_ms, r.n_eval, "runs"));
  log_info(timing_line("sampling time", r.sample_ms, n_sampled, "tokens"));
  log_info(format("codecllm: %16s = %10.2f ms / %5d tokens", "total time", total.ms(), n_prompt + n_sampled));
  if (gpu) log_gpu_summary(*gpu, r.prompt_ms + r.eval_ms);
  // calm's statistics line: decode speed (single-token steps) and a hash of the final logits.
  const double tok_s = r.n_eval > 0 && r.eval_ms > 0 ? r.n_eval * 1e3 / r.eval_ms : 0.0;
  const double ms_tok = r.n_eval > 0 ? r.eval_ms / r.n_eval : 0.0;
  log_info(format("# %d tokens: %.2f tok/s, %.3f ms/tok, logits hash %016llx", n_sampled, tok_s, ms_tok,
                  static_cast<unsigned long long>(r.logits_hash)));
}

int run_run(const RunArgs& a) {
  Timer total;
  const Device device = select_device(a.engine.device);
  check_engine_flags(a.engine, device);
  const int threads = a.engine.resolved_threads();

  // Load: open (and verify) the container; the CPU engine decodes every tensor (bf16 and f16
  // models' in their own dtype, others' to fp32), the GPU engine loads them for its memory mode. Then the tokenizer.
  Timer load;
  CllmOpenOptions open_opt;
  open_opt.verify_checksums = !a.engine.no_verify;
  open_opt.threads = threads;
  const CllmFile file = CllmFile::open(a.model, open_opt);
  ModelEngine e(file, device, gpu_options(a.engine));
  const LlamaConfig& c = e.config();
  const int context = e.context();
  const double load_ms = load.ms();
  log_engine(a, e);

  const GenerateOptions gen = generate_options(a, *e.tok);
  const std::string prompt = read_prompt(a);
  const Tokenizer& tok = *e.tok;
  const ForwardFn forward = e.forward();
  if (a.chat.chat) return run_chat(forward, context, c.vocab_size, tok, gen.sampling, a.chat, prompt, a.n_predict);
  if (a.chat.verbose_prompt) print_prompt_tokens(tok, tok.encode(prompt, gen.add_bos), "prompt");
  const GenerateResult r = generate(forward, context, c.vocab_size, tok, prompt, gen,
                                    [](const std::string& s) {
                                      std::fwrite(s.data(), 1, s.size(), stdout);
                                      std::fflush(stdout);
                                    });
  std::fputs("\n", stdout);
  std::fflush(stdout);
  if (r.context_full) log_info(cat("(stopped: the context of ", context, " tokens is full)"));
  log_run_summary(r, load_ms, total, e.gpu.get());
  return 0;
}

}  // namespace

void register_run(CLI::App& app, Action& action) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "Generate text with a .cllm model");
  cmd->option_defaults()->always_capture_default();
  auto* pos = cmd->add_option("model", a->model_pos, "The .cllm file (or -m)");
  auto* mopt = cmd->add_option("-m,--model", a->model_opt, "The .cllm file")->envname("CLLM_ARG_MODEL");
  pos->excludes(mopt);
  auto* p = cmd->add_option("-p,--prompt", a->prompt, "Prompt text (empty: start from BOS alone)");
  auto* f = cmd->add_option("-f,--file", a->prompt_file, "Read the prompt from a file")->check(CLI::ExistingFile);
  p->excludes(f);
  cmd->add_option("-n,--n-predict", a->n_predict, "Tokens to generate (-1: until EOS or the context is full)")
      ->check(CLI::Range(-1, INT_MAX));
  cmd->add_option("--temp", a->sampling.temp, "Temperature (0: greedy)")->check(non_negative());
  cmd->add_option("--top-k", a->sampling.top_k, "Top-k sampling (0: off)")->check(CLI::Range(0, INT_MAX));
  cmd->add_option("--top-p", a->sampling.top_p, "Top-p sampling (1: off)")->check(half_open_range(0.0, 1.0));
  cmd->add_option("--min-p", a->sampling.min_p, "Min-p sampling (0: off)")->check(closed_range(0.0, 1.0));
  cmd->add_option("--repeat-penalty", a->sampling.repeat_penalty, "Repeat penalty (1: off)")
      ->check(positive());
  cmd->add_option("--repeat-last-n", a->sampling.repeat_last_n, "Tokens the repeat penalty looks back (-1: all)")
      ->check(CLI::Range(-1, INT_MAX));
  cmd->add_option("-s,--seed", a->sampling.seed, "Sampling seed (-1: random, printed on stderr)")
      ->check(CLI::Range(static_cast<int64_t>(-1), static_cast<int64_t>(UINT32_MAX)));
  add_engine_flags(cmd, a->engine, EngineFlagsFor::one_engine);
  cmd->add_flag("--no-bos", a->no_bos, "Do not start the prompt with BOS");
  add_chat_flags(cmd, a->chat);
  cmd->callback([a, &action] {
    a->model = a->model_pos.empty() ? a->model_opt : a->model_pos;
    if (a->model.empty()) throw CLI::RequiredError("MODEL.cllm (or -m MODEL.cllm)");
    action = [a] { return run_run(*a); };
  });
}

}  // namespace cllm::cli
