#include "model/generate.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "common/timer.h"

namespace cllm {

uint64_t logits_hash(const float* logits, int n) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64 offset basis
  const auto* b = reinterpret_cast<const uint8_t*>(logits);
  for (size_t i = 0; i < static_cast<size_t>(n) * sizeof(float); ++i) {
    h ^= b[i];
    h *= 0x100000001b3ull;  // FNV prime
  }
  return h;
}

GenerateResult generate(const ForwardFn& forward, int context, int n_vocab, const Tokenizer& tok,
                        const std::string& prompt, const GenerateOptions& opt,
                        const std::function<void(const std::string&)>& on_text) {
  if (tok.n_vocab() > n_vocab)
    fail("the tokenizer has ", tok.n_vocab(), " tokens but the model only ", n_vocab);
  // A model may pad its vocabulary past the tokenizer's: ids the tokenizer cannot print are
  // never sampled.
  const int n_sample = std::min(n_vocab, tok.n_vocab());

  GenerateResult r;
  r.prompt = tok.encode(prompt, opt.add_bos);
  const int n_prompt = static_cast<int>(r.prompt.size());
  if (n_prompt == 0) fail("the prompt is empty and no BOS is added (--no-bos): nothing to start from");
  if (n_prompt > context)
    fail("the prompt is ", n_prompt, " tokens, longer than the context of ", context,
         " tokens: use a shorter prompt or a larger -c");

  Sampler sampler(opt.sampling);
  r.seed = sampler.seed();
  TokenDecoder decoder(tok);
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    r.text += s;
    if (on_text) on_text(s);
  };
  for (int id : r.prompt) {
    sampler.accept(id);
    const std::string s = decoder.push(id);
    if (opt.echo_prompt) emit(s);
  }
  if (!opt.echo_prompt) decoder.flush();

  // the prompt, as one batch
  Timer timer;
  const float* logits = forward(r.prompt.data(), n_prompt, 0);
  r.prompt_ms = timer.ms();

  int pos = n_prompt;
  while (opt.n_predict < 0 || static_cast<int>(r.generated.size()) < opt.n_predict) {
    // sample the next token
    timer.reset();
    const int next = sampler.sample(logits, n_sample);
    r.sample_ms += timer.ms();
    sampler.accept(next);
    r.generated.push_back(next);
    if (tok.is_eog(next)) {  // EOS or any other end-of-generation token (<|eot_id|>, <|im_end|> ...)
      r.hit_eos = true;
      break;
    }
    emit(decoder.push(next));
    if (opt.n_predict >= 0 && static_cast<int>(r.generated.size()) == opt.n_predict) break;
    if (pos >= context) {
      r.context_full = true;
      break;
    }
    // feed it back
    timer.reset();
    logits = forward(&next, 1, pos);
    r.eval_ms += timer.ms();
    ++r.n_eval;
    ++pos;
  }
  emit(decoder.flush());
  r.logits_hash = logits_hash(logits, n_vocab);
  return r;
}

}  // namespace cllm
