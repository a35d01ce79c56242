// Fuzz target: a llama2.c checkpoint (.bin) through the llama2.c importer: the 7-field header,
// its plausibility bounds, the exact file size it implies, and the tensors sliced from it.
// Only cllm::Error may escape.
#include "convert/source_model.h"
#include "tests/fuzz/fuzz_input.h"

using namespace cllm;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::read_one("llama2c", data, size,
                        [](const std::string& path) { fuzz::touch_tensors(import_llama2c(path, {}).tensors); });
}
