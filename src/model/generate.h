// Text generation on any engine: tokenize the prompt, run it as one batch, then sample and
// feed back one token at a time, streaming the text. The CPU engine and the GPU runtime both
// plug in through ForwardFn, so `run` behaves the same on either.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/sampler.h"
#include "text/tokenizer.h"

namespace cllm {

// Runs tokens[0..n) at positions pos .. pos+n-1 and returns the last token's logits
// (n_vocab floats, valid until the next call).
using ForwardFn = std::function<const float*(const int* tokens, int n, int pos)>;

struct GenerateOptions {
  int n_predict = -1;       // tokens to sample; -1: until EOS or the context is full
  bool add_bos = true;      // start the prompt with BOS
  bool echo_prompt = true;  // stream the prompt's text before the generated text
  SamplerParams sampling;
};

struct GenerateResult {
  std::vector<int> prompt;     // the prompt's ids, BOS included
  std::vector<int> generated;  // sampled ids, the final EOS included when it ended the text
  std::string text;            // everything streamed: the prompt's text (if echoed), then the new text
  bool hit_eos = false;        // stopped at EOS or another end-of-generation token (Tokenizer::is_eog)
  bool context_full = false;   // stopped because the context was full
  uint32_t seed = 0;           // the sampler's seed
  uint64_t logits_hash = 0;    // logits_hash() of the logits the last token was sampled from
  double prompt_ms = 0;        // the prompt's forward pass
  int n_eval = 0;              // single-token forward passes
  double eval_ms = 0;
  double sample_ms = 0;
};

// Throws (exit status 1 in the CLI) when the prompt is empty without BOS, or longer than the
// context. on_text receives each piece of text as soon as it is complete.
GenerateResult generate(const ForwardFn& forward, int context, int n_vocab, const Tokenizer& tok,
                        const std::string& prompt, const GenerateOptions& opt,
                        const std::function<void(const std::string&)>& on_text = {});

// FNV-1a (64-bit) of the logits' bytes: a regression check for the whole forward pass.
uint64_t logits_hash(const float* logits, int n);

}  // namespace cllm
