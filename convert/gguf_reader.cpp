#include "convert/gguf_reader.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "convert/gguf_dequant.h"
#include "convert/import_util.h"

namespace cllm {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint64_t kMaxNameBytes = 65536;  // keys and tensor names
constexpr uint32_t kMaxDims = 4;           // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;
constexpr uint64_t kMaxAlignment = uint64_t(1) << 30;

size_t scalar_size(GGUFType t) {
  switch (t) {
    case GGUFType::u8: case GGUFType::i8: case GGUFType::boolean: return 1;
    case GGUFType::u16: case GGUFType::i16: return 2;
    case GGUFType::u32: case GGUFType::i32: case GGUFType::f32: return 4;
    case GGUFType::u64: case GGUFType::i64: case GGUFType::f64: return 8;
    default: return 0;
  }
}

bool is_integer(GGUFType t) {
  switch (t) {
    case GGUFType::u8: case GGUFType::i8: case GGUFType::u16: case GGUFType::i16:
    case GGUFType::u32: case GGUFType::i32: case GGUFType::u64: case GGUFType::i64: return true;
    default: return false;
  }
}
bool is_signed(GGUFType t) {
  return t == GGUFType::i8 || t == GGUFType::i16 || t == GGUFType::i32 || t == GGUFType::i64;
}

// Reads a little-endian scalar of type t at p as a signed 64-bit value (u64 above 2^63 wraps:
// callers check the sign of unsigned types separately).
int64_t int_at(GGUFType t, const uint8_t* p) {
  switch (t) {
    case GGUFType::u8: return *p;
    case GGUFType::i8: return static_cast<int8_t>(*p);
    case GGUFType::u16: { uint16_t v; std::memcpy(&v, p, 2); return v; }
    case GGUFType::i16: { int16_t v; std::memcpy(&v, p, 2); return v; }
    case GGUFType::u32: { uint32_t v; std::memcpy(&v, p, 4); return v; }
    case GGUFType::i32: { int32_t v; std::memcpy(&v, p, 4); return v; }
    default: { int64_t v; std::memcpy(&v, p, 8); return v; }
  }
}

// Element size of the ggml types whose bytes codecllm can bound without a block table.
uint64_t ggml_element_size(uint32_t type) {
  switch (type) {
    case 0: return 4;   // F32
    case 1: return 2;   // F16
    case 24: return 1;  // I8
    case 25: return 2;  // I16
    case 26: return 4;  // I32
    case 27: return 8;  // I64
    case 28: return 8;  // F64
    case 30: return 2;  // BF16
    default: return 0;
  }
}

class Parser {
 public:
  Parser(const uint8_t* data, uint64_t size, const std::string& path) : r_(data, size, path), path_(path) {}

  ByteReader& reader() { return r_; }

  std::string_view read_string(const std::string& what, uint64_t max_len) {
    const uint64_t len = r_.read<uint64_t>((what + " length").c_str());
    if (len > max_len || len > r_.remaining())
      fail("'", path_, "': ", what, " has length ", len, " at byte ", r_.offset() - 8,
           ", more than the ", std::min(max_len, r_.remaining()), " bytes allowed (truncated or corrupt file?)");
    const uint8_t* p = r_.take(len, what.c_str());
    return std::string_view(reinterpret_cast<const char*>(p), len);
  }

  GGUFType read_type(const std::string& what) {
    const uint32_t raw = r_.read<uint32_t>((what + " type").c_str());
    if (raw > static_cast<uint32_t>(GGUFType::f64))
      fail("'", path_, "': ", what, " has unknown value type ", raw, " at byte ", r_.offset() - 4);
    return static_cast<GGUFType>(raw);
  }

