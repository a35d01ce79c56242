// Everything a byte-level BPE tokenizer is (BpeSpec), whatever it was read from: a Hugging Face
// tokenizer.json (bpe_spec_json.cpp) or the compact form a .cllm file stores in its tensor
// tokenizer.data (bpe_spec_compact.cpp). BpeTokenizer (bpe_tokenizer.h) runs one.
//
// Tokens are kept as their raw bytes; the byte-level alphabet ("Ġ" for a space,
// bpe_byte_alphabet.h) is only the spelling in tokenizer.json and in piece().
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
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

// A Hugging Face tokenizer.json; origin names it in errors. Refuses (naming the field, what it
// found and what is supported) anything this implementation would tokenize differently.
BpeSpec bpe_spec_from_hf_json(const std::string& json_text, const std::string& origin);

// The container's compact form (docs/format.md, "BPE tokenizer data"), and back. The reader
// bounds every count and length and names origin in its errors.
std::vector<uint8_t> bpe_spec_serialize(const BpeSpec& spec);
BpeSpec bpe_spec_deserialize(const uint8_t* data, size_t size, const std::string& origin);
bool bpe_spec_looks_serialized(const uint8_t* data, size_t size);  // starts with the magic

}  // namespace cllm
