// `codecllm run --chat` (-cnv): an interactive conversation on stdin/stdout in the model's chat
// format, on whatever engine `run` built (model/chat_session.h does the turns; this file reads
// the messages, prints the replies and the statistics). Also --verbose-prompt's token listing.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "model/generate.h"
#include "model/sampler.h"
#include "text/tokenizer.h"

namespace cllm::cli {

struct ChatArgs {
  bool chat = false;            // --chat / -cnv
  std::string system;           // -sys / --system-prompt / --system
  std::string template_name;    // --chat-template NAME ("" = the model's)
  bool verbose_prompt = false;  // --verbose-prompt
};

// Declares --chat, --system-prompt, --chat-template and --verbose-prompt on `run`. (-cnv and
// -sys, llama.cpp's spellings, are rewritten to --chat / --system-prompt in main: CLI11 cannot
// declare a multi-letter name after one dash.)
void add_chat_flags(CLI::App* run, ChatArgs& a);

// The conversation: -p (first_message, if any) is the first user message, then one message per
// line of stdin (a line ending in '\' continues on the next), until end of input or "/exit".
// Each reply is at most n_predict tokens (-1: until the end of the turn). Returns the exit status.
int run_chat(const ForwardFn& forward, int context, int n_vocab, const Tokenizer& tok, const SamplerParams& sampling,
             const ChatArgs& a, const std::string& first_message, int n_predict);

// --verbose-prompt: "<label>: N tokens" and the text with special tokens written out, then one
// "id -> 'piece'" line per token, on stderr (as llama.cpp prints its prompt).
void print_prompt_tokens(const Tokenizer& tok, const std::vector<int>& ids, const std::string& label);

}  // namespace cllm::cli
