// synth's weights: which tensors a preset's config.json implies (in HF naming and order) and
// their values, computable for any element range, so that the folder writer (whole tensors)
// and the direct .cllm writer (one tile at a time) produce the same bits.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cllm {

// One weight tensor to generate, in HF naming.
struct SynthTensor {
  std::string name;
  std::vector<uint64_t> shape;
  bool norm;  // RMSNorm weight: N(1, 0.05^2) instead of N(0, weight_std^2)
  uint64_t elems() const;
};

// The tensors of a Llama-style config.json, in the order HF checkpoints list them.
std::vector<SynthTensor> synth_tensors(const nlohmann::json& config);

// The bf16 bit patterns of elements [first, first + n) of tensors[index]. The values depend
// only on (seed, index, element): tensors are generated in blocks of kSynthBlockElems, each
// block from its own stream, so any split into ranges or threads gives the same bits.
constexpr uint64_t kSynthBlockElems = 1u << 20;
void fill_synth_values(const SynthTensor& t, size_t index, uint64_t seed, double weight_std, uint64_t first,
                       uint64_t n, uint16_t* out);

}  // namespace cllm
