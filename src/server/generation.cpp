#include "server/generation.h"

namespace cllm::server {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
  }
  return "stop";
}

Generation::Generation(const GenerationInput& in, const Tokenizer& tok, int n_sample, TextSink on_text)
    : in_(in), tok_(tok), n_sample_(n_sample), on_text_(std::move(on_text)), sampler_(in.sampling), stops_(in.stop),
      decoder_(tok) {
  for (int id : in.prompt) sampler_.accept(id);  // repetition penalties see the prompt
}

void Generation::emit(const std::string& s) {
  if (s.empty()) return;
  out_.text += s;
  if (on_text_) on_text_(s);
}

int Generation::sample(const float* logits) { return sampler_.sample(logits, n_sample_); }

int Generation::next(int token, bool room) {
  if (out_.completion_tokens == 0) out_.first_token_ms = since_start_.ms();
  sampler_.accept(token);
  if (!in_.ignore_eos && (token == in_.end_of_turn || tok_.is_eog(token))) {
    end(FinishReason::stop);
    return -1;
  }
  ++out_.completion_tokens;
  emit(stops_.push(decoder_.push(token)));
  if (stops_.stopped()) {
    end(FinishReason::stop);
    return -1;
  }
  if ((in_.max_tokens >= 0 && out_.completion_tokens >= in_.max_tokens) || !room) {
    end(FinishReason::length);
    return -1;
  }
  return token;
}

void Generation::cancel() {
  if (!finished_) end(FinishReason::cancelled);
}

void Generation::end(FinishReason why) {
  out_.finish = why;
  finished_ = true;
  if (!stops_.stopped()) emit(stops_.push(decoder_.flush()));  // bytes of an unfinished character
  emit(stops_.finish());
}

}  // namespace cllm::server
