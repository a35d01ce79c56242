// Writes a .cllm file. Tiles arrive already encoded (the codec is not this library's
// business); the writer lays them out, checksums them, and at finish() writes metadata, index
// and header, then renames the temporary file into place. Destroyed before finish(), it
// leaves nothing behind.
#pragma once

#include <array>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/file_io.h"
#include "format/cllm_format.h"

namespace cllm {

struct EncodedTile {
  std::vector<uint8_t> bytes;  // a complete tile (docs/codec.md)
  uint32_t n_elems = 0;
};

class CllmWriter {
 public:
  CllmWriter(const std::string& path, bool overwrite);

  // Starts a new group; later tensors go into it. Groups are written in call order.
  void begin_group(const std::string& name);
  // Appends a tensor's tiles to the current group. Shape must match the tiles' element count.
  void add_tensor(const std::string& name, DType dtype, TensorCodec codec,
                  const std::vector<uint64_t>& shape, const std::vector<EncodedTile>& tiles);
  // Writes metadata, index and header; fsyncs; renames into place.
  void finish(const nlohmann::json& metadata);

  uint64_t bytes_written() const { return file_.offset(); }
  // What has been written so far: groups, tensors, tiles with their offsets and CRCs.
  const CllmIndex& index() const { return index_; }

 private:
  void check_usable(const char* call) const;

  AtomicOutputFile file_;
  CllmIndex index_;
  std::unordered_set<std::string> group_names_, tensor_names_;
  bool finished_ = false;
  bool broken_ = false;  // a write failed part-way: the file can no longer be finished
};

// The binary index (docs/format.md, "Index"), exposed for tests that build broken files.
// Writes whatever it is given, valid or not (CllmWriter validates before it calls this).
std::vector<uint8_t> serialize_index(const CllmIndex& index);
// The 64-byte header, magic included; likewise unchecked.
std::array<uint8_t, kCllmHeaderBytes> serialize_header(const CllmHeader& header);

}  // namespace cllm
