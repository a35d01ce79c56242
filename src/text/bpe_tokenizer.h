// BPE as the Hugging Face tokenizers library runs a tokenizer.json whose model is "BPE" (Llama 3,
// Qwen, SmolLM, Mistral, Phi, Gemma; GPT-2):
//   1. added tokens written in the text ("<|eot_id|>") are cut out first, leftmost-longest
//      (bpe_added_tokens.h); the "normalized" ones after the text between them has gone through
//      the normalizer (bpe_normalizer.h: NFC, Replace, Prepend ...);
//   2. each remaining fragment is cut into pieces by the pre-tokenizer's steps (Split with its
//      regexes, ByteLevel, Digits, Metaspace: bpe_pretokenizer.h);
//   3. each piece starts as one token per byte (byte-level) or per character (SentencePiece
//      style; a character without a token becomes its <0xNN> tokens with byte_fallback, else
//      the unknown token, else nothing: so a byte-level vocabulary that lacks some bytes drops
//      them, as the library does), and is merged pairwise by rank (lowest rank first, leftmost on
//      ties); with ignore_merges a piece that is itself a token is taken whole. Results are
//      cached per piece.
// Text that is not valid UTF-8 is first repaired (utf8.h: each ill-formed subpart -> U+FFFD),
// which is what Python's bytes.decode(errors="replace") hands the library.
//
// What the tokenizer is (BpeSpec, read from tokenizer.json, a GGUF vocabulary or the compact
// form) is bpe_spec.h; the byte-level alphabet ("Ġ" for a space) bpe_byte_alphabet.h. This
// header includes both.
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
  // Checks the spec (merges name existing tokens whose concatenation is a token, added and
  // special ids in range, regexes compile); origin names it in errors.
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
  // Byte-level: the bytes that have no token of their own (dropped when they occur).
  int n_missing_bytes() const;

 private:
  struct Impl;
  BpeSpec spec_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cllm