  GGUFValue read_value(GGUFType type, const std::string& what, int depth) {
    GGUFValue v;
    v.type = type;
    if (type == GGUFType::string) {
      v.str = read_string(what, r_.remaining());
    } else if (type == GGUFType::array) {
      if (depth >= kMaxArrayDepth) fail("'", path_, "': ", what, ": arrays nested deeper than ", kMaxArrayDepth);
      v.elem_type = read_type(what + " element");
      v.count = r_.read<uint64_t>((what + " count").c_str());
      // The smallest encoding of one element bounds the count by the bytes that are left.
      const uint64_t min_elem = v.elem_type == GGUFType::string ? 8
                               : v.elem_type == GGUFType::array ? 12
                                                                : scalar_size(v.elem_type);
      if (v.count > r_.remaining() / min_elem)
        fail("'", path_, "': ", what, ": array of ", v.count, " ", gguf_type_name(v.elem_type),
             " elements cannot fit in the ", r_.remaining(), " bytes left (truncated file or corrupt count?)");
      if (v.elem_type == GGUFType::string) {
        v.strings.reserve(v.count);
        for (uint64_t i = 0; i < v.count; ++i)
          v.strings.push_back(read_string(what + "[" + std::to_string(i) + "]", r_.remaining()));
      } else if (v.elem_type == GGUFType::array) {
        v.arrays.reserve(v.count);
        for (uint64_t i = 0; i < v.count; ++i)
          v.arrays.push_back(read_value(GGUFType::array, what + "[" + std::to_string(i) + "]", depth + 1));
      } else {
        v.raw = r_.take(v.count * min_elem, what.c_str());
      }
    } else {
      const size_t n = scalar_size(type);
      std::memcpy(&v.bits, r_.take(n, what.c_str()), n);  // little-endian host
    }
    return v;
  }

 private:
  ByteReader r_;
  std::string path_;
};

struct HeaderCounts {
  uint64_t n_tensors = 0, n_kv = 0;
};

// Magic, version and the two counts, each count bounded by the bytes left.
HeaderCounts read_header(ByteReader& r, uint64_t size, const std::string& path, uint32_t& version) {
  const uint32_t magic = r.read<uint32_t>("the magic");
  if (magic != kMagic) fail("'", path, "': bad magic: not a GGUF file");
  version = r.read<uint32_t>("the version");
  if (version == 1) fail("'", path, "': GGUF version 1 is not supported (re-convert with a current llama.cpp)");
  if (version != 2 && version != 3) {
    if ((version & 0xFFFF) == 0) fail("'", path, "': GGUF version ", version, " looks byte-swapped: big-endian GGUF files are not supported");
    fail("'", path, "': GGUF version ", version, " is not supported (this reader knows 2 and 3)");
  }
  HeaderCounts c;
  c.n_tensors = r.read<uint64_t>("the tensor count");
  c.n_kv = r.read<uint64_t>("the metadata count");
  // Smallest encodings: a key/value is 8 + 4 + 1 bytes, a tensor info 8 + 4 + 8 + 4 + 8.
  if (c.n_kv > r.remaining() / 13)
    fail("'", path, "': metadata count ", c.n_kv, " cannot fit in a ", size, "-byte file (truncated or corrupt header?)");
  if (c.n_tensors > r.remaining() / 32)
    fail("'", path, "': tensor count ", c.n_tensors, " cannot fit in a ", size, "-byte file (truncated or corrupt header?)");
  return c;
}

// n_kv key/value pairs, in file order, and each key's index into them; keys must be unique.
void read_metadata(Parser& parser, uint64_t n_kv, const std::string& path,
                   std::vector<std::pair<std::string, GGUFValue>>& kv, std::map<std::string, size_t>& index) {
  kv.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key(parser.read_string("metadata key #" + std::to_string(i), kMaxNameBytes));
    if (key.empty()) fail("'", path, "': metadata key #", i, " is empty");
    const std::string what = "metadata '" + key + "'";
    const GGUFType type = parser.read_type(what);
    GGUFValue v = parser.read_value(type, what, 0);
    if (!index.emplace(key, kv.size()).second) fail("'", path, "': metadata key '", key, "' appears twice");
    kv.emplace_back(key, std::move(v));
  }
}

// The tensor table: unique names, 1 to 4 dimensions, aligned offsets, sizes that fit 64 bits.
std::vector<GGUFTensorInfo> read_tensor_infos(Parser& parser, uint64_t n_tensors, uint64_t alignment,
                                              const std::string& path) {
  ByteReader& r = parser.reader();
  std::vector<GGUFTensorInfo> tensors;
  tensors.reserve(n_tensors);
  std::map<std::string, size_t> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GGUFTensorInfo t;
    t.name = std::string(parser.read_string("tensor name #" + std::to_string(i), kMaxNameBytes));
    const std::string what = "tensor '" + t.name + "'";
    if (!names.emplace(t.name, i).second) fail("'", path, "': ", what, " appears twice");
    const uint32_t n_dims = r.read<uint32_t>((what + " n_dims").c_str());
    if (n_dims == 0 || n_dims > kMaxDims) fail("'", path, "': ", what, " has ", n_dims, " dimensions (1 to 4 allowed)");
    for (uint32_t d = 0; d < n_dims; ++d) t.ne.push_back(r.read<uint64_t>((what + " dims").c_str()));
    t.type = r.read<uint32_t>((what + " type").c_str());
    t.offset = r.read<uint64_t>((what + " offset").c_str());
    if (t.offset % alignment != 0)
      fail("'", path, "': ", what, " offset ", t.offset, " is not a multiple of the alignment ", alignment);
    const uint64_t n = shape_elements(t.ne, "'" + path + "': " + what);
    if (ggml_is_dequantizable(t.type)) {
      t.size = ggml_quant_bytes(t.type, t.ne[0], n, "'" + path + "': " + what + " (" + ggml_type_name(t.type) + ")");
    } else {
      t.size = n * ggml_element_size(t.type);  // n < 2^62 but size may still overflow for 8-byte types:
      if (ggml_element_size(t.type) != 0 && t.size / ggml_element_size(t.type) != n)
        fail("'", path, "': ", what, " is too large");
    }
    tensors.push_back(std::move(t));
  }
  return tensors;
}

