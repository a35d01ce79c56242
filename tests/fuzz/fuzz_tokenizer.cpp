// Fuzz target: tokenizer files as `compress --tokenizer FILE` and `tokenize --tokenizer FILE`
// load them. The input is a u16 little-endian vocabulary size (the model's, 1..65536) and then
// the file: load_tokenizer_file tries it as a SentencePiece ModelProto and else converts it as
// a llama2.c tokenizer .bin of that many tokens; a tokenizer that loads then encodes a text and
// decodes the ids back. Only cllm::Error may escape.
//
// SentencePiece itself is Debian's library, not built with coverage or ASan: the fuzzer is
// guided by codecllm's code around it, and finds crashes inside it only by chance.
#include "common/error.h"
#include "convert/tokenizer_import.h"
#include "tests/fuzz/fuzz_input.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cllm::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const cllm::fuzz::ScratchFile scratch("tokenizer");
  if (size < 2) return 0;
  const int vocab_size = 1 + (data[0] | data[1] << 8);
  cllm::fuzz::write_input(scratch.path, data + 2, size - 2);
  try {
    cllm::SpmInfo info;
    const cllm::SourceTokenizer st = cllm::load_tokenizer_file(scratch.path, vocab_size, &info);
    const cllm::Tokenizer tok =
        cllm::Tokenizer::from_serialized(std::string(st.data.begin(), st.data.end()), "fuzz");
    cllm::TokenDecoder dec(tok);
    for (int id : tok.encode("Hello world  \n\t\xC3\xA9\xF0\x9F\xA6\x99 <s></s>", true)) {
      (void)tok.display(id);
      dec.push(id);
    }
    dec.flush();
  } catch (const cllm::Error&) {
  }
  return 0;
}
