// Fuzz target: a GGUF file through the whole GGUF importer, as `compress` runs it: header,
// typed metadata, tensor table, Llama hyper-parameters, RoPE factors, the vocabulary rebuilt
// as a SentencePiece model, tensor checks against the config. Only cllm::Error may escape.
#include "convert/source_model.h"
#include "tests/fuzz/fuzz_input.h"

using namespace cllm;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::read_one("gguf", data, size,
                        [](const std::string& path) { fuzz::touch_tensors(import_gguf(path, {}).tensors); });
}
