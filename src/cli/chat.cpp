#include "cli/chat.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "common/error.h"
#include "common/log.h"
#include "common/timer.h"
#include "model/chat_session.h"

namespace cllm::cli {

namespace {

void out(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

// One message: a line, joined with the next ones while it ends in '\'. False at end of input.
bool read_message(std::istream& in, std::string* msg) {
  msg->clear();
  std::string line;
  bool any = false;
  while (std::getline(in, line)) {
    any = true;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty() && line.back() == '\\') {
      line.pop_back();
      *msg += line + "\n";
      continue;
    }
    *msg += line;
    return true;
  }
  return any;
}

// printf into a std::string, for the fixed-width summary lines.
template <class... Args>
std::string format(const char* fmt, Args... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

}  // namespace

void add_chat_flags(CLI::App* run, ChatArgs& a) {
  run->add_flag("--chat", a.chat,
                "Interactive chat in the model's chat format (alias -cnv): one message per line of stdin, "
                "-p is the first; Ctrl-D or /exit ends");
  run->add_option("--system-prompt,--system", a.system,
                  "The chat's system prompt (alias -sys); without it, the template's default if it has one");
  run->add_option("--chat-template", a.template_name,
                  "Chat format instead of the model's own template: " + chat_template_names() +
                      " (also mistral = mistral-v3, tinyllama = zephyr)")
      ->check([](const std::string& name) {
        try {
          chat_template_from_name(name);
          return std::string();
        } catch (const std::exception& e) {
          return std::string(e.what());
        }
      });
  run->add_flag("--verbose-prompt", a.verbose_prompt, "Print the prompt's tokens (each chat turn's) on stderr");
}

void print_prompt_tokens(const Tokenizer& tok, const std::vector<int>& ids, const std::string& label) {
  std::string s = "codecllm: " + label + ": " + std::to_string(ids.size()) + " tokens: '" + tok.decode(ids, true) + "'\n";
  for (int id : ids) s += format("%6d -> '", id) + tok.display(id) + "'\n";
  std::fwrite(s.data(), 1, s.size(), stderr);
  std::fflush(stderr);
}

int run_chat(const ForwardFn& forward, int context, int n_vocab, const Tokenizer& tok, const SamplerParams& sampling,
             const ChatArgs& a, const std::string& first_message, int n_predict) {
  std::string why;
  ChatOptions opt;
  opt.chat = chat_template_for(tok, a.template_name, &why);
  opt.system = a.system;
  opt.n_predict = n_predict;
  opt.sampling = sampling;
  ChatSession session(forward, context, n_vocab, tok, opt);
  log_info(cat("chat: format ", opt.chat.name, " (", why, "), end of turn '",
               tok.piece(session.end_of_turn_id()), "'; one message per line, a line ending in \\ continues, "
               "Ctrl-D or /exit ends"));

  const bool echo = !isatty(STDIN_FILENO);  // piped input: show the messages in the transcript
  std::string pending = first_message;
  double prompt_ms = 0, eval_ms = 0, sample_ms = 0;
  int n_prompt = 0, n_eval = 0, n_sampled = 0;
  Timer total;
  for (;;) {
    std::string msg;
    out("> ");
    if (!pending.empty()) {
      msg.swap(pending);
      out(msg + "\n");
    } else {
      if (!read_message(std::cin, &msg)) {
        out("\n");
        break;
      }
      if (echo) out(msg + "\n");
    }
    if (msg == "/exit") break;
    if (msg.find_first_not_of(" \t\n") == std::string::npos) continue;
    if (a.verbose_prompt) print_prompt_tokens(tok, session.next_prompt(msg), cat("turn ", session.turns() + 1));
    const ChatTurn t = session.turn(msg, out);
    out("\n");
    prompt_ms += t.prompt_ms;
    eval_ms += t.eval_ms;
    sample_ms += t.sample_ms;
    n_prompt += static_cast<int>(t.prompt.size());
    n_eval += t.n_eval;
    n_sampled += static_cast<int>(t.reply.size());
    if (t.context_full) {
      log_info(cat("(the context of ", context, " tokens is full: the chat ends; use a larger -c)"));
      break;
    }
  }

  log_info("");
  log_info(cat("codecllm: chat: ", session.turns(), " turns, ", session.position(), " tokens in the context of ",
               context));
  log_info(format("codecllm: %16s = %10.2f ms / %5d tokens", "prompt eval time", prompt_ms, n_prompt));
  log_info(format("codecllm: %16s = %10.2f ms / %5d runs", "eval time", eval_ms, n_eval));
  log_info(format("codecllm: %16s = %10.2f ms / %5d tokens", "sampling time", sample_ms, n_sampled));
  log_info(format("codecllm: %16s = %10.2f ms", "total time", total.ms()));
  const double tok_s = n_eval > 0 && eval_ms > 0 ? n_eval * 1e3 / eval_ms : 0.0;
  const double ms_tok = n_eval > 0 ? eval_ms / n_eval : 0.0;
  log_info(format("# %d tokens: %.2f tok/s, %.3f ms/tok, logits hash %016llx", n_sampled, tok_s, ms_tok,
                  static_cast<unsigned long long>(session.last_logits_hash())));
  return 0;
}

}  // namespace cllm::cli
