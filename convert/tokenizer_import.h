// Tokenizers the importers carry into a .cllm file, always as a serialized SentencePiece
// ModelProto: a .model file as it is, or a llama2.c tokenizer .bin converted into one. Every
// result is checked by loading it with libsentencepiece.
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

// `--tokenizer FILE` for llama2.c checkpoints: a SentencePiece .model (kept byte for byte) or
// a llama2.c .bin (converted). vocab_size is the model's; a tokenizer of another size is refused.
SourceTokenizer load_tokenizer_file(const std::string& path, int vocab_size, SpmInfo* info);

}  // namespace cllm
