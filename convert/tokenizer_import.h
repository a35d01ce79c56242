// Tokenizers the importers carry into a .cllm file: a serialized SentencePiece ModelProto (a
// .model file as it is, or a llama2.c tokenizer .bin converted into one), checked by loading it
// with libsentencepiece; or a Hugging Face tokenizer.json (byte-level BPE, Llama 3) converted
// into the compact form of text/bpe_tokenizer.h, checked by building the tokenizer from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "convert/source_model.h"

namespace cllm {

struct SpmInfo {
  int vocab_size = 0;
  int unk_id = -1;
  int bos_id = -1;  // -1: none
  int eos_id = -1;
};

// Loads proto with SentencePiece; false (and *error) when it does not load.
bool spm_try_load(const std::vector<uint8_t>& proto, SpmInfo* info, std::string* error);
// The same, throwing "'<what>': not a usable SentencePiece model: <reason>".
SpmInfo spm_check(const std::vector<uint8_t>& proto, const std::string& what);
// The id of an exact piece ("<s>"), -1 when the vocabulary lacks it.
int spm_piece_id(const std::vector<uint8_t>& proto, const std::string& piece);

// Converts a llama2.c tokenizer .bin (u32 max_token_length, then vocab_size records of
// {f32 score, i32 len, len bytes}) into a ModelProto. The .bin spells U+2581 as ' ', BOS/EOS
// as "\n<s>\n"/"\n</s>\n" and bytes as "<0xNN>"; these are mapped back (pieces "<s>", "</s>",
// types CONTROL/BYTE, "<unk>" UNKNOWN). Normalizer: add_dummy_prefix on,
// remove_extra_whitespaces off, which is what llama2.c's run.c encoder does.
std::vector<uint8_t> spm_from_llama2c_tokenizer(const uint8_t* data, uint64_t size, int vocab_size,
                                                const std::string& path);

// A tokenizer.json as kind "bpe" (compact form); *info gets its size and BOS (the token its
// post-processor puts first; EOS is -1: tokenizer.json has no notion of it). More tokens than
// vocab_size (the model's embedding rows) are refused; fewer are fine (padded embeddings).
SourceTokenizer load_hf_tokenizer_json(const std::string& path, int vocab_size, SpmInfo* info);
// The id of an added token with exactly this content in compact BPE data, -1 when none.
int bpe_added_token_id(const std::vector<uint8_t>& data, const std::string& content);

// `--tokenizer FILE`: a SentencePiece .model (kept byte for byte), a llama2.c .bin (converted) or
// a tokenizer.json (converted to the compact BPE form). vocab_size is the model's; a SentencePiece
// tokenizer of another size is refused, a BPE one only when it is larger.
SourceTokenizer load_tokenizer_file(const std::string& path, int vocab_size, SpmInfo* info);

// Every id that ends generation for a Hugging Face folder: eos, config.json's and
// generation_config.json's eos_token_id (an id or a list), and the tokenizer's special tokens
// whose text ends a turn (is_end_of_turn_text, text/tokenizer.h). Ascending, no repeats; ids outside the vocabulary are refused.
std::vector<int> hf_eog_ids(const SourceTokenizer& tok, const nlohmann::json& config, const std::string& dir, int eos,
                            int vocab_size);

}  // namespace cllm
