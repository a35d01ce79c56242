#include "format/cllm_format.h"
#include "convert/import_util.h"

#include <cmath>
#include <map>

#include "common/error.h"
#include "common/file_io.h"

namespace cllm {

uint64_t shape_elements(const std::vector<uint64_t>& shape, const std::string& what) {
  constexpr uint64_t kMax = uint64_t(1) << 62;
  uint64_t n = 1;
  for (uint64_t d : shape) {
    if (d != 0 && n > kMax / d) fail(what, ": shape ", shape_to_string(shape), " is too large");
    n *= d;
  }
  return n;
}

void ByteReader::need(uint64_t n, const char* field) const {
  if (n > size_ - pos_)
    fail("'", file_, "': truncated at byte ", pos_, " while reading ", field, " (needs ", n,
         " more bytes, file is ", size_, " bytes)");
}

void ByteReader::seek(uint64_t offset, const char* field) {
  if (offset > size_) fail("'", file_, "': ", field, " offset ", offset, " is past the end of the file (", size_, " bytes)");
  pos_ = offset;
}

// ---- JSON fields

const nlohmann::json* json_find(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

namespace {

int as_int(const nlohmann::json& v, const char* key, const std::string& file) {
  double d = 0;
  if (v.is_number_integer()) {
    const auto x = v.get<int64_t>();
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT32_MAX))
      fail("'", file, "': '", key, "' is out of range: ", v.dump());
    if (x < INT32_MIN || x > INT32_MAX) fail("'", file, "': '", key, "' is out of range: ", v.dump());
    return static_cast<int>(x);
  }
  if (v.is_number_float()) {  // some exporters write 4096.0
    d = v.get<double>();
    if (std::floor(d) == d && d >= INT32_MIN && d <= INT32_MAX) return static_cast<int>(d);
  }
  fail("'", file, "': '", key, "' must be an integer, found ", v.dump());
}

}  // namespace

int json_int(const nlohmann::json& obj, const char* key, const std::string& file) {
  const auto* v = json_find(obj, key);
  if (!v) fail("'", file, "': missing '", key, "'");
  return as_int(*v, key, file);
}

int json_int_or(const nlohmann::json& obj, const char* key, int def, const std::string& file) {
  const auto* v = json_find(obj, key);
  return v ? as_int(*v, key, file) : def;
}

double json_number_or(const nlohmann::json& obj, const char* key, double def, const std::string& file) {
  const auto* v = json_find(obj, key);
  if (!v) return def;
  if (!v->is_number()) fail("'", file, "': '", key, "' must be a number, found ", v->dump());
  return v->get<double>();
}

bool json_bool_or(const nlohmann::json& obj, const char* key, bool def, const std::string& file) {
  const auto* v = json_find(obj, key);
  if (!v) return def;
  if (!v->is_boolean()) fail("'", file, "': '", key, "' must be true or false, found ", v->dump());
  return v->get<bool>();
}

std::string json_string_or(const nlohmann::json& obj, const char* key, const std::string& def,
                           const std::string& file) {
  const auto* v = json_find(obj, key);
  if (!v) return def;
  if (!v->is_string()) fail("'", file, "': '", key, "' must be a string, found ", v->dump());
  return v->get<std::string>();
}

nlohmann::json json_read_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("'", path, "': invalid JSON: ", e.what());
  }
}

// ---- tensors and metadata

std::string path_stem(const std::string& path) {
  std::string base = path_basename(path);
  const auto dot = base.rfind('.');
  if (dot != std::string::npos && dot > 0) base.resize(dot);
  return base;
}

bool tensors_identical(const SourceTensor& a, const SourceTensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.size == b.size &&
         (a.size == 0 || std::memcmp(a.data, b.data, a.size) == 0);
}

void check_shapes_against_config(const SourceModel& m, const std::vector<std::string>& file_of,
                                  const std::string& config_what) {
  std::map<std::string, const TensorSpec*> specs;
  const auto expected = expected_tensors(m.config);
  for (const auto& s : expected) specs[s.name] = &s;
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const SourceTensor& t = m.tensors[i];
    auto it = specs.find(t.name);
    if (it == specs.end() || t.shape == it->second->shape) continue;
    fail("'", file_of.at(i), "': tensor '", t.source_name, "': shape ", shape_to_string(t.shape),
         " does not match ", config_what, ", which implies ", shape_to_string(it->second->shape),
         " for ", t.name, " (dim ", m.config.dim, ", heads ", m.config.n_heads, ", kv heads ",
         m.config.n_kv_heads, ", head_dim ", m.config.head_dim, ", ffn ", m.config.ffn_dim,
         ", vocab ", m.config.vocab_size, ")");
  }
}

void check_layer_count(const SourceModel& m, const std::string& what) {
  if (m.config.n_layers > 0 && static_cast<uint64_t>(m.config.n_layers) > m.tensors.size() / 9)
    fail(what, " says ", m.config.n_layers, " layers, but the weights hold only ", m.tensors.size(),
         " tensors (at least 9 per layer)");
}

void fill_source_metadata(SourceModel& m) {
  auto& meta = m.extra_metadata;
  if (!meta.is_object()) meta = nlohmann::json::object();
  meta["general.name"] = m.format == SourceFormat::hf ? path_basename(m.path) : path_stem(m.path);
  meta["general.source.format"] = source_format_name(m.format);
  meta["general.source.path"] = m.path;
  // The matrices' dtype (norms may be stored wider): layer 0's query projection.
  const SourceTensor* q = m.find(layer_tensor_name(0, "attn_q"));
  if (!q && !m.tensors.empty()) q = &m.tensors.front();
  if (q) meta["general.source.dtype"] = dtype_name(q->dtype);
  meta["tokenizer.model"] = m.tokenizer.kind.empty() ? "none" : m.tokenizer.kind;
  meta["tokenizer.source"] = m.tokenizer.origin;
}

}  // namespace cllm
