// Which parts of a weight step fused mode keeps in the fused layout (docs/codec.md "The fused
// layout (mode 3)") and which it keeps decoded, and what both cost in VRAM. Host code, no
// CUDA: the memory plan counts with it before anything is allocated, and the fused store
// (gpu_weights_fused.cpp) loads by it.
//
// Fused: a layer's bf16 matrices (2-D tensors: q, k, v, o, gate, up, down) and a classifier
// slice when the classifier is bf16. Decoded: everything else (norms, biases, f16 and f32
// tensors), as full mode holds them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/weight_schedule.h"

namespace cllm {

// One tensor of a step: where its decoded bytes sit in the step's slot (weight_schedule.h).
struct StepPart {
  int role = -1;             // its LayerTensor; -1 for a classifier slice
  uint64_t slot_offset = 0;  // in the slot
  uint64_t bytes = 0;        // decoded
  uint32_t rows = 0, cols = 0;  // matrices (fused parts); 0 for others
  std::string name;          // the tensor's name, for errors ("blk.3.attn_q.weight", "output.weight rows 0..511")
};

struct StepParts {
  std::vector<StepPart> fused;    // kept in the fused layout
  std::vector<StepPart> decoded;  // kept decoded, packed 256-byte aligned in one buffer
  uint64_t decoded_bytes() const;  // that buffer's size
  uint64_t fused_bytes_planned() const;  // the fused parts' planes and escape allowances
};
StepParts step_parts(const WeightSchedule& s, const WeightStep& step);

// The device layout of one fused matrix as the fused store allocates it: the planes (bytes,
// codes, bases with one base per row, escape_start) in one buffer, each 256-byte aligned;
// the escape list in a second buffer, sized at load from the count the encoder finds.
struct FusedPlaneSizes {
  uint32_t stride = 0, group = 0;
  uint64_t bytes_at = 0, codes_at = 0, bases_at = 0, escape_start_at = 0, planes = 0;
};
FusedPlaneSizes fused_plane_sizes(uint32_t rows, uint32_t cols);
// The escape list the memory plan allows for before the count is known: one weight in 256
// (Llama weights escape 0.02-0.03%, docs/codec.md), at least one entry.
uint64_t fused_escape_allowance(uint32_t rows, uint32_t cols);

}  // namespace cllm
