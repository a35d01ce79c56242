// The byte-level BPE vocabulary of a GGUF file (tokenizer.ggml.model "gpt2": Llama 3, Qwen,
// SmolLM, Mistral's Tekken, Phi-4 ...) as a BpeSpec, and the end-of-generation tokens of any GGUF
// vocabulary.
//
// A GGUF stores the tokens (byte-level spelling, as tokenizer.json), the merges ("a b"), the
// token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) and the name
// of the pre-tokenizer (tokenizer.ggml.pre) that llama.cpp's converter recognised. That name
// is mapped here to the normalizer and pre-tokenizer steps of the family's own tokenizer.json,
// so the .cllm tokenizes as Hugging Face's library does on that family's tokenizer.json.
#pragma once

#include <string>
#include <vector>

#include "convert/gguf_reader.h"
#include "convert/source_model.h"
#include "text/bpe_spec.h"

namespace cllm {

// The pre-tokenizer names this maps, for messages ("llama-bpe, qwen2, smollm, ...").
std::string gguf_bpe_pre_names();

// The BpeSpec of g's "gpt2" vocabulary. bos is the BOS id the post-processor puts first (-1:
// none). Refuses, naming the file and key, a pre-tokenizer it does not know, tokens not spelled
// in the byte-level alphabet, merges naming unknown tokens, arrays of different lengths.
BpeSpec gguf_bpe_spec(const GGUFFile& g, int bos);

// The same as the tokenizer a .cllm carries (kind "bpe", the compact form), checked by building
// it; more tokens than the model's vocab_size (token_embd.weight's rows) are refused.
SourceTokenizer gguf_bpe_tokenizer(const GGUFFile& g, int vocab_size, int bos);

// Every id that ends generation: tokenizer.ggml.eos_token_id, eot_token_id, eom_token_id, and
// the control tokens whose text is a known end of turn (<|eot_id|>, <|im_end|>, <end_of_turn>,
// <|end|>, <|endoftext|> ...), as llama.cpp's vocabulary does. Ascending, no repeats.
std::vector<int> gguf_eog_ids(const GGUFFile& g, int n_vocab);

}  // namespace cllm
