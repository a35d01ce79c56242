// A GGUF (v2, v3) reader: typed key/value metadata and the tensor table, over a memory map.
//
// Layout (all little-endian):
//   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x { string key | u32 value_type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   zero padding to `general.alignment` (default 32) | tensor data
// A string is u64 length + bytes; an array is u32 element type + u64 count + elements.
// ne[0] is the contiguous dimension; offsets are relative to the aligned start of the data.
//
// Every count and length is bounded by the bytes left in the file before anything is
// allocated, so a corrupt header fails with a message instead of allocating gigabytes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/file_io.h"

namespace cllm {

enum class GGUFType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};
const char* gguf_type_name(GGUFType t);

// ggml tensor types codecllm reads, and a name for any id (for error messages).
enum : uint32_t { kGgmlF32 = 0, kGgmlF16 = 1, kGgmlBF16 = 30 };
std::string ggml_type_name(uint32_t type);  // "Q4_0", "BF16", "type 77"

struct GGUFValue {
  GGUFType type = GGUFType::u8;
  uint64_t bits = 0;        // scalars: the value's bytes, zero-extended
  std::string_view str;     // string: points into the mapping
  // arrays
  GGUFType elem_type = GGUFType::u8;
  uint64_t count = 0;
  const uint8_t* raw = nullptr;             // fixed-size elements: count x size bytes
  std::vector<std::string_view> strings;    // string elements
  std::vector<GGUFValue> arrays;            // array elements (nested arrays)
};

struct GGUFTensorInfo {
  std::string name;
  uint32_t type = 0;          // ggml type id
  std::vector<uint64_t> ne;   // GGUF order: ne[0] is contiguous
  uint64_t offset = 0;        // from the start of the data section
  uint64_t size = 0;          // bytes, for F32/F16/BF16, plain integer types and the quantized
                              // types of gguf_dequant.h; else 0
  const uint8_t* data = nullptr;  // null when the type's size is unknown here

  std::vector<uint64_t> shape() const { return {ne.rbegin(), ne.rend()}; }  // outermost first
};

class GGUFFile {
 public:
  explicit GGUFFile(const std::string& path);  // maps and parses; throws "'<path>': ..."

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::vector<std::pair<std::string, GGUFValue>>& metadata() const { return kv_; }
  const std::vector<GGUFTensorInfo>& tensors() const { return tensors_; }
  std::unique_ptr<MappedFile> release_file() { return std::move(file_); }  // keep tensors valid

  const GGUFValue* find(const std::string& key) const;  // null when absent
  // Typed getters: false when absent; throw naming the key when the type does not fit.
  bool get_uint(const std::string& key, uint64_t* out) const;  // any integer type, >= 0
  bool get_float(const std::string& key, double* out) const;   // f32, f64 or an integer
  bool get_bool(const std::string& key, bool* out) const;
  bool get_string(const std::string& key, std::string* out) const;
  // Arrays; throw when absent is not acceptable to the caller -> check find() first.
  std::vector<std::string_view> get_string_array(const std::string& key) const;
  std::vector<float> get_f32_array(const std::string& key) const;      // f32 (or f64) elements
  std::vector<int32_t> get_i32_array(const std::string& key) const;    // any integer elements

 private:
  std::string path_;
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GGUFValue>> kv_;
  std::map<std::string, size_t> index_;
  std::vector<GGUFTensorInfo> tensors_;
};

}  // namespace cllm
