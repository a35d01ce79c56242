// Added tokens of a byte-level BPE ("<|eot_id|>") written in the text are cut out before
// anything else, as the Hugging Face library does: leftmost-longest, in two passes (those
// matched on the raw text, then, in what is left once normalized, the "normalized" ones), each swallowing the
// white space around it that its lstrip / rstrip ask for.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "text/bpe_spec.h"

namespace cllm {

// A stretch of the input: text still to tokenize, or an added token already found.
struct BpeFragment {
  std::string text;
  int token = -1;
  bool at_start = false;  // text that begins the input
};

class BpeAddedTokens {
 public:
  // Checks every added token (id in 0..n_tokens-1, content not empty); origin names it in errors.
  BpeAddedTokens(const std::vector<BpeAddedToken>& added, int n_tokens, const std::string& origin);

  // text as fragments: the added tokens found in it and the (non-empty) text between them.
  std::vector<BpeFragment> cut(const std::string& text) const;
  // The first pass alone (the tokens matched on the raw text), then the second on fragments
  // whose text has been normalized since.
  std::vector<BpeFragment> cut_raw(const std::string& text) const;
  void cut_normalized(std::vector<BpeFragment>& frags) const { cut_table(normalized_, frags); }

 private:
  using Table = std::array<std::vector<int>, 256>;  // by first byte, longest first: indexes into added_
  void cut_table(const Table& table, std::vector<BpeFragment>& frags) const;

  std::vector<BpeAddedToken> added_;
  Table raw_, normalized_;
};

}  // namespace cllm
