// Fuzz target: a safetensors file as the Hugging Face importer reads each shard (JSON header,
// dtypes, shapes, data offsets against the file). Only cllm::Error may escape.
#include "common/error.h"
#include "convert/safetensors.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cllm::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const cllm::fuzz::ScratchFile scratch("safetensors");
  cllm::fuzz::write_input(scratch.path, data, size);
  try {
    const cllm::SafetensorsFile f = cllm::read_safetensors(scratch.path);
    // Touch every tensor's bytes: each must lie inside the mapping.
    uint8_t x = 0;
    for (const auto& t : f.tensors)
      for (uint64_t i = 0; i < t.size; i += 64) x ^= t.data[i];
    volatile uint8_t sink = x;
    (void)sink;
  } catch (const cllm::Error&) {
  }
  return 0;
}
