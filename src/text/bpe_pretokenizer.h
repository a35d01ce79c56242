// The BPE pre-tokenizer: the text between added tokens (already normalized) is cut into pieces
// by the spec's steps in order, as the Hugging Face library does:
//   - Split: a regex's matches and the text between them, kept as its behavior says (isolated,
//     removed, merged with the previous or next piece, contiguous runs), optionally inverted;
//     Digits is a Split on \p{N};
//   - ByteLevel: ' ' before a piece that does not start with one (add_prefix_space), then
//     GPT-2's pattern (use_regex); the byte mapping itself is the model's business;
//   - Metaspace: ' ' becomes the replacement ("▁"), which is put before the piece (always, or
//     only before the piece that starts the input), and the piece is cut before each one.
// The regexes are bpe_regex.h's.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "text/bpe_regex.h"
#include "text/bpe_spec.h"

namespace cllm {

class BpePretokenizer {
 public:
  // Compiles the steps' regexes; one that does not compile is refused naming origin.
  BpePretokenizer(const std::vector<BpePreStep>& steps, const std::string& origin);
  ~BpePretokenizer();
  BpePretokenizer(const BpePretokenizer&) = delete;
  BpePretokenizer& operator=(const BpePretokenizer&) = delete;

  // The pieces of text (non-empty), in order. at_start: text begins the input (Metaspace's
  // prepend_scheme "first" prepends only there).
  void split(const std::string& text, bool at_start, std::vector<std::string>& pieces) const;

 private:
  struct Piece {
    std::string text;
    bool at_start;
  };
  struct Step {
    BpePreStep spec;
    std::unique_ptr<BpeRegex> regex;  // split; byte_level with use_regex: GPT-2's; metaspace with split
  };
  void apply(const Step& step, Piece piece, std::vector<Piece>& out) const;
  std::vector<Step> steps_;
};

}  // namespace cllm
