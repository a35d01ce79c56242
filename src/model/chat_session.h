// A conversation with a model, turn by turn, on any engine (ForwardFn). Each turn renders the
// whole conversation in the model's chat format (exactly as its template does) and feeds only
// what the KV cache does not hold yet: when the rendering starts with the text the cache spells
// (the earlier prompts and the reply as sampled), only the rest, usually the previous reply's end
// of turn, the new message and the assistant's header; otherwise everything after the first
// token where the rendering's ids and the cache's differ. Where a
// template rewrites earlier turns (Mistral v3 moves the system prompt to the last message, Qwen3
// drops earlier thinking) the cache is refed from there. The reply is sampled until the format's
// end-of-turn token (or another end-of-generation token, -n tokens, or a full context); the stop
// token is not fed, the next rendering writes the end of turn itself.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/generate.h"
#include "model/sampler.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace cllm {

// The chat format for a model: the named one (--chat-template) when name is not empty, else the
// model's stored template recognised now, else the format compress recorded
// (tokenizer.chat_format). *why says which. Throws naming the formats to choose from when the
// model has none or one codecllm cannot render.
ChatTemplate chat_template_for(const Tokenizer& tok, const std::string& name, std::string* why);

// A conversation rendered for the assistant's next reply (the generation prompt appended), BOS
// first when the template does not write it and the tokenizer adds one.
std::vector<ChatPiece> chat_render_prompt(const Tokenizer& tok, const ChatTemplate& t,
                                          const std::vector<ChatMessage>& messages, const ChatSpecials& sp);

struct ChatOptions {
  ChatTemplate chat;     // the format (format none: refused)
  std::string system;    // the system prompt ("" = none, or the template's default)
  int n_predict = -1;    // tokens per reply; -1: until the end of the turn or a full context
  SamplerParams sampling;
};

struct ChatTurn {
  int pos = 0;                 // where prompt[0] went in the KV cache (what was there from pos on is replaced)
  std::vector<int> prompt;     // fed for this turn: the previous reply's end, the message, the assistant header
  std::vector<int> reply;      // sampled ids, the stop token included when it ended the reply
  std::string text;            // the reply's text
  bool end_of_turn = false;    // ended at the end-of-turn or an end-of-generation token
  bool context_full = false;   // ended because the context was full
  double prompt_ms = 0, eval_ms = 0, sample_ms = 0;
  int n_eval = 0;              // single-token forward passes
};

class ChatSession {
 public:
  // Throws when the format is none, the template refuses the system prompt, or the tokenizer
  // lacks a token the format needs.
  ChatSession(ForwardFn forward, int context, int n_vocab, const Tokenizer& tok, const ChatOptions& opt);

  // The tokens the next turn would feed for this message, and where (for --verbose-prompt and tests).
  std::vector<int> next_prompt(const std::string& user, int* pos = nullptr) const;
  // Feeds the message and samples the reply; on_text receives its text as it completes. Throws
  // when the message does not fit in what is left of the context.
  ChatTurn turn(const std::string& user, const std::function<void(const std::string&)>& on_text = {});

  int position() const { return pos_; }  // tokens in the KV cache
  int turns() const { return turns_; }
  uint32_t seed() const { return sampler_.seed(); }
  uint64_t last_logits_hash() const { return logits_hash_; }
  int end_of_turn_id() const { return eot_; }

 private:
  ForwardFn forward_;
  int context_, n_vocab_, n_sample_;
  const Tokenizer& tok_;
  ChatOptions opt_;
  ChatSpecials specials_;
  Sampler sampler_;
  int eot_ = -1;
  std::vector<ChatMessage> messages_;  // the conversation so far, the system prompt first
  std::vector<int> cached_;            // the tokens in the KV cache, position = index
  std::string cached_text_;            // the text they spell, special tokens as their pieces
  int pos_ = 0, turns_ = 0;

  // The conversation with this message, rendered with the generation prompt (BOS first when the
  // template does not write it and the tokenizer adds one).
  std::vector<ChatPiece> rendered(const std::string& user) const;
  uint64_t logits_hash_ = 0;
};

}  // namespace cllm
