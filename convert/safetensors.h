// safetensors files: a reader that returns tensors pointing into a memory map, and a writer
// (tests, `codecllm synth`).
//
// Layout: u64 LE header_len | header_len bytes of JSON | data. The JSON maps each tensor name to
// {"dtype": "BF16", "shape": [out, in], "data_offsets": [begin, end]} (offsets relative to the
// start of the data, end exclusive), plus an optional "__metadata__" object of strings.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/file_io.h"

namespace cllm {

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;    // outermost first
  const uint8_t* data = nullptr;  // inside the mapping
  uint64_t size = 0;              // bytes == product(shape) * dtype_size(dtype)
};

struct SafetensorsFile {
  std::unique_ptr<MappedFile> file;              // owns the mapping the tensors point into
  std::map<std::string, std::string> metadata;   // "__metadata__"
  std::vector<SafetensorsTensor> tensors;        // in data order

  const SafetensorsTensor* find(const std::string& name) const;
};

// Maps and parses path. Only F32, F16 and BF16 tensors are accepted; any other dtype is refused
// naming the tensor. Every offset is checked against the file and against shape x dtype, and
// tensors may not overlap. Throws cllm::Error "'<path>': ...".
SafetensorsFile read_safetensors(const std::string& path);

// "F32", "F16", "BF16" (the safetensors spelling).
const char* safetensors_dtype_name(DType t);

// Streams a safetensors file out: declare every tensor, then write their bytes in declaration
// order (in as many pieces as convenient), then commit(). The file appears under its name only
// at commit (AtomicOutputFile).
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::string& path, bool overwrite);
  void add_tensor(const std::string& name, DType dtype, const std::vector<uint64_t>& shape);
  void add_metadata(const std::string& key, const std::string& value);
  // The first call writes the header; afterwards no more tensors can be declared.
  void write(const void* data, size_t size);
  void commit();  // throws unless exactly the declared bytes were written

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<uint64_t> shape;
    uint64_t begin, end;
  };
  void write_header();

  AtomicOutputFile out_;
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
  uint64_t data_size_ = 0;  // sum of declared sizes
  uint64_t written_ = 0;    // data bytes written so far
  bool header_written_ = false;
};

// One-shot form: writes every entry's bytes from memory.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;
  const void* data = nullptr;
  uint64_t size = 0;  // must equal product(shape) * dtype_size(dtype)
};
void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata = {},
                       bool overwrite = false);

}  // namespace cllm
