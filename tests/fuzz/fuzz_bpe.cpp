// Fuzz target: a byte-level BPE tokenizer (Llama 3) as codecllm reads one: the compact form a
// .cllm file embeds (tensor 'tokenizer.data', "cllm-bpe" magic) or a Hugging Face
// tokenizer.json (`compress`, `tokenize --tokenizer`), whichever the input is. A tokenizer that
// loads encodes a text (added tokens, pre-tokenizer regexes, merges) and decodes it back.
// Only cllm::Error may escape.
#include "common/error.h"
#include "tests/fuzz/fuzz_input.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cllm::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const cllm::Tokenizer tok =
        cllm::Tokenizer::from_bpe(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    cllm::TokenDecoder dec(tok);
    for (int id : tok.encode("<|begin_of_text|>Hello world  \n\t\xC3\xA9\xF0\x9F\xA6\x99 it's 2024!\xFF", true)) {
      (void)tok.display(id);
      dec.push(id);
    }
    dec.flush();
  } catch (const cllm::Error&) {
  }
  return 0;
}
