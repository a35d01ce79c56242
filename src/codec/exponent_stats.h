// Exponent-field statistics: the order-0 entropy bound the codec is measured against.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

namespace cllm::codec {

// Histogram of the 8-bit symbols (exponent fields, docs/codec.md) of n values of type t.
struct SymbolHistogram {
  std::array<uint64_t, 256> count{};
  uint64_t total = 0;
  void add(DType t, const void* src, size_t n);
  void merge(const SymbolHistogram& o);
  double entropy_bits() const;  // H, bits per symbol
};

// The order-0 bound in bits for n values whose symbols have entropy h:
// n * (8 * raw_bytes_per_elem(t) + h). For bf16 that is (8 + H) / 16 of the size.
double order0_bound_bits(DType t, uint64_t n, double h);

}  // namespace cllm::codec
