// One request's generation, token by token: what it asks for (GenerationInput), what it gave
// (GenerationOutput), and the state between its tokens (Generation: the sampler that has seen
// the prompt, the stop strings, the text decoder). The scheduler (slot_scheduler) runs the
// forward passes; a Generation turns each pass's logits into the next token and its text, and
// says when the request is over: an end-of-generation token, the chat format's end of turn, a
// stop string, max_tokens, a full context or cancellation.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/timer.h"
#include "model/sampler.h"
#include "server/stop_matcher.h"
#include "text/tokenizer.h"

namespace cllm::server {

enum class FinishReason { stop, length, cancelled };
const char* finish_reason_name(FinishReason r);  // "stop", "length" (OpenAI's), "cancelled"

struct GenerationInput {
  std::vector<int> prompt;        // token ids, BOS included where the model wants it; not empty
  SamplerParams sampling;
  int max_tokens = -1;            // -1: until the end of text or a full context
  std::vector<std::string> stop;  // strings that end the text, not included
  int end_of_turn = -1;           // chat: the format's end-of-turn id (-1: none beyond the tokenizer's EOG)
  bool ignore_eos = false;        // end-of-generation tokens are text like any other (load tests)
};

struct GenerationOutput {
  std::string text;            // the generated text, cut before a stop string
  int prompt_tokens = 0;
  int reused_tokens = 0;       // prompt tokens already in the KV cache (not computed again)
  int completion_tokens = 0;   // sampled tokens, the end-of-generation token not counted
  FinishReason finish = FinishReason::stop;
  double first_token_ms = 0;   // from the start (the slot taking the request) to the first sampled token
  double decode_ms = 0;        // the passes that fed its sampled tokens (a batched pass counts whole)
  int n_decode = 0;            // their count
};

using TextSink = std::function<void(const std::string&)>;

class Generation {
 public:
  // in and tok must outlive this object. n_sample: the logits sampled from (the tokenizer's
  // vocabulary where the model's rows are longer). on_text receives the text as it can be sent.
  Generation(const GenerationInput& in, const Tokenizer& tok, int n_sample, TextSink on_text);

  // logits: the row after the last token fed (the prompt's last, or the token next() returned).
  // Picks the next token; touches only this generation's sampler, so the scheduler samples
  // its slots on several threads at once.
  int sample(const float* logits);
  // Takes the sampled token: streams its text; returns the token to feed next, or -1 when the
  // generation has ended (then output() is final). room: whether the sequence has a position
  // left for that token (false ends it with finish "length").
  int next(int token, bool room);
  // Ends it as cancelled (the client left, or the server stops), letting out the text held back.
  void cancel();

  bool finished() const { return finished_; }
  GenerationOutput& output() { return out_; }  // the scheduler adds prompt counts and pass times

 private:
  const GenerationInput& in_;
  const Tokenizer& tok_;
  const int n_sample_;
  TextSink on_text_;
  Sampler sampler_;
  StopMatcher stops_;
  TokenDecoder decoder_;
  Timer since_start_;
  GenerationOutput out_;
  bool finished_ = false;

  void emit(const std::string& s);
  void end(FinishReason why);
};

}  // namespace cllm::server
