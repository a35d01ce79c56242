// Everything a BPE tokenizer is (BpeSpec), whatever it was read from: a Hugging Face
// tokenizer.json (bpe_spec_json.cpp), a GGUF "gpt2" vocabulary (convert/gguf_vocab.cpp) or the
// compact form a .cllm file stores in its tensor tokenizer.data (bpe_spec_compact.cpp).
// BpeTokenizer (bpe_tokenizer.h) runs one.
//
// Two shapes, as the Hugging Face library runs them:
//   - byte-level (GPT-2, Llama 3, Qwen, SmolLM, Tekken, Phi-4): a ByteLevel pre-tokenizer step;
//     tokens are kept as their raw bytes, the byte-level alphabet ("Ġ" for a space,
//     bpe_byte_alphabet.h) is only the spelling in tokenizer.json and in piece();
//   - SentencePiece-style (Llama 2, Mistral v0.x, Gemma, Phi-3 as tokenizer.json): tokens are
//     UTF-8 text with '▁' for a space (a Metaspace step or Replace/Prepend normalizers put it
//     there), a word starts as its characters, and with byte_fallback a character the vocabulary
//     lacks becomes its <0xNN> byte tokens.
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
  bool normalized = false;  // matched in a second pass, on the normalized text (as HF)
};

// One step of the normalizer (tokenizer.json "normalizer"; a Sequence is flattened), applied
// in order to the text between added tokens.
struct BpeNormalizer {
  enum class Kind : uint8_t { nfc, nfd, nfkc, nfkd, prepend, replace };
  Kind kind = Kind::nfc;
  std::string pattern;  // replace: the regex (a String pattern is quoted with \Q...\E)
  std::string content;  // prepend: the text put first (when the text is not empty); replace: the replacement
};

// How a Split step keeps the text it matched (Hugging Face's SplitDelimiterBehavior).
enum class BpeSplitBehavior : uint8_t { isolated, removed, merged_with_previous, merged_with_next, contiguous };

// One step of the pre-tokenizer (a Sequence is flattened; Digits becomes a split on \p{N}).
struct BpePreStep {
  enum class Kind : uint8_t { split, byte_level, metaspace };
  enum class Prepend : uint8_t { always, first, never };  // Metaspace's prepend_scheme
  Kind kind = Kind::split;
  std::string pattern;                                    // split: the regex (Oniguruma syntax)
  BpeSplitBehavior behavior = BpeSplitBehavior::isolated;  // split
  bool invert = false;                                    // split: the text between matches is the delimiter
  bool add_prefix_space = false;                          // byte_level: ' ' before a piece not starting with one
  bool use_regex = false;                                 // byte_level: then GPT-2's pattern, isolated
  std::string replacement;                                // metaspace: what a space becomes ("▁")
  Prepend prepend = Prepend::always;                      // metaspace: when to put it before a piece
  bool split = true;                                      // metaspace: split before each replacement
};

struct BpeSpec {
  std::vector<std::string> tokens;          // per id: raw bytes (added tokens: their content)
  std::vector<std::pair<int, int>> merges;  // by rank: (left id, right id)
  std::vector<BpeAddedToken> added;         // ids inside tokens
  std::vector<BpeNormalizer> normalizers;   // in order
  std::vector<BpePreStep> pre_steps;        // in order; a byte-level tokenizer's ByteLevel step comes last
  bool ignore_merges = false;               // a piece that is a token is not merged up
  bool byte_fallback = false;               // a character without a token: its <0xNN> tokens
  bool fuse_unk = false;                    // consecutive unknown characters make one unk token
  int unk_id = -1;                          // a character without a token (or byte tokens): this; -1: dropped
  int template_bos = -1;                    // the post-processor's leading special token, -1: none
  // Decoding a SentencePiece-style tokenizer ('▁' is a space): its decoder's Strip step drops
  // this many spaces from the start of the whole text (Llama 2: the one Prepend put there).
  int decode_strip_leading = 0;

  bool byte_level() const;                  // has a ByteLevel pre-tokenizer step
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
