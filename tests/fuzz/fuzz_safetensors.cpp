// Fuzz target: a safetensors file as the Hugging Face importer reads each shard (JSON header,
// dtypes, shapes, data offsets against the file). Only cllm::Error may escape.
#include "convert/safetensors.h"
#include "tests/fuzz/fuzz_input.h"

using namespace cllm;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::read_one("safetensors", data, size,
                        [](const std::string& path) { fuzz::touch_tensors(read_safetensors(path).tensors); });
}
