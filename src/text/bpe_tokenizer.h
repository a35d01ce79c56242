// Byte-level BPE, the tokenizer of Llama 3/3.1 (and GPT-2), as the Hugging Face tokenizers
// library runs a tokenizer.json whose model is "BPE" and whose pre-tokenizer ends in
// "ByteLevel":
//   1. added tokens written in the text ("<|eot_id|>") are cut out first, leftmost-longest
//      (bpe_added_tokens.h);
//   2. each remaining fragment is split by the pre-tokenizer's regexes (Split, behavior
//      Isolated; PCRE2 with Unicode properties runs them: bpe_pretokenizer.h);
//   3. each piece's bytes are merged pairwise by rank (lowest rank first, leftmost on ties),
//      starting from one token per byte; with ignore_merges a piece that is itself a token is
//      taken whole. Results are cached per piece.
// Text that is not valid UTF-8 is first repaired (utf8.h: each ill-formed subpart -> U+FFFD),
// which is what Python's bytes.decode(errors="replace") hands the library.
//
// What the tokenizer is (BpeSpec, read from tokenizer.json or the compact form) is bpe_spec.h;
// the byte-level alphabet ("Ġ" for a space) bpe_byte_alphabet.h. This header includes both, and
// bpe_pretokenizer.h for GPT-2's split pattern.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/bpe_byte_alphabet.h"
#include "text/bpe_pretokenizer.h"
#include "text/bpe_spec.h"

namespace cllm {

class BpeTokenizer {
 public:
  // Checks the spec (every byte has a token, merges name existing tokens whose concatenation is
  // a token, added ids in range, regexes compile); origin names it in errors.
  BpeTokenizer(BpeSpec spec, const std::string& origin);
  ~BpeTokenizer();
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  // Token ids of text (no BOS; see Tokenizer for that).
  std::vector<int> encode(const std::string& text) const;

  const BpeSpec& spec() const { return spec_; }
  int n_tokens() const { return static_cast<int>(spec_.tokens.size()); }
  // The id of a token given by its raw bytes or an added token's content; -1 when none.
  int find(const std::string& bytes) const;

 private:
  struct Impl;
  BpeSpec spec_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cllm
