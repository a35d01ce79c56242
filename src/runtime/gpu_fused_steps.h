// Weight steps in the fused layout (CUDA builds only; docs/codec.md "The fused layout (mode
// 3)"): each step's bf16 matrices encoded on the GPU at load from its decoded slot, its other
// tensors kept decoded. One token's products read a step in place (view()); a batch gets it
// decoded back into a slot, with bytes equal to full mode's (decode_into()).
//
// The fused store (fused mode) keeps every step so and decodes into slots of its own; the
// placed store keeps its fused steps so and decodes them into the ring's slots.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "cuda/device_buffer.h"
#include "runtime/fused_parts.h"
#include "runtime/gpu_weights.h"

namespace cllm {

class FusedSteps {
 public:
  explicit FusedSteps(const WeightSchedule& s);  // room for every step of s, none kept yet
  FusedSteps(const FusedSteps&) = delete;
  FusedSteps& operator=(const FusedSteps&) = delete;

  // Keeps step i (layers, then classifier slices) from its slot layout at d_slot (decoded, in
  // device memory); the work is enqueued on s, which the caller synchronizes before d_slot
  // is rewritten. Throws naming the step and tensor where the layout cannot be made.
  void keep(size_t i, const uint8_t* d_slot, cudaStream_t s);
  // What one token's products read; null for a step without bf16 matrices (f32 or f16
  // weights: it is kept whole, decoded, as full mode keeps it).
  const FusedStepView* view(size_t i) const { return steps_[i].matrices.empty() ? nullptr : &steps_[i].view; }
  // A step without bf16 matrices: its slot layout, decoded.
  const uint8_t* decoded(size_t i) const { return steps_[i].memory.data(); }
  // Enqueues step i's slot layout into slot on s: its matrices by the fixed-length decoder
  // (one launch), its other tensors copied. Returns the bf16 bytes the decoder writes.
  uint64_t decode_into(size_t i, uint8_t* slot, cudaStream_t s) const;
  uint64_t bytes() const;  // the matrices in the fused layout, as loaded (planes and escapes)

 private:
  struct Matrix {
    StepPart part;
    cuda::FusedWeights view{};  // into its step's buffers
  };
  struct Packed {
    StepPart part;
    uint64_t at;  // its offset in Step::memory
  };
  // A step's VRAM is two allocations, whatever its number of tensors (cudaMalloc rounds each
  // up to its page, about 1 MiB lost per allocation: 0.5 GB over the 8B's 525 tensors when
  // each had its own): `memory` holds the decoded parts packed, then each matrix's planes
  // (or the whole slot layout, decoded, for a step without matrices); `escapes` holds the
  // matrices' escape lists, sized once the encoder has counted them.
  struct Step {
    std::vector<Matrix> matrices;
    std::vector<Packed> packed;
    cuda::DeviceBuffer<uint8_t> memory;
    cuda::DeviceBuffer<uint32_t> escapes;
    uint64_t fused_bytes = 0;  // the planes' part of memory
    FusedStepView view;
  };
  // Step st's matrices (parts) from the slot at d_slot into st.memory from offset `at`.
  static void encode(Step& st, const std::vector<StepPart>& parts, const uint8_t* d_slot, uint64_t at,
                     cudaStream_t s);

  const WeightSchedule& s_;
  std::vector<Step> steps_;
};

}  // namespace cllm
