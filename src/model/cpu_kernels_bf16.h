// Matrix products and attention straight from 16-bit (bf16 or f16) weights and KV caches in
// host memory, with no fp32 copy of the weights: the kernels of the layers the hybrid runtime
// computes on the CPU (issue 8; cpu_layer.h strings them into a layer).
//
// Numerics, chosen to be the GPU engine's (docs/architecture.md, "GPU numerics"):
// - The input of a product is rounded to the weights' dtype first (as the GPU engine,
//   llama.cpp and transformers do). A bf16 x bf16 or f16 x f16 product is then exact in fp32,
//   so a fused multiply-add rounds exactly as a multiply followed by an add.
// - Each output element is one dot product, computed by one thread, summed in cpu::dot's
//   order (cpu_ops.h: 8 lanes, lane l takes the elements i with i % 8 == l, then a fixed
//   tree). So the scalar, AVX2 and AVX-512 paths give the same bits, for any thread count,
//   batch size and blocking, and those bits are cpu::matmul's on the weights widened to fp32
//   and the rounded inputs. (Exact products need |w * x| inside fp32's normal range: always
//   for f16; for bf16 unless a product falls below 2^-126 or overflows, which trained weights
//   and activations never come near.)
// - The AVX512_BF16 path (vdpbf16ps, bf16 weights only) adds products in pairs with the CPU's
//   own rounding: deterministic on a given CPU, but only within fp32 rounding of the other
//   paths (tests/test-cpu-kernels.cpp states the bound).
// - attention_head_f16 gives cpu::attention_head's bits on the cache widened to fp32. (The CPU
//   layers now run cpu_attention.h instead, which is faster at depth but not bit-exact.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/dtype.h"
#include "common/thread_pool.h"

namespace cllm::cpu {

// Instruction sets with their own inner loops, each in its own file built with its flags
// (cpu_kernels_avx2.cpp, ...) and chosen at run time from what the CPU reports.
enum class Isa {
  scalar,       // portable C++: one weight row widened at a time, cpu::dot
  avx2,         // AVX2 + FMA + F16C
  avx512,       // AVX-512 F/BW/VL
  avx512_bf16,  // + AVX512_BF16 (vdpbf16ps) for bf16 weights; f16 weights as avx512
};
const char* isa_name(Isa isa);  // "scalar", "avx2", "avx512", "avx512-bf16"
bool isa_from_name(const std::string& name, Isa* out);
// Compiled into this build and supported by this CPU (and its OS).
bool isa_available(Isa isa);
// The best available ISA, or the one named by the environment variable CLLM_CPU_ISA (which
// throws when it names an unknown or unavailable one). Computed once.
Isa isa_best();

// out[i] = x[i] rounded to t (round to nearest even, as common/dtype.h) and widened back to
// fp32; t = F32 copies. out may equal x.
void round_to_dtype(DType t, const float* x, float* out, size_t n, Isa isa = isa_best());

// One product of a shared input: y (n, d) = x (n, k) @ w (d, k)^T, or y += that with
// accumulate (a residual add folded in: y + dot, rounded once, as adding a separate result).
struct Product16 {
  const void* w = nullptr;  // (d, k) bf16 or f16, row-major (nn.Linear.weight)
  int d = 0;
  float* y = nullptr;       // y[t * ldy + r], ldy >= d
  int ldy = 0;
  bool accumulate = false;
};

// y (n, d) [+]= round(x) (n, k) @ w (d, k)^T with w of dtype wt (BF16 or F16); x's rows are k
// floats apart. Rows are split among the pool's threads (inline when pool is null or the
// product is small).
void matmul16(float* y, int ldy, const float* x, const void* w, DType wt, int n, int k, int d, ThreadPool* pool,
              bool accumulate = false, Isa isa = isa_best());
// Several products of one input (q/k/v, gate/up) as one parallel loop: one rounding of x,
// one wake-up of the pool.
void matmul16_multi(const Product16* products, int count, const float* x, DType wt, int n, int k, ThreadPool* pool,
                    Isa isa = isa_best());

// cpu::attention_head (cpu_ops.h) over an f16 cache: k and v point at the head's first
// element of position 0, rows kv_stride elements apart; scores is scratch of n_pos floats.
void attention_head_f16(float* out, const float* q, const uint16_t* k, const uint16_t* v, int n_pos, int kv_stride,
                        int head_dim, float* scores, Isa isa = isa_best());

}  // namespace cllm::cpu
