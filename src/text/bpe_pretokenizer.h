// The byte-level BPE pre-tokenizer: a fragment of text is split by the spec's regexes in order
// (Split, behavior Isolated: the matches and the text between them are both pieces), then
// ByteLevel's add_prefix_space, then (use_regex) GPT-2's pattern. The regexes are written for
// the Hugging Face library's Oniguruma; they are translated to PCRE2 (UTF, Unicode properties,
// JIT where available) so that both split every text the same way.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "text/bpe_spec.h"

namespace cllm {

// GPT-2's pattern, which ByteLevel with use_regex applies.
extern const char* const kGpt2SplitPattern;

class BpePretokenizer {
 public:
  // Compiles spec.splits (and GPT-2's pattern with byte_level_regex); a regex that does not
  // compile is refused naming origin, the pattern and its translation.
  BpePretokenizer(const BpeSpec& spec, const std::string& origin);
  ~BpePretokenizer();
  BpePretokenizer(const BpePretokenizer&) = delete;
  BpePretokenizer& operator=(const BpePretokenizer&) = delete;

  // The pieces of text (non-empty; ' ' prepended where add_prefix_space says), in order.
  void split(const std::string& text, std::vector<std::string>& pieces) const;

 private:
  class Regex;
  std::vector<std::unique_ptr<Regex>> regexes_;  // spec.splits (+ GPT-2's with byte_level_regex)
  size_t n_before_prefix_ = 0;                   // the regexes that run before add_prefix_space
  bool add_prefix_space_ = false;
};

}  // namespace cllm