// Points each sized tensor at its bytes, which must lie inside the file's data section.
void place_tensors(std::vector<GGUFTensorInfo>& tensors, const uint8_t* base, uint64_t size, uint64_t data_offset,
                   const std::string& path) {
  const uint64_t data_size = size >= data_offset ? size - data_offset : 0;
  for (auto& t : tensors) {
    const bool sized = ggml_element_size(t.type) != 0 || ggml_is_dequantizable(t.type);
    if (t.offset > data_size || (sized && t.size > data_size - t.offset))
      fail("'", path, "': tensor '", t.name, "' (", ggml_type_name(t.type), ", ", sized ? std::to_string(t.size) : "?",
           " bytes at data offset ", t.offset, ") runs past the end of the file (", data_size,
           " data bytes): truncated?");
    if (sized) t.data = base + data_offset + t.offset;
  }
}

// Sized tensors must not share bytes.
void check_no_overlap(const std::vector<GGUFTensorInfo>& tensors, const std::string& path) {
  std::vector<const GGUFTensorInfo*> by_offset;
  for (const auto& t : tensors)
    if (t.data && t.size > 0) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GGUFTensorInfo* a, const GGUFTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i - 1]->offset + by_offset[i - 1]->size > by_offset[i]->offset)
      fail("'", path, "': tensors '", by_offset[i - 1]->name, "' and '", by_offset[i]->name, "' overlap");
}

}  // namespace

const char* gguf_type_name(GGUFType t) {
  switch (t) {
    case GGUFType::u8: return "u8";
    case GGUFType::i8: return "i8";
    case GGUFType::u16: return "u16";
    case GGUFType::i16: return "i16";
    case GGUFType::u32: return "u32";
    case GGUFType::i32: return "i32";
    case GGUFType::f32: return "f32";
    case GGUFType::boolean: return "bool";
    case GGUFType::string: return "string";
    case GGUFType::array: return "array";
    case GGUFType::u64: return "u64";
    case GGUFType::i64: return "i64";
    case GGUFType::f64: return "f64";
  }
  return "?";
}

std::string ggml_type_name(uint32_t type) {
  static const char* const names[] = {
      "F32", "F16", "Q4_0", "Q4_1", nullptr, nullptr, "Q5_0", "Q5_1", "Q8_0", "Q8_1",
      "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
      "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
      "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8",
      "IQ4_NL_8_8", "MXFP4"};
  if (type < sizeof(names) / sizeof(names[0]) && names[type]) return names[type];
  return "type " + std::to_string(type);
}

GGUFFile::GGUFFile(const std::string& path) : path_(path) {
  file_ = std::make_unique<MappedFile>(path);
  const uint8_t* base = file_->data();
  const uint64_t size = file_->size();
  Parser parser(base, size, path);

  const HeaderCounts counts = read_header(parser.reader(), size, path, version_);
  read_metadata(parser, counts.n_kv, path, kv_, index_);

  uint64_t align = 32;
  if (find("general.alignment")) {
    if (!get_uint("general.alignment", &align) || align == 0 || align > kMaxAlignment || (align & (align - 1)) != 0)
      fail("'", path, "': general.alignment ", align, " must be a power of two");
  }
  alignment_ = align;
  tensors_ = read_tensor_infos(parser, counts.n_tensors, alignment_, path);

  // The data section starts at the next multiple of the alignment.
  const uint64_t info_end = parser.reader().offset();
  data_offset_ = (info_end + alignment_ - 1) / alignment_ * alignment_;
  if (counts.n_tensors > 0 && data_offset_ > size)
    fail("'", path, "': truncated: tensor data should start at byte ", data_offset_, " but the file has ", size, " bytes");
  place_tensors(tensors_, base, size, data_offset_, path);
  check_no_overlap(tensors_, path);
}

