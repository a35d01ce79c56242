// One model's sequence: the KV cache of its engine and the tokens it holds. A request's prompt
// is fed from the first token where it differs from what the cache holds (the previous
// request's prompt and reply), so a chat that resends its history, or a repeated prompt,
// computes only its new tail. Then tokens are sampled until an end-of-generation token, the
// chat format's end of turn, a stop string, max_tokens, a full context or cancellation.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "model/generate.h"
#include "model/sampler.h"
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
};

struct GenerationOutput {
  std::string text;            // the generated text, cut before a stop string
  int prompt_tokens = 0;
  int reused_tokens = 0;       // prompt tokens already in the KV cache (not computed again)
  int completion_tokens = 0;   // sampled tokens, the end-of-generation token not counted
  FinishReason finish = FinishReason::stop;
  double first_token_ms = 0;   // from the call to the first sampled token (the prompt's pass)
  double decode_ms = 0;        // the single-token passes after it
  int n_decode = 0;            // their count
};

class Sequence {
 public:
  // forward, the tokenizer and the engine behind them must outlive this object.
  Sequence(ForwardFn forward, int context, int n_vocab, const Tokenizer& tok);

  // Runs a request. on_text receives the text as it can be sent; should_stop is asked before
  // each token (a client gone: finish cancelled). Throws when the prompt does not fit the
  // context (callers check first) or the engine fails; the cache is then forgotten.
  GenerationOutput run(const GenerationInput& in, const std::function<void(const std::string&)>& on_text,
                       const std::function<bool()>& should_stop);

  int context() const { return context_; }

 private:
  ForwardFn forward_;
  int context_, n_vocab_, n_sample_;
  const Tokenizer& tok_;
  std::vector<int> cached_;  // the tokens in the KV cache, position = index

  int reusable_prefix(const std::vector<int>& prompt) const;
  GenerationOutput sample_loop(const GenerationInput& in, const float* logits, Sampler& sampler,
                               const std::function<void(const std::string&)>& on_text,
                               const std::function<bool()>& should_stop);
};

}  // namespace cllm::server
