// Reads a .cllm file: maps it, checks the header, metadata and index, bounds every count and
// offset before use, and (unless told not to) verifies the CRC-32C of every tile. Errors name
// the file and the part that is wrong: "'m.cllm': tensor 'blk.3.attn_q.weight' tile 7:
// checksum mismatch (file corrupted or incomplete)".
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>

#include "common/file_io.h"
#include "format/cllm_format.h"

namespace cllm {

struct CllmOpenOptions {
  bool verify_checksums = true;  // CRC every tile at open (--no-verify turns it off)
  int threads = 0;               // for checksum verification; 0 = all hardware threads
};

class CllmFile {
 public:
  static CllmFile open(const std::string& path, const CllmOpenOptions& opt = {});

  const std::string& path() const { return map_.path(); }
  uint32_t version() const { return version_; }
  const nlohmann::json& metadata() const { return metadata_; }
  const CllmIndex& index() const { return index_; }
  const std::vector<TensorInfo>& tensors() const { return index_.tensors; }
  const std::vector<GroupInfo>& groups() const { return index_.groups; }
  const TensorInfo* find(const std::string& name) const;   // nullptr if absent
  const TensorInfo& get(const std::string& name) const;    // throws naming the file

  const uint8_t* file_data() const { return map_.data(); }
  uint64_t file_size() const { return map_.size(); }
  const uint8_t* tile_data(const TileInfo& tile) const { return map_.data() + tile.offset; }

  const CllmHeader& header() const { return header_; }

  // Verifies every tile's CRC-32C (threads: 0 = all hardware threads); throws on the first
  // mismatch in index order, naming tensor and tile.
  void verify_checksums(int threads = 0) const;

 private:
  MappedFile map_;
  uint32_t version_ = 0;
  CllmHeader header_;
  nlohmann::json metadata_;
  CllmIndex index_;
  std::unordered_map<std::string, size_t> by_name_;  // tensor name -> position in index_.tensors
};

// Checks the 64-byte header at data (file_size bytes in all): magic, version, and every offset
// and size against file_size (docs/format.md, "Reading", step 1). Throws cllm::Error; the
// message does not name the file (CllmFile::open puts the path in front).
CllmHeader parse_header(const uint8_t* data, uint64_t file_size);

// Parses a binary index, bounding every count, length and offset before use. Groups must lie
// in the data section [data_offset, data_offset + data_size). Throws cllm::Error (without the
// file's path, as parse_header).
CllmIndex parse_index(const uint8_t* data, size_t size, uint64_t data_offset, uint64_t data_size);
// As above with the data section [kDataOffset, file_size).
CllmIndex parse_index(const uint8_t* data, size_t size, uint64_t file_size);

}  // namespace cllm
