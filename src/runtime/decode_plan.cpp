#include "runtime/decode_plan.h"

#include "codec/codec.h"
#include "common/error.h"

namespace cllm {

namespace {
constexpr uint64_t kSlotAlign = 256;
}  // namespace

std::vector<cuda::BlockTask> plan_blocks(const std::vector<cuda::TileTask>& tiles) {
  std::vector<cuda::BlockTask> blocks;
  for (uint32_t t = 0; t < tiles.size(); ++t) {
    const uint32_t chunks = (tiles[t].n_elems + codec::kChunkElems - 1) / codec::kChunkElems;
    for (uint32_t c = 0; c < chunks; c += cuda::kChunksPerBlock) blocks.push_back({t, c});
  }
  return blocks;
}

GroupDecodePlan plan_group_decode(const CllmFile& file, uint32_t g) {
  CLLM_CHECK(g < file.groups().size(), "'", file.path(), "': no group ", g);
  const GroupInfo& group = file.groups()[g];
  GroupDecodePlan plan;
  plan.group = g;
  plan.src_offset = group.offset;
  plan.src_bytes = group.size;
  for (const auto& t : file.tensors()) {
    if (t.group != g || t.dtype == DType::U8) continue;
    SlotTensor st;
    st.offset = (plan.slot_bytes + kSlotAlign - 1) / kSlotAlign * kSlotAlign;
    st.bytes = t.raw_bytes();
    st.info = &t;
    plan.slot_bytes = st.offset + st.bytes;
    uint64_t elem = 0;
    for (size_t i = 0; i < t.tiles.size(); ++i) {
      const TileInfo& tile = t.tiles[i];
      with_context(cat("'", file.path(), "': tensor '", t.name, "' tile ", i), [&] {
        const auto layout = codec::parse_tile_layout(t.dtype, file.tile_data(tile), tile.size);
        CLLM_CHECK(layout.n_elems == tile.n_elems, "tile header says ", layout.n_elems, " elements, the index ", tile.n_elems);
      });
      plan.tiles.push_back({tile.offset - group.offset, st.offset + elem * dtype_size(t.dtype), tile.n_elems,
                            static_cast<uint32_t>(dtype_size(t.dtype))});
      elem += tile.n_elems;
    }
    plan.tensors[t.name] = st;
  }
  plan.blocks = plan_blocks(plan.tiles);
  return plan;
}

}  // namespace cllm
