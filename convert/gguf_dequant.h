// ggml's block-quantized tensor types that codecllm imports, and their dequantization to f32.
//
// A quantized tensor is a sequence of blocks; each row (ne[0] elements) is a whole number of
// blocks, and a block holds `elems` weights in `bytes` bytes: scales (IEEE f16) and small
// integers. Block layouts (all little-endian; "d" a scale, "m" a minimum, q the integers):
//   Q8_0  34 B / 32:  f16 d | i8 q[32]                     w = d * q
//   Q4_0  18 B / 32:  f16 d | u8 qs[16]                    w = d * (q - 8);  q[j] = low nibble of
//                     qs[j], q[j + 16] = its high nibble
//   Q4_1  20 B / 32:  f16 d | f16 m | u8 qs[16]            w = d * q + m;  nibbles as Q4_0
//   Q4_K 144 B / 256: f16 d | f16 dmin | u8 scales[12] | u8 qs[128]
//                     8 sub-blocks of 32 with 6-bit scale s and min n each (packed in scales[]);
//                     w = (d * s) * q - (dmin * n); sub-block 2i reads the low nibbles of
//                     qs[32i .. 32i+31], sub-block 2i+1 their high nibbles
//   Q5_K 176 B / 256: as Q4_K, with u8 qh[32] before qs[128]: bit i of qh[l] is the fifth bit
//                     of element l of sub-block i
//   Q6_K 210 B / 256: u8 ql[128] | u8 qh[64] | i8 scales[16] | f16 d
//                     16 sub-blocks of 16, w = (d * scale) * (q - 32), q 6 bits: 4 from ql,
//                     2 from qh (see dequantize_q6_k for which)
// The value of a weight is defined as ggml and the gguf Python package compute it, in f32
// arithmetic in the order written above. Every product there is exact in f32 (at most 11 + 8
// + 6 significant bits); only Q4_1's and the K types' final addition rounds, so the values
// are the same whether or not a compiler fuses multiply and add.
#pragma once

#include <cstdint>
#include <string>

namespace cllm {

enum : uint32_t {
  kGgmlQ4_0 = 2, kGgmlQ4_1 = 3, kGgmlQ8_0 = 8, kGgmlQ4_K = 12, kGgmlQ5_K = 13, kGgmlQ6_K = 14,
};

struct GgmlBlockLayout {
  uint32_t elems = 0;  // weights per block
  uint32_t bytes = 0;  // bytes per block
};

// The block layout of a quantized type codecllm dequantizes; {0, 0} for any other type.
GgmlBlockLayout ggml_quant_layout(uint32_t type);
inline bool ggml_is_dequantizable(uint32_t type) { return ggml_quant_layout(type).elems != 0; }

// Bytes of a quantized tensor of n_elems weights in rows of row_elems. Throws naming `what`
// (e.g. "'m.gguf': tensor 'blk.0.ffn_down.weight'") when a row is not a whole number of blocks.
uint64_t ggml_quant_bytes(uint32_t type, uint64_t row_elems, uint64_t n_elems, const std::string& what);

// Dequantizes n weights (a whole number of blocks) from src (src_bytes, exactly the blocks'
// size) into dst. Throws naming `what` when the sizes do not fit.
void dequantize_ggml(uint32_t type, const uint8_t* src, uint64_t src_bytes, float* dst, uint64_t n,
                     const std::string& what);

}  // namespace cllm
