// The compress pipeline: a SourceModel (any importer) -> a .cllm file. Tensors are cut into
// tiles, encoded on a thread pool, and written group by group (global, blk.0, blk.1, ...), one
// group written while the next is encoded, so that memory stays bounded by two groups' tiles.
// A tensor without data is computed tile by tile through its fill function inside the
// encoder's task (synth_model_cllm), so no whole source tensor need exist at all.
#pragma once

#include <functional>
#include <string>

#include "convert/source_model.h"

namespace cllm {

struct CompressOptions {
  int threads = 0;                 // 0 = all hardware threads
  bool overwrite = false;          // --force
  uint32_t tile_elems = 1u << 20;  // elements per tile (docs/codec.md, encoder choices)
  uint32_t prob_bits = 12;
  bool store_raw = false;          // store every tile raw (no entropy coding)
  // Progress: called after each tensor with bytes of source done and the total.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct CompressSummary {
  uint64_t source_bytes = 0;        // tensor bytes in the source
  uint64_t file_bytes = 0;          // the .cllm file
  uint64_t tile_bytes = 0;          // coded tensor payload (tiles, excluding padding and index)
  uint64_t coded_elems = 0;         // float elements (excluding the tokenizer blob)
  double order0_bound_bits = 0;     // sum over float tensors of n * (8R + H)
  double exponent_entropy = 0;      // H over all float tensors' symbols, bits/symbol
  uint64_t float_tile_bytes = 0;    // tile bytes of float tensors only
  double seconds = 0;
};

CompressSummary compress_model(const SourceModel& model, const std::string& out_path,
                               const CompressOptions& opt);

}  // namespace cllm
