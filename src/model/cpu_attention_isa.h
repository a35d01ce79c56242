// Internal to src/model: the per-ISA loops behind cpu_attention.h, one file per instruction set
// built with its flags (cpu_attention_avx2.cpp, cpu_attention_avx512.cpp, sharing
// cpu_attention_simd.inc), chosen at run time by cpu_attention.cpp. Plain types only, for the
// reason cpu_kernels_isa.h gives.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cllm::cpu::attn {

constexpr int kChunk = 256;  // == cpu::kAttentionChunk (static_assert in cpu_attention.cpp)

// A row's partial result for one chunk: o[0, head_dim) (unnormalised weighted sum of values),
// then m (the chunk's largest scaled score) and l (sum of exp(score - m)) at kPartM, kPartL
// from the row's end. Rows are part_stride = round_up(head_dim, 16) + 16 floats apart
// (cpu_attention.cpp computes it: no inline functions here).
constexpr int kPartM = 16, kPartL = 15;  // offsets back from the row's end

// The first position token t sees: 0, or with a window the window's start.
inline int first_visible(int pos, int t, int window) {
  const int lo = pos + t - window + 1;
  return window > 0 && lo > 0 ? lo : 0;
}

// One work item: `heads` consecutive kv heads' positions [p0, p1) for the query rows (t, g), t in
// [t0, t1) (tokens whose range reaches p0 and, with a window, starts below p1), g < group (the kv
// head's query heads). Every row sees at least one of the positions. The fields below describe
// the first head; head h's q, k and v are h x group x head_dim floats and h x head_dim elements
// on, its partial rows h x part_head_stride floats on. Each (head, chunk) is computed alike
// whatever the item holds.
struct ChunkArgs {
  const float* q = nullptr;    // row (t, g) at q + t * q_stride + g * head_dim
  int q_stride = 0;
  const void* k = nullptr;     // the kv head's position 0; positions kv_stride elements apart
  const void* v = nullptr;
  bool f16 = true;             // else f32
  int kv_stride = 0;
  int head_dim = 0, group = 0;
  int t0 = 0, t1 = 0;
  int pos = 0;                 // token t sees positions [0, pos + t]
  int window = 0;              // > 0: ... and only those >= pos + t - window + 1
  int p0 = 0, p1 = 0;          // p1 - p0 <= kAttentionChunk
  float scale = 0;             // 1 / sqrt(head_dim), or the model's own (Gemma)
  float softcap = 0;           // > 0: scores become softcap * tanh(score / softcap)
  float* part = nullptr;       // row (t, g) at part + ((t - t_base) * group + g) * part_stride
  int t_base = 0;
  int part_stride = 0;
  int heads = 1;
  size_t part_head_stride = 0;
};
using ChunkFn = void (*)(const ChunkArgs& a);

// out[0, head_dim) from a row's n_chunks partials, chunk c's at part + c * chunk_stride, in
// order of c; part_stride as above (m and l at its end).
using CombineFn = void (*)(float* out, const float* part, size_t chunk_stride, int n_chunks, int head_dim,
                           int part_stride);

struct AttentionKernels {
  ChunkFn chunk = nullptr;
  CombineFn combine = nullptr;
};

// Null where the file was built without the ISA's flags.
const AttentionKernels* avx2_attention();
const AttentionKernels* avx512_attention();

}  // namespace cllm::cpu::attn
