// Fuzz target: a llama2.c checkpoint (.bin) through the llama2.c importer: the 7-field header,
// its plausibility bounds, the exact file size it implies, and the tensors sliced from it.
// Only cllm::Error may escape.
#include "common/error.h"
#include "convert/source_model.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cllm::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const cllm::fuzz::ScratchFile scratch("llama2c");
  cllm::fuzz::write_input(scratch.path, data, size);
  try {
    const cllm::SourceModel m = cllm::import_llama2c(scratch.path, {});
    uint8_t x = 0;
    for (const auto& t : m.tensors)
      for (uint64_t i = 0; i < t.size; i += 64) x ^= t.data[i];
    volatile uint8_t sink = x;
    (void)sink;
  } catch (const cllm::Error&) {
  }
  return 0;
}
