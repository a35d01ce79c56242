#include "convert/gguf_dequant.h"

#include <cstring>

#include "common/dtype.h"
#include "common/error.h"
#include "convert/gguf_reader.h"

namespace cllm {

namespace {

constexpr uint32_t kSuperBlock = 256;  // weights in a K-type block (ggml's QK_K)

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// One block of each type: reads layout(type).bytes bytes at b, writes layout(type).elems floats.

void dequantize_q8_0(const uint8_t* b, float* w) {
  const float d = f16_at(b);
  for (int j = 0; j < 32; ++j) w[j] = d * static_cast<float>(static_cast<int8_t>(b[2 + j]));
}

void dequantize_q4_0(const uint8_t* b, float* w) {
  const float d = f16_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    w[j] = d * static_cast<float>((qs[j] & 0x0F) - 8);
    w[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
  }
}

void dequantize_q4_1(const uint8_t* b, float* w) {
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    w[j] = d * static_cast<float>(qs[j] & 0x0F) + m;
    w[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
  }
}

// The 6-bit scale and min of sub-block i (0..7) of a Q4_K/Q5_K block, from its 12 bytes:
// bytes 0-3 hold the low 6 bits of scales 0-3 (their top 2 bits: the high bits of scales 4-7),
// bytes 4-7 the same for mins 0-3 and 4-7, bytes 8-11 the low nibbles of scale (low half) and
// min (high half) 4-7.
void k_scale_min(const uint8_t* s, int i, int* scale, int* min) {
  if (i < 4) {
    *scale = s[i] & 0x3F;
    *min = s[i + 4] & 0x3F;
  } else {
    *scale = (s[i + 4] & 0x0F) | ((s[i - 4] >> 6) << 4);
    *min = (s[i + 4] >> 4) | ((s[i] >> 6) << 4);
  }
}

// Q4_K (qh null) and Q5_K: 8 sub-blocks of 32, w = (d * scale) * q - (dmin * min).
void dequantize_k4_k5(const uint8_t* b, const uint8_t* qh, const uint8_t* qs, float* w) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  for (int i = 0; i < 8; ++i) {
    int sc = 0, mn = 0;
    k_scale_min(scales, i, &sc, &mn);
    const float step = d * static_cast<float>(sc), offset = dmin * static_cast<float>(mn);
    const uint8_t* nibbles = qs + 32 * (i / 2);
    const int shift = (i % 2) * 4;
    for (int l = 0; l < 32; ++l) {
      int q = (nibbles[l] >> shift) & 0x0F;
      if (qh) q |= ((qh[l] >> i) & 1) << 4;
      w[32 * i + l] = step * static_cast<float>(q) - offset;
    }
  }
}

void dequantize_q4_k(const uint8_t* b, float* w) { dequantize_k4_k5(b, nullptr, b + 16, w); }
void dequantize_q5_k(const uint8_t* b, float* w) { dequantize_k4_k5(b, b + 16, b + 48, w); }

// Q6_K: two halves of 128 weights; in half h, weight 32k + l (k 0..3, l 0..31) takes its low
// 4 bits from ql[64h + 32(k % 2) + l] (low nibble for k < 2, high for k >= 2) and its top 2
// bits from bits 2k, 2k+1 of qh[32h + l]; weight i of the block has scale scales[i / 16].
void dequantize_q6_k(const uint8_t* b, float* w) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16_at(b + 208);
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const int low = (ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0F;
        const int high = (qh[32 * h + l] >> (2 * k)) & 0x03;
        const int i = 128 * h + 32 * k + l;
        w[i] = (d * static_cast<float>(scales[i / 16])) * static_cast<float>((low | (high << 4)) - 32);
      }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_fn(uint32_t type) {
  switch (type) {
    case kGgmlQ8_0: return dequantize_q8_0;
    case kGgmlQ4_0: return dequantize_q4_0;
    case kGgmlQ4_1: return dequantize_q4_1;
    case kGgmlQ4_K: return dequantize_q4_k;
    case kGgmlQ5_K: return dequantize_q5_k;
    case kGgmlQ6_K: return dequantize_q6_k;
    default: return nullptr;
  }
}

}  // namespace

GgmlBlockLayout ggml_quant_layout(uint32_t type) {
  switch (type) {
    case kGgmlQ8_0: return {32, 34};
    case kGgmlQ4_0: return {32, 18};
    case kGgmlQ4_1: return {32, 20};
    case kGgmlQ4_K: return {kSuperBlock, 144};
    case kGgmlQ5_K: return {kSuperBlock, 176};
    case kGgmlQ6_K: return {kSuperBlock, 210};
    default: return {};
  }
}

uint64_t ggml_quant_bytes(uint32_t type, uint64_t row_elems, uint64_t n_elems, const std::string& what) {
  const GgmlBlockLayout b = ggml_quant_layout(type);
  if (b.elems == 0) fail(what, ": ", ggml_type_name(type), " is not a quantized type codecllm reads");
  if (row_elems % b.elems != 0)
    fail(what, ": rows of ", row_elems, " weights are not a whole number of ", ggml_type_name(type), " blocks (",
         b.elems, " weights each): corrupt tensor table?");
  return n_elems / b.elems * b.bytes;  // n_elems < 2^62, a multiple of the row length
}

void dequantize_ggml(uint32_t type, const uint8_t* src, uint64_t src_bytes, float* dst, uint64_t n,
                     const std::string& what) {
  const BlockFn fn = block_fn(type);
  const GgmlBlockLayout b = ggml_quant_layout(type);
  if (!fn) fail(what, ": cannot dequantize ggml type ", ggml_type_name(type));
  if (n % b.elems != 0)
    fail(what, ": ", n, " weights are not a whole number of ", ggml_type_name(type), " blocks (", b.elems, " each)");
  if (src_bytes != n / b.elems * b.bytes)
    fail(what, ": ", src_bytes, " bytes of ", ggml_type_name(type), " blocks, expected ", n / b.elems * b.bytes,
         " for ", n, " weights");
  for (uint64_t i = 0; i < n / b.elems; ++i) fn(src + i * b.bytes, dst + i * b.elems);
}

}  // namespace cllm
