#include "format/cllm_format.h"
#include "convert/safetensors.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"
#include "convert/import_util.h"

namespace cllm {

namespace {

// safetensors' own reader refuses headers above 100 MB; so do we (a corrupt length must not
// make us parse gigabytes).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kMaxSafetensorsDims = 8;

bool dtype_from_safetensors(const std::string& s, DType* out) {
  if (s == "F32") *out = DType::F32;
  else if (s == "F16") *out = DType::F16;
  else if (s == "BF16") *out = DType::BF16;
  else return false;
  return true;
}

uint64_t json_u64(const nlohmann::json& v, const std::string& what) {
  if (!v.is_number_unsigned()) fail(what, " must be a non-negative integer, found ", v.dump());
  return v.get<uint64_t>();
}

}  // namespace

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::U8: return "U8";
  }
  return "?";
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

SafetensorsFile read_safetensors(const std::string& path) {
  SafetensorsFile out;
  out.file = std::make_unique<MappedFile>(path);
  const uint8_t* base = out.file->data();
  const uint64_t file_size = out.file->size();

  ByteReader r(base, file_size, path);
  const uint64_t header_len = r.read<uint64_t>("the header length");
  if (header_len > kMaxHeaderBytes || header_len > r.remaining())
    fail("'", path, "': header length ", header_len, " is larger than the file (", file_size,
         " bytes) or than 100 MB: not a safetensors file, or truncated");
  const uint8_t* header = r.take(header_len, "the JSON header");
  const uint64_t data_start = r.offset();
  const uint64_t data_size = file_size - data_start;

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header, header + header_len);
  } catch (const nlohmann::json::exception& e) {
    fail("'", path, "': the JSON header is invalid: ", e.what());
  }
  if (!j.is_object()) fail("'", path, "': the JSON header is not an object");

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("'", path, "': '__metadata__' must be an object");
      for (auto m = v.begin(); m != v.end(); ++m)
        out.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    const std::string what = "'" + path + "': tensor '" + name + "'";
    if (!v.is_object()) fail(what, ": entry must be an object");
    const auto dt = v.find("dtype");
    const auto sh = v.find("shape");
    const auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) fail(what, ": missing or bad 'dtype'");
    if (sh == v.end() || !sh->is_array()) fail(what, ": missing or bad 'shape'");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      fail(what, ": 'data_offsets' must be [begin, end]");

    SafetensorsTensor t;
    t.name = name;
    const std::string dtype = dt->get<std::string>();
    if (!dtype_from_safetensors(dtype, &t.dtype))
      fail(what, ": unsupported dtype ", dtype, " (codecllm takes F32, F16 or BF16 weights)");
    if (sh->size() > kMaxSafetensorsDims) fail(what, ": ", sh->size(), " dimensions (at most ", kMaxSafetensorsDims, ")");
    for (const auto& d : *sh) t.shape.push_back(json_u64(d, what + ": shape entry"));
    const uint64_t begin = json_u64((*off)[0], what + ": data_offsets[0]");
    const uint64_t end = json_u64((*off)[1], what + ": data_offsets[1]");
    if (begin > end || end > data_size)
      fail(what, ": data_offsets [", begin, ", ", end, "] fall outside the ", data_size,
           " data bytes (file truncated?)");
    const uint64_t n = shape_elements(t.shape, what);
    const uint64_t expect = n * dtype_size(t.dtype);  // n < 2^62, size <= 4: no overflow
    if (end - begin != expect)
      fail(what, ": data_offsets [", begin, ", ", end, "] hold ", end - begin, " bytes, but shape ",
           shape_to_string(t.shape), " ", dtype, " needs ", expect);
    t.data = base + data_start + begin;
    t.size = expect;
    out.tensors.push_back(std::move(t));
  }

  // No two tensors may share bytes (a crafted file could alias them).
  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) { return a.data < b.data; });
  for (size_t i = 1; i < out.tensors.size(); ++i) {
    const auto& prev = out.tensors[i - 1];
    const auto& cur = out.tensors[i];
    if (cur.size > 0 && prev.data + prev.size > cur.data)
      fail("'", path, "': tensors '", prev.name, "' and '", cur.name, "' overlap");
  }
  return out;
}

// ---- writer

SafetensorsWriter::SafetensorsWriter(const std::string& path, bool overwrite) : out_(path, overwrite) {}

void SafetensorsWriter::add_tensor(const std::string& name, DType dtype, const std::vector<uint64_t>& shape) {
  if (header_written_) fail("'", out_.path(), "': tensor '", name, "' declared after data was written");
  if (name.empty() || name == "__metadata__") fail("'", out_.path(), "': bad tensor name '", name, "'");
  if (dtype == DType::U8) fail("'", out_.path(), "': tensor '", name, "': only f32, f16 and bf16 can be written");
  for (const auto& e : entries_)
    if (e.name == name) fail("'", out_.path(), "': tensor '", name, "' declared twice");
  const uint64_t size = shape_elements(shape, "'" + out_.path() + "': tensor '" + name + "'") * dtype_size(dtype);
  entries_.push_back({name, dtype, shape, data_size_, data_size_ + size});
  data_size_ += size;
}

void SafetensorsWriter::add_metadata(const std::string& key, const std::string& value) {
  if (header_written_) fail("'", out_.path(), "': metadata added after data was written");
  metadata_[key] = value;
}

void SafetensorsWriter::write_header() {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    auto& m = j["__metadata__"];
    for (const auto& kv : metadata_) m[kv.first] = kv.second;
  }
  for (const auto& e : entries_) {
    auto& t = j[e.name];
    t["dtype"] = safetensors_dtype_name(e.dtype);
    t["shape"] = e.shape;
    t["data_offsets"] = {e.begin, e.end};
  }
  std::string text = j.dump();
  // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  const uint64_t len = text.size();
  out_.write(&len, sizeof(len));
  out_.write(text.data(), text.size());
  header_written_ = true;
}

void SafetensorsWriter::write(const void* data, size_t size) {
  if (!header_written_) write_header();
  if (size > data_size_ - written_)
    fail("'", out_.path(), "': ", written_ + size, " data bytes written, but the declared tensors hold ", data_size_);
  out_.write(data, size);
  written_ += size;
}

void SafetensorsWriter::commit() {
  if (!header_written_) write_header();
  if (written_ != data_size_) {
    for (const auto& e : entries_)
      if (written_ < e.end)
        fail("'", out_.path(), "': tensor '", e.name, "' incomplete: ", written_, " of ", data_size_, " data bytes written");
  }
  out_.commit();
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata, bool overwrite) {
  SafetensorsWriter w(path, overwrite);
  for (const auto& kv : metadata) w.add_metadata(kv.first, kv.second);
  for (const auto& e : entries) {
    w.add_tensor(e.name, e.dtype, e.shape);
    const uint64_t expect = shape_elements(e.shape, e.name) * dtype_size(e.dtype);
    if (e.size != expect)
      fail("'", path, "': tensor '", e.name, "': ", e.size, " bytes given, shape ", shape_to_string(e.shape),
           " ", dtype_name(e.dtype), " needs ", expect);
    if (e.size > 0 && !e.data) fail("'", path, "': tensor '", e.name, "': no data");
  }
  for (const auto& e : entries) w.write(e.data, e.size);
  w.commit();
}

}  // namespace cllm
