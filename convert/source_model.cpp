#include "convert/source_model.h"

#include <cstring>
#include <map>

#include "common/error.h"
#include "format/cllm_format.h"

namespace cllm {

const char* source_format_name(SourceFormat f) {
  switch (f) {
    case SourceFormat::hf: return "hf";
    case SourceFormat::llama2c: return "llama2c";
    case SourceFormat::gguf: return "gguf";
  }
  return "?";
}

const SourceTensor* SourceModel::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

uint64_t SourceModel::total_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.size;
  return n;
}

void check_and_order_tensors(SourceModel& m) {
  m.config.validate();
  std::map<std::string, SourceTensor*> by_name;
  for (auto& t : m.tensors) {
    if (!by_name.emplace(t.name, &t).second) fail("'", m.path, "': tensor '", t.name, "' appears twice");
  }
  std::vector<SourceTensor> ordered;
  for (const auto& spec : expected_tensors(m.config)) {
    auto it = by_name.find(spec.name);
    if (it == by_name.end()) fail("'", m.path, "': missing tensor '", spec.name, "' (shape ", shape_to_string(spec.shape), ")");
    SourceTensor& t = *it->second;
    const std::string what = "'" + m.path + "': tensor '" + t.source_name + "'";
    if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
      fail(what, ": unsupported dtype ", dtype_name(t.dtype), " (expected f32, f16 or bf16)");
    if (t.shape != spec.shape)
      fail(what, ": shape ", shape_to_string(t.shape), " does not match the config: expected ", shape_to_string(spec.shape));
    uint64_t n = 1;
    for (auto d : t.shape) n *= d;
    if (t.size != n * dtype_size(t.dtype))
      fail(what, ": ", t.size, " bytes, expected ", n * dtype_size(t.dtype), " for shape ", shape_to_string(t.shape), " ", dtype_name(t.dtype));
    ordered.push_back(t);
    by_name.erase(it);
  }
  if (!by_name.empty())
    fail("'", m.path, "': unexpected tensor '", by_name.begin()->second->source_name, "' for a ", m.config.architecture, " model with this config");
  m.tensors = std::move(ordered);
}

SourceModel open_source_model(const std::string& path, const ImportOptions& opt) {
  if (!path_exists(path)) fail("'", path, "': no such file or directory");
  if (is_directory(path)) return import_hf_folder(path, opt);
  // GGUF files start with the magic "GGUF"; llama2.c checkpoints have no magic at all.
  char magic[4] = {};
  {
    MappedFile f(path);
    if (f.size() >= 4) std::memcpy(magic, f.data(), 4);
  }
  if (std::memcmp(magic, "GGUF", 4) == 0) return import_gguf(path, opt);
  if (std::memcmp(magic, "CLLM", 4) == 0) fail("'", path, "' is already a .cllm file");
  return import_llama2c(path, opt);
}

}  // namespace cllm
