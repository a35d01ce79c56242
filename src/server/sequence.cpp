#include "server/sequence.h"

#include <algorithm>

#include "common/error.h"
#include "common/timer.h"
#include "server/stop_matcher.h"

namespace cllm::server {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
  }
  return "stop";
}

Sequence::Sequence(ForwardFn forward, int context, int n_vocab, const Tokenizer& tok)
    : forward_(std::move(forward)),
      context_(context),
      n_vocab_(n_vocab),
      n_sample_(std::min(n_vocab, tok.n_vocab())),
      tok_(tok) {}

// The tokens the cache already holds at the prompt's positions; at least the last prompt token
// is always fed, since its logits are the ones sampled from.
int Sequence::reusable_prefix(const std::vector<int>& prompt) const {
  size_t same = 0;
  while (same < cached_.size() && same + 1 < prompt.size() && cached_[same] == prompt[same]) ++same;
  return static_cast<int>(same);
}

GenerationOutput Sequence::run(const GenerationInput& in, const std::function<void(const std::string&)>& on_text,
                               const std::function<bool()>& should_stop) {
  const int n_prompt = static_cast<int>(in.prompt.size());
  if (n_prompt == 0 || n_prompt > context_)
    fail("the prompt is ", n_prompt, " tokens; a prompt needs 1 to ", context_, " (the context)");
  Sampler sampler(in.sampling);
  for (int id : in.prompt) sampler.accept(id);
  const int reused = reusable_prefix(in.prompt);
  Timer timer;
  const float* logits = nullptr;
  try {
    cached_.resize(static_cast<size_t>(reused));
    logits = forward_(in.prompt.data() + reused, n_prompt - reused, reused);
    cached_.insert(cached_.end(), in.prompt.begin() + reused, in.prompt.end());
    const double prompt_ms = timer.ms();
    GenerationOutput out = sample_loop(in, logits, sampler, on_text, should_stop);
    out.first_token_ms += prompt_ms;
    out.prompt_tokens = n_prompt;
    out.reused_tokens = reused;
    return out;
  } catch (...) {
    cached_.clear();  // the cache may hold a half-fed prompt
    throw;
  }
}

GenerationOutput Sequence::sample_loop(const GenerationInput& in, const float* logits, Sampler& sampler,
                                       const std::function<void(const std::string&)>& on_text,
                                       const std::function<bool()>& should_stop) {
  GenerationOutput out;
  Timer since_start, timer;
  StopMatcher stops(in.stop);
  TokenDecoder decoder(tok_);
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    out.text += s;
    if (on_text) on_text(s);
  };
  for (;;) {
    if (should_stop && should_stop()) {
      out.finish = FinishReason::cancelled;
      break;
    }
    const int next = sampler.sample(logits, n_sample_);
    if (out.completion_tokens == 0) out.first_token_ms = since_start.ms();
    sampler.accept(next);
    if (next == in.end_of_turn || tok_.is_eog(next)) break;  // finish: stop
    ++out.completion_tokens;
    emit(stops.push(decoder.push(next)));
    if (stops.stopped()) break;
    if (in.max_tokens >= 0 && out.completion_tokens >= in.max_tokens) {
      out.finish = FinishReason::length;
      break;
    }
    const int pos = static_cast<int>(cached_.size());
    if (pos >= context_) {
      out.finish = FinishReason::length;
      break;
    }
    timer.reset();
    logits = forward_(&next, 1, pos);
    out.decode_ms += timer.ms();
    ++out.n_decode;
    cached_.push_back(next);
  }
  if (!stops.stopped()) emit(stops.push(decoder.flush()));
  emit(stops.finish());
  return out;
}

}  // namespace cllm::server
