// Helpers shared by the importers (HF folder, llama2.c, GGUF): bounded little-endian reads,
// typed JSON fields with errors that name the file and key, and the provenance metadata every
// SourceModel carries (docs/format.md "Metadata").
#pragma once

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "convert/source_model.h"

namespace cllm {

// Product of dims; throws (naming what) when it overflows 2^62 elements.
uint64_t shape_elements(const std::vector<uint64_t>& shape, const std::string& what);

// Sequential reads from a byte range that refuse to run past its end. Errors read
// "'<file>': truncated at byte <offset> while reading <field> (file is <size> bytes)".
class ByteReader {
 public:
  ByteReader(const uint8_t* data, uint64_t size, std::string file)
      : data_(data), size_(size), file_(std::move(file)) {}

  uint64_t offset() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  const uint8_t* here() const { return data_ + pos_; }
  const std::string& file() const { return file_; }

  // Throws unless n more bytes are available.
  void need(uint64_t n, const char* field) const;
  const uint8_t* take(uint64_t n, const char* field) {
    need(n, field);
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  template <class T>
  T read(const char* field) {
    T v;
    std::memcpy(&v, take(sizeof(T), field), sizeof(T));
    return v;
  }
  void seek(uint64_t offset, const char* field);

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string file_;
};

// config.json style fields. `file` names the JSON file in errors. Absent or null keys give the
// default in the *_or variants; a present key of the wrong type is always an error.
const nlohmann::json* json_find(const nlohmann::json& obj, const char* key);  // null for null
int json_int(const nlohmann::json& obj, const char* key, const std::string& file);
int json_int_or(const nlohmann::json& obj, const char* key, int def, const std::string& file);
double json_number_or(const nlohmann::json& obj, const char* key, double def, const std::string& file);
bool json_bool_or(const nlohmann::json& obj, const char* key, bool def, const std::string& file);
std::string json_string_or(const nlohmann::json& obj, const char* key, const std::string& def,
                           const std::string& file);
// Parses a JSON file; throws "'<path>': invalid JSON: ..." or a read error.
nlohmann::json json_read_file(const std::string& path);

// File name without directory and without its last extension: "/a/stories260K.bin" -> "stories260K".
std::string path_stem(const std::string& path);

// Byte-for-byte equal tensors (same dtype, shape and bytes).
bool tensors_identical(const SourceTensor& a, const SourceTensor& b);

// Checks each tensor whose canonical name the config implies against the config's shape, before
// check_and_order_tensors, so the error can name the file that holds it (`file_of[i]` for
// tensors[i]) and the config that disagrees.
void check_shapes_against_config(const SourceModel& m, const std::vector<std::string>& file_of,
                                 const std::string& config_what);

// Refuses a layer count the tensors cannot hold (at least 9 per layer) before expected_tensors() builds
// a list that long from a corrupt count. `what` names the file and key that gave the count.
void check_layer_count(const SourceModel& m, const std::string& what);

// Fills general.name, general.source.{format,path,dtype} and tokenizer.{model,source}; the
// importer adds tokenizer.bos_id/eos_id/add_bos itself. Call after the tensors are in place.
void fill_source_metadata(SourceModel& m);

}  // namespace cllm
