// Byte-level BPE, the tokenizer of Llama 3/3.1 (and GPT-2), as the Hugging Face tokenizers
// library runs a tokenizer.json whose model is "BPE" and whose pre-tokenizer ends in
// "ByteLevel":
//   1. added tokens written in the text ("<|eot_id|>") are cut out first, leftmost-longest;
//   2. each remaining fragment is split by the pre-tokenizer's regexes (Split, behavior
//      Isolated; PCRE2 with Unicode properties runs them);
//   3. each piece's bytes are merged pairwise by rank (lowest rank first, leftmost on ties),
//      starting from one token per byte; with ignore_merges a piece that is itself a token is
//      taken whole. Results are cached per piece.
// Text that is not valid UTF-8 is first repaired (utf8.h: each ill-formed subpart -> U+FFFD),
// which is what Python's bytes.decode(errors="replace") hands the library.
//
// Tokens are kept as their raw bytes; the byte-level alphabet ("Ġ" for a space) is only the
// spelling in tokenizer.json and in piece().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cllm {

struct BpeAddedToken {
  int id = -1;
  std::string content;    // the text that stands for the token
  bool special = true;    // a control token (no text when decoded), else a normal one
  bool lstrip = false;    // also swallows the whitespace before it
  bool rstrip = false;    // ... and after it
  bool normalized = false;  // matched in a second pass, after the non-normalized ones (as HF)
};

// Everything a byte-level BPE tokenizer is, whatever it was read from.
struct BpeSpec {
  std::vector<std::string> tokens;          // per id: raw bytes (added tokens: their content)
  std::vector<std::pair<int, int>> merges;  // by rank: (left id, right id)
  std::vector<BpeAddedToken> added;         // ids inside tokens
  std::vector<std::string> splits;          // pre-tokenizer regexes, applied in order (Isolated)
  bool add_prefix_space = false;            // ByteLevel: prepend ' ' to a piece not starting with one
  bool byte_level_regex = false;            // ByteLevel use_regex: split by GPT-2's pattern after that
  bool ignore_merges = false;               // a piece that is a token is not merged up
  int template_bos = -1;                    // the post-processor's leading special token, -1: none
};

// GPT-2's pattern, which ByteLevel with use_regex applies.
extern const char* const kGpt2SplitPattern;

// A Hugging Face tokenizer.json; origin names it in errors. Refuses (naming the field, what it
// found and what is supported) anything this implementation would tokenize differently.
BpeSpec bpe_spec_from_hf_json(const std::string& json_text, const std::string& origin);

// The container's compact form (docs/format.md, "BPE tokenizer data"), and back. The reader
// bounds every count and length and names origin in its errors.
std::vector<uint8_t> bpe_spec_serialize(const BpeSpec& spec);
BpeSpec bpe_spec_deserialize(const uint8_t* data, size_t size, const std::string& origin);
bool bpe_spec_looks_serialized(const uint8_t* data, size_t size);  // starts with the magic

// GPT-2's byte <-> character table: the spelling of raw bytes in tokenizer.json.
std::string bpe_bytes_to_piece(const std::string& bytes);
bool bpe_piece_to_bytes(const std::string& piece, std::string* bytes);  // false: not byte-level

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
