// The GPU decoder's work for one group of a .cllm file (one layer, or the global tensors):
// which tile goes where. Source offsets are relative to the group's first byte (so the group
// can be copied anywhere, e.g. into a staging buffer); destinations are offsets into a layer
// slot in which every tensor starts 256-byte aligned.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "cuda/decode_tasks.h"
#include "format/cllm_reader.h"

namespace cllm {

struct SlotTensor {
  uint64_t offset = 0;  // bytes from the slot's start
  uint64_t bytes = 0;   // n_elems * dtype_size
  const TensorInfo* info = nullptr;
};

struct GroupDecodePlan {
  uint32_t group = 0;
  uint64_t src_offset = 0;  // the group's offset in the file
  uint64_t src_bytes = 0;   // the group's size: what a streaming copy moves
  uint64_t slot_bytes = 0;  // decoded size including alignment
  std::map<std::string, SlotTensor> tensors;
  std::vector<cuda::TileTask> tiles;    // src relative to the group, dst relative to the slot
  std::vector<cuda::BlockTask> blocks;
};

// The thread blocks that decode the given tiles, in order.
std::vector<cuda::BlockTask> plan_blocks(const std::vector<cuda::TileTask>& tiles);

// Builds the plan for group g, checking every tile header on the host
// (codec::parse_tile_layout) so the kernel can trust the offsets. Tensors of dtype u8 (the
// tokenizer) are skipped.
GroupDecodePlan plan_group_decode(const CllmFile& file, uint32_t g);

}  // namespace cllm
