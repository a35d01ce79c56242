#include "convert/gguf_tensors.h"

#include <cstring>

#include "common/error.h"
#include "common/file_io.h"
#include "convert/gguf_dequant.h"
#include "convert/import_util.h"

namespace cllm {

namespace {

bool plain_float_type(uint32_t type, DType* out) {
  switch (type) {
    case kGgmlF32: *out = DType::F32; return true;
    case kGgmlF16: *out = DType::F16; return true;
    case kGgmlBF16: *out = DType::BF16; return true;
    default: return false;
  }
}

std::string supported_types() {
  std::string out = "F32, F16, BF16";
  for (uint32_t t : {kGgmlQ8_0, kGgmlQ4_0, kGgmlQ4_1, kGgmlQ4_K, kGgmlQ5_K, kGgmlQ6_K}) out += ", " + ggml_type_name(t);
  return out;
}

// The tensor's weights dequantized to f32, in a buffer m owns.
SourceTensor dequantized_tensor(const GGUFFile& g, const GGUFTensorInfo& t, SourceModel& m) {
  const std::string what = "'" + g.path() + "': tensor '" + t.name + "'";
  const uint64_t n = shape_elements(t.ne, what);
  std::vector<uint8_t> buf(n * sizeof(float));
  dequantize_ggml(t.type, t.data, t.size, reinterpret_cast<float*>(buf.data()), n, what);
  SourceTensor s;
  s.dtype = DType::F32;
  s.data = buf.data();
  s.size = buf.size();
  m.owned.push_back(std::move(buf));
  return s;
}

// Every value of t (F32, F16 or BF16) as f32; exact.
std::vector<float> values_f32(const SourceTensor& t) {
  std::vector<float> v(t.size / dtype_size(t.dtype));
  to_f32(t.dtype, t.data, v.data(), v.size());
  return v;
}

bool exact_in(DType d, float x) {
  const uint32_t bits = f32_bits(x);
  if (d == DType::BF16) return (bits & 0xFFFFu) == 0;
  if (d == DType::F16) return f32_bits(f16_to_f32(f32_to_f16(x))) == bits;
  return true;
}

// The narrowest dtype, bf16 before f16 before f32, that holds every matrix value exactly.
DType matrix_dtype(const SourceModel& m) {
  bool bf16 = true, f16 = true;  // every matrix value seen so far fits
  for (const SourceTensor& t : m.tensors) {
    if (t.shape.size() != 2) continue;
    for (float x : values_f32(t)) {
      bf16 = bf16 && exact_in(DType::BF16, x);
      f16 = f16 && exact_in(DType::F16, x);
      if (!bf16 && !f16) return DType::F32;
    }
  }
  return bf16 ? DType::BF16 : f16 ? DType::F16 : DType::F32;
}

// Stores t's values in dtype d (exact: d was chosen so), in a buffer m owns.
void convert_tensor(SourceTensor& t, DType d, SourceModel& m) {
  const std::vector<float> v = values_f32(t);
  std::vector<uint8_t> buf(v.size() * dtype_size(d));
  if (d == DType::F32) {
    if (!buf.empty()) std::memcpy(buf.data(), v.data(), buf.size());  // an empty tensor's data() may be null
  } else {
    auto* out = reinterpret_cast<uint16_t*>(buf.data());
    for (size_t i = 0; i < v.size(); ++i) out[i] = d == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
  }
  t.dtype = d;
  t.size = buf.size();
  // A dequantized tensor's f32 buffer is replaced, not kept beside its narrower copy.
  for (auto& b : m.owned)
    if (b.data() == t.data) {
      b = std::move(buf);
      t.data = b.data();
      return;
    }
  t.data = buf.data();
  m.owned.push_back(std::move(buf));
}

}  // namespace

std::string GgufQuantization::types() const {
  std::string out;
  for (const auto& [name, n] : tensors_by_type)
    out += (out.empty() ? "" : ", ") + name + " (" + std::to_string(n) + (n == 1 ? " tensor)" : " tensors)");
  return out;
}

const GGUFTensorInfo* add_gguf_tensors(const GGUFFile& g, SourceModel& m, GgufQuantization* q) {
  const GGUFTensorInfo* rope_freqs = nullptr;
  q->file_bytes = file_size(g.path());
  for (const auto& t : g.tensors()) {
    if (t.name == "rope_freqs.weight") {
      rope_freqs = &t;
      continue;
    }
    SourceTensor s;
    if (plain_float_type(t.type, &s.dtype)) {
      s.data = t.data;
      s.size = t.size;
    } else if (ggml_is_dequantizable(t.type)) {
      s = dequantized_tensor(g, t, m);
      q->tensors_by_type[ggml_type_name(t.type)] += 1;
    } else {
      fail("'", g.path(), "': tensor '", t.name, "' has GGUF type ", ggml_type_name(t.type), " (", t.type,
           "): codecllm reads ", supported_types());
    }
    s.name = s.source_name = t.name;
    s.shape = t.shape();
    m.tensors.push_back(std::move(s));
  }
  if (q->any()) {
    q->matrix_dtype = matrix_dtype(m);
    for (SourceTensor& t : m.tensors)
      if (t.shape.size() == 2 && t.dtype != q->matrix_dtype) convert_tensor(t, q->matrix_dtype, m);
  }
  return rope_freqs;
}

void record_gguf_quantization(const GgufQuantization& q, SourceModel& m) {
  if (!q.any()) return;
  m.extra_metadata["general.source.quantization"] = q.types();
  m.extra_metadata["general.source.dequantized_dtype"] = dtype_name(q.matrix_dtype);
  m.extra_metadata["general.source.file_bytes"] = q.file_bytes;
}

}  // namespace cllm
