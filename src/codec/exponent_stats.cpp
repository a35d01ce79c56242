#include "codec/exponent_stats.h"

#include <cmath>

#include "codec/codec.h"

namespace cllm::codec {

void SymbolHistogram::add(DType t, const void* src, size_t n) {
  if (t == DType::F32) {
    const auto* v = static_cast<const uint32_t*>(src);
    for (size_t i = 0; i < n; ++i) ++count[(v[i] >> 23) & 0xFF];
  } else if (t == DType::F16 || t == DType::BF16) {
    const auto* v = static_cast<const uint16_t*>(src);
    for (size_t i = 0; i < n; ++i) ++count[(v[i] >> 7) & 0xFF];
  } else {
    return;  // u8 has no symbols
  }
  total += n;
}

void SymbolHistogram::merge(const SymbolHistogram& o) {
  for (size_t s = 0; s < 256; ++s) count[s] += o.count[s];
  total += o.total;
}

double SymbolHistogram::entropy_bits() const {
  if (total == 0) return 0.0;
  double h = 0.0;
  for (auto c : count) {
    if (c == 0) continue;
    const double p = static_cast<double>(c) / static_cast<double>(total);
    h -= p * std::log2(p);
  }
  return h;
}

double order0_bound_bits(DType t, uint64_t n, double h) {
  return static_cast<double>(n) * (8.0 * raw_bytes_per_elem(t) + h);
}

}  // namespace cllm::codec
