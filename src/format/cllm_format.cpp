#include "format/cllm_format.h"

namespace cllm {

const char* tensor_codec_name(TensorCodec c) {
  switch (c) {
    case TensorCodec::none: return "none";
    case TensorCodec::exp_rans: return "exp-rans";
  }
  return "?";
}

std::string shape_to_string(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t TensorInfo::n_elems() const {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

uint64_t TensorInfo::stored_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tiles) n += t.size;
  return n;
}

}  // namespace cllm
