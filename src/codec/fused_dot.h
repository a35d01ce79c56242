// Row dot products summed in exactly the order of cuda/matvec.cu's bf16 kernel, on the CPU:
// the reference that the fused GPU product (which must give full mode's bits) is held to.
//
// matvec.cu, one warp per row of k weights: when k % 8 == 0 (its 16-byte path; the engine's
// weights and activations are 16-byte aligned), lane l takes the 8-weight chunks l, l + 32,
// l + 64, ... in that order, and for each adds to its sum (starting at 0) the chunk's dot
//     s = 0;  for p in 0..3:  s = s + fma(w[2p], x[2p], w[2p+1] * x[2p+1])
// (nvcc contracts `u.x * v.x + u.y * v.y` that way; read from the PTX of sm_80..sm_90).
// Otherwise lane l takes weights l, l + 32, ...: sum = fma(w, x, sum). Then the 32 lane sums
// meet in a butterfly: for o = 16, 8, 4, 2, 1: sum[l] = sum[l] + sum[l ^ o]; lane 0 has y.
#pragma once

#include <cstdint>

#include "codec/fused_layout.h"

namespace cllm::codec::fused {

// w (k) . x (k), bf16 bit patterns, in matvec's order.
float matvec_order_dot(const uint16_t* w, const uint16_t* x, uint32_t k);

// Row `row` of m . x (m.cols bf16), the weights decoded chunk by chunk as the fused kernel
// does, in matvec's order: bitwise equal to matvec_order_dot over the decoded row.
float fused_row_dot(const FusedMatrix& m, uint32_t row, const uint16_t* x);

}  // namespace cllm::codec::fused
