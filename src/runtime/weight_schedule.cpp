#include "runtime/weight_schedule.h"

#include <algorithm>

#include "common/error.h"
#include "runtime/fused_parts.h"

namespace cllm {

namespace {
constexpr uint64_t kStoreAlign = 256;
uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

WeightStep layer_step(const CllmFile& file, const Architecture& arch, int layer, uint32_t group) {
  GroupDecodePlan p = plan_group_decode(file, group);
  WeightStep s;
  s.layer = layer;
  s.src_offset = p.src_offset;
  s.src_bytes = p.src_bytes;
  s.slot_bytes = p.slot_bytes;
  for (const LayerTensorDesc& d : arch.layer) {  // roles the architecture lacks keep a null tensor
    const std::string name = layer_tensor_name(layer, d);
    const auto it = p.tensors.find(name);
    CLLM_CHECK(it != p.tensors.end(), "'", file.path(), "': tensor '", name, "' is not in group '",
               file.groups()[group].name, "' with the rest of layer ", layer);
    s.offset[d.role] = it->second.offset;
    s.tensor[d.role] = it->second.info;
  }
  s.tiles = std::move(p.tiles);
  s.blocks = std::move(p.blocks);
  return s;
}

// The slice's tiles: exactly those of elements [r0*dim, r1*dim) of t.
WeightStep classifier_step(const TensorInfo& t, int dim, int r0, int r1) {
  WeightStep s;
  s.row_begin = r0;
  s.row_end = r1;
  const uint64_t begin = static_cast<uint64_t>(r0) * dim, end = static_cast<uint64_t>(r1) * dim;
  const uint32_t esize = static_cast<uint32_t>(dtype_size(t.dtype));
  uint64_t elem = 0;
  for (const TileInfo& tile : t.tiles) {
    if (elem >= begin && elem < end) {
      if (s.tiles.empty()) s.src_offset = tile.offset;
      s.tiles.push_back({tile.offset - s.src_offset, (elem - begin) * esize, tile.n_elems, esize});
      s.src_bytes = tile.offset + tile.size - s.src_offset;
    }
    elem += tile.n_elems;
  }
  s.slot_bytes = (end - begin) * esize;
  s.offset[0] = 0;
  s.tensor[0] = &t;
  s.blocks = plan_blocks(s.tiles);
  return s;
}
}  // namespace


CpuSlotLayout cpu_slot_layout(const WeightStep& step) {
  CpuSlotLayout l;
  for (int r = 0; r < kLayerTensors; ++r) {
    l.present[r] = step.tensor[r] != nullptr;
    l.offset[r] = step.offset[r];
    l.dtype[r] = l.present[r] ? step.tensor[r]->dtype : DType::F32;
  }
  return l;
}

std::vector<std::pair<int, int>> classifier_slices(const TensorInfo& t, int dim, uint64_t max_slice_bytes) {
  CLLM_CHECK(t.shape.size() == 2 && t.shape[1] == static_cast<uint64_t>(dim), "tensor '", t.name, "': shape ",
             shape_to_string(t.shape), ", expected [vocab, ", dim, "]");
  const int rows = static_cast<int>(t.shape[0]);
  // Row indices at which a tile starts: the only places a slice may begin or end.
  std::vector<int> cuts;
  uint64_t elem = 0;
  for (const TileInfo& tile : t.tiles) {
    if (elem % dim == 0) cuts.push_back(static_cast<int>(elem / dim));
    elem += tile.n_elems;
  }
  CLLM_CHECK(elem == t.n_elems(), "tensor '", t.name, "': tiles hold ", elem, " elements, the shape ", t.n_elems());
  cuts.push_back(rows);
  const uint64_t row_bytes = static_cast<uint64_t>(dim) * dtype_size(t.dtype);
  const int max_rows = static_cast<int>(std::max<uint64_t>(1, max_slice_bytes / row_bytes));
  std::vector<std::pair<int, int>> slices;
  size_t i = 0;
  while (cuts[i] < rows) {
    size_t j = i + 1;  // at least the next boundary, then as many more as fit
    while (j + 1 < cuts.size() && cuts[j + 1] - cuts[i] <= max_rows) ++j;
    slices.emplace_back(cuts[i], cuts[j]);
    i = j;
  }
  return slices;
}

WeightSchedule plan_weight_schedule(const CllmFile& file, const LlamaConfig& c) {
  WeightSchedule s;
  for (const TensorSpec& spec : expected_tensors(c)) {
    const TensorInfo& t = file.get(spec.name);
    CLLM_CHECK(t.shape == spec.shape, "'", file.path(), "': tensor '", spec.name, "' has shape ",
               shape_to_string(t.shape), ", the config implies ", shape_to_string(spec.shape));
    CLLM_CHECK(t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16, "'", file.path(),
               "': tensor '", spec.name, "' is ", dtype_name(t.dtype), ", expected f32, f16 or bf16");
  }
  s.token_embd = &file.get("token_embd.weight");
  s.output_norm = &file.get("output_norm.weight");
  s.classifier_tensor = c.tie_embeddings ? s.token_embd : &file.get("output.weight");
  s.global_group = s.token_embd->group;
  s.linear_dtype = s.classifier_tensor->dtype;

  s.decoded_bytes = plan_group_decode(file, s.global_group).slot_bytes;  // also checks its tiles
  const Architecture& arch = architecture_of(c);
  for (int l = 0; l < c.n_layers; ++l) {
    const uint32_t g = file.get(layer_tensor_name(l, arch.layer.front())).group;
    CLLM_CHECK(g != s.global_group, "'", file.path(), "': layer ", l, " shares the group of token_embd.weight");
    s.layers.push_back(layer_step(file, arch, l, g));
    const WeightStep& step = s.layers.back();
    for (const LayerTensorDesc& d : arch.layer)
      CLLM_CHECK(arch.is_vector(d.role) || step.tensor[d.role]->dtype == s.linear_dtype, "'", file.path(),
                 "': tensor '", step.tensor[d.role]->name, "' is ", dtype_name(step.tensor[d.role]->dtype), " but '",
                 s.classifier_tensor->name, "' is ", dtype_name(s.linear_dtype),
                 ": the GPU engine needs one dtype for all linear layers");
    s.slot_bytes = std::max(s.slot_bytes, step.slot_bytes);
    s.decoded_bytes += step.slot_bytes;
  }
  for (const auto& [r0, r1] : classifier_slices(*s.classifier_tensor, c.dim, s.slot_bytes)) {
    s.classifier.push_back(classifier_step(*s.classifier_tensor, c.dim, r0, r1));
    s.slot_bytes = std::max(s.slot_bytes, s.classifier.back().slot_bytes);
  }
  for (auto* steps : {&s.layers, &s.classifier})
    for (WeightStep& step : *steps) {
      s.max_src_bytes = std::max(s.max_src_bytes, step.src_bytes);
      s.store_bytes += align_up(step.src_bytes, kStoreAlign);
      const StepParts parts = step_parts(s, step);
      if (!parts.fused.empty()) step.fused_bytes = parts.fused_bytes_planned(), step.fused_rest_bytes = parts.decoded_bytes();
    }
  return s;
}

}  // namespace cllm
