// Built with -ffp-contract=off (src/codec/CMakeLists.txt): every multiply, add and fma below is
// one IEEE operation, as on the GPU.
#include "codec/fused_dot.h"

#include <array>
#include <cmath>

#include "common/dtype.h"

namespace cllm::codec::fused {

namespace {

constexpr uint32_t kLanes = 32;

// The warp's butterfly: after it every lane holds the same sum (a + b == b + a in IEEE).
float warp_reduce(std::array<float, kLanes> sum) {
  for (uint32_t o = kLanes / 2; o > 0; o >>= 1) {
    std::array<float, kLanes> next;
    for (uint32_t l = 0; l < kLanes; ++l) next[l] = sum[l] + sum[l ^ o];
    sum = next;
  }
  return sum[0];
}

// One chunk's contribution, as matvec.cu's dot16 (w and x: 8 bf16 bit patterns each).
float chunk_dot(const uint16_t* w, const uint16_t* x) {
  float s = 0.0f;
  for (uint32_t p = 0; p < kChunk / 2; ++p) {
    const float hi = bf16_to_f32(w[2 * p + 1]) * bf16_to_f32(x[2 * p + 1]);
    s = s + std::fma(bf16_to_f32(w[2 * p]), bf16_to_f32(x[2 * p]), hi);
  }
  return s;
}

// k weights of which chunk(i, out) gives chunk i (8 bf16), dotted with x in matvec's order.
template <class ChunkOf>
float ordered_dot(uint32_t k, const uint16_t* x, ChunkOf chunk_of) {
  std::array<float, kLanes> sum{};
  uint16_t w[kChunk];
  if (k % kChunk == 0) {
    for (uint32_t l = 0; l < kLanes; ++l)
      for (uint32_t i = l; i < k / kChunk; i += kLanes) {
        chunk_of(i, w);
        sum[l] = sum[l] + chunk_dot(w, x + i * kChunk);
      }
  } else {
    for (uint32_t l = 0; l < kLanes; ++l)
      for (uint32_t i = l; i < k; i += kLanes) {
        chunk_of(i / kChunk, w);
        sum[l] = std::fma(bf16_to_f32(w[i % kChunk]), bf16_to_f32(x[i]), sum[l]);
      }
  }
  return warp_reduce(sum);
}

}  // namespace

float matvec_order_dot(const uint16_t* w, const uint16_t* x, uint32_t k) {
  return ordered_dot(k, x, [&](uint32_t i, uint16_t* out) {
    for (uint32_t j = 0; j < kChunk; ++j) out[j] = i * kChunk + j < k ? w[i * kChunk + j] : 0;
  });
}

float fused_row_dot(const FusedMatrix& m, uint32_t row, const uint16_t* x) {
  return ordered_dot(m.cols, x, [&](uint32_t i, uint16_t* out) { decode_chunk(m, row, i, out); });
}

}  // namespace cllm::codec::fused
