// What the GPU runtime moves and decodes, in the order a forward pass needs it: one step per
// layer (the layer's group: its compressed bytes in the file, its tiles, where each tensor
// lands in a layer slot), then the classifier (output projection) cut into row slices that
// each fit a slot. Every mode runs the same steps with the same slot layouts, so the same
// kernels see the same shapes and alignments: that is what makes full, resident and lowmem
// bitwise identical. Built on the host from the index alone (no CUDA needed).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "format/cllm_reader.h"
#include "model/architecture.h"
#include "model/cpu_layer.h"
#include "model/llama_config.h"
#include "runtime/decode_plan.h"

namespace cllm {


struct WeightStep {
  int layer = -1;                   // a layer step; -1 for a classifier slice
  int row_begin = 0, row_end = 0;   // classifier slice: rows [row_begin, row_end) of the vocab
  uint64_t src_offset = 0;          // its compressed bytes: [src_offset, src_offset + src_bytes) of the file
  uint64_t src_bytes = 0;
  uint64_t slot_bytes = 0;          // decoded bytes with alignment padding
  std::vector<cuda::TileTask> tiles;   // src relative to src_offset, dst relative to the slot
  std::vector<cuda::BlockTask> blocks;
  // Layer steps: each tensor's place in the slot and its index entry, by role (a role the
  // architecture lacks: offset 0, tensor null). A classifier slice holds its rows at slot
  // offset 0.
  std::array<uint64_t, kLayerTensors> offset{};
  std::array<const TensorInfo*, kLayerTensors> tensor{};
  // As a fused placement keeps it in VRAM (fused_parts.h): its bf16 matrices' planes with their
  // escape allowance, and its other tensors decoded, packed. 0 and 0 for a step without bf16
  // matrices, which a fused placement keeps as full mode does (slot_bytes).
  uint64_t fused_bytes = 0, fused_rest_bytes = 0;
};

struct WeightSchedule {
  std::vector<WeightStep> layers;      // n_layers, in order
  std::vector<WeightStep> classifier;  // row slices, ascending, covering [0, vocab)
  uint32_t global_group = 0;           // token_embd, output_norm, output (decoded whole in full mode)
  const TensorInfo* token_embd = nullptr;
  const TensorInfo* output_norm = nullptr;
  const TensorInfo* classifier_tensor = nullptr;  // output.weight, or token_embd when tied
  DType linear_dtype = DType::BF16;    // every linear layer's dtype (the activations' too)
  uint64_t slot_bytes = 0;             // the largest step's decoded bytes: one layer slot
  uint64_t max_src_bytes = 0;          // the largest step's compressed bytes: one staging buffer
  uint64_t store_bytes = 0;            // every step's compressed bytes, each 256-byte aligned
  uint64_t decoded_bytes = 0;          // every group decoded (full mode's weights)

  // Steps by index as placements and stores count them: layers, then classifier slices.
  size_t steps() const { return layers.size() + classifier.size(); }
  const WeightStep& step(size_t i) const { return i < layers.size() ? layers[i] : classifier[i - layers.size()]; }
};

// Builds the schedule; checks every tile header (decode_plan.h), that each layer's tensors
// are where expected_tensors() says, and that all linear weights share one dtype. Errors name
// the file and tensor.
WeightSchedule plan_weight_schedule(const CllmFile& file, const LlamaConfig& c);

// A layer step's slot as the CPU layers read it (model/cpu_layer.h).
CpuSlotLayout cpu_slot_layout(const WeightStep& step);

// Rows of the classifier slices: boundaries fall on tile boundaries that are also row
// boundaries, each slice as large as fits max_slice_bytes (a slice between two such
// boundaries that are further apart is taken whole). Exposed for tests.
std::vector<std::pair<int, int>> classifier_slices(const TensorInfo& t, int dim, uint64_t max_slice_bytes);

}  // namespace cllm