const GGUFValue* GGUFFile::find(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &kv_[it->second].second;
}

bool GGUFFile::get_uint(const std::string& key, uint64_t* out) const {
  const GGUFValue* v = find(key);
  if (!v) return false;
  if (!is_integer(v->type))
    fail("'", path_, "': metadata '", key, "' has type ", gguf_type_name(v->type), ", expected an integer");
  const auto* p = reinterpret_cast<const uint8_t*>(&v->bits);
  if (is_signed(v->type)) {
    const int64_t x = int_at(v->type, p);
    if (x < 0) fail("'", path_, "': metadata '", key, "' is negative (", x, ")");
    *out = static_cast<uint64_t>(x);
  } else {
    *out = v->bits;
  }
  return true;
}

bool GGUFFile::get_float(const std::string& key, double* out) const {
  const GGUFValue* v = find(key);
  if (!v) return false;
  if (v->type == GGUFType::f32) {
    float f;
    std::memcpy(&f, &v->bits, 4);
    *out = f;
  } else if (v->type == GGUFType::f64) {
    std::memcpy(out, &v->bits, 8);
  } else if (is_integer(v->type)) {
    *out = is_signed(v->type) ? static_cast<double>(int_at(v->type, reinterpret_cast<const uint8_t*>(&v->bits)))
                              : static_cast<double>(v->bits);
  } else {
    fail("'", path_, "': metadata '", key, "' has type ", gguf_type_name(v->type), ", expected a number");
  }
  return true;
}

bool GGUFFile::get_bool(const std::string& key, bool* out) const {
  const GGUFValue* v = find(key);
  if (!v) return false;
  if (v->type != GGUFType::boolean)
    fail("'", path_, "': metadata '", key, "' has type ", gguf_type_name(v->type), ", expected bool");
  *out = v->bits != 0;
  return true;
}

bool GGUFFile::get_string(const std::string& key, std::string* out) const {
  const GGUFValue* v = find(key);
  if (!v) return false;
  if (v->type != GGUFType::string)
    fail("'", path_, "': metadata '", key, "' has type ", gguf_type_name(v->type), ", expected string");
  *out = std::string(v->str);
  return true;
}

namespace {
const GGUFValue& require_array(const GGUFFile& f, const std::string& key) {
  const GGUFValue* v = f.find(key);
  if (!v) fail("'", f.path(), "': missing metadata '", key, "'");
  if (v->type != GGUFType::array)
    fail("'", f.path(), "': metadata '", key, "' has type ", gguf_type_name(v->type), ", expected an array");
  return *v;
}
}  // namespace

std::vector<std::string_view> GGUFFile::get_string_array(const std::string& key) const {
  const GGUFValue& v = require_array(*this, key);
  if (v.elem_type != GGUFType::string)
    fail("'", path_, "': metadata '", key, "' is an array of ", gguf_type_name(v.elem_type), ", expected strings");
  return v.strings;
}

std::vector<float> GGUFFile::get_f32_array(const std::string& key) const {
  const GGUFValue& v = require_array(*this, key);
  std::vector<float> out(v.count);
  if (v.elem_type == GGUFType::f32) {
    if (v.count) std::memcpy(out.data(), v.raw, v.count * 4);
  } else if (v.elem_type == GGUFType::f64) {
    for (uint64_t i = 0; i < v.count; ++i) {
      double d;
      std::memcpy(&d, v.raw + 8 * i, 8);
      out[i] = static_cast<float>(d);
    }
  } else {
    fail("'", path_, "': metadata '", key, "' is an array of ", gguf_type_name(v.elem_type), ", expected f32");
  }
  return out;
}

std::vector<int32_t> GGUFFile::get_i32_array(const std::string& key) const {
  const GGUFValue& v = require_array(*this, key);
  if (!is_integer(v.elem_type))
    fail("'", path_, "': metadata '", key, "' is an array of ", gguf_type_name(v.elem_type), ", expected integers");
  const size_t n = scalar_size(v.elem_type);
  std::vector<int32_t> out(v.count);
  for (uint64_t i = 0; i < v.count; ++i) {
    const int64_t x = int_at(v.elem_type, v.raw + n * i);
    if (x < INT32_MIN || x > INT32_MAX) fail("'", path_, "': metadata '", key, "'[", i, "] = ", x, " is out of range");
    out[i] = static_cast<int32_t>(x);
  }
  return out;
}

}  // namespace cllm
