// Causal attention of a batch of tokens over a KV cache (f16 or f32) on the CPU, for both CPU
// engines (forward_cpu's fp32 reference, cpu_layer's hybrid layers). Built for long contexts
// (thousands of cached positions, 1..16 new tokens):
// - Work items are (kv head, chunk of kAttentionChunk positions): every thread has work even
//   for one token, and each kv head's keys and values are read once per item for all the
//   query heads of its group (GQA) and all tokens of the batch.
// - An item computes, per (token, query head), the chunk's scores, their maximum m, the sum l
//   of exp(score - m) and the unnormalised weighted sum o of the values (a softmax local to the
//   chunk). A second pass combines the chunks of each (token, head) in position order:
//   out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c, M = max_c m_c.
// - The chunks are fixed by position alone (chunk c is [c * 256, (c + 1) * 256)), every sum has
//   one fixed order, and each (token, head) is computed the same whichever other tokens share
//   the batch: results depend neither on the thread count, nor on timing, nor on batching.
// - The AVX2 (F16C, FMA) and AVX-512 paths (cpu_attention_avx2/avx512.cpp) differ from the
//   scalar one and from each other in rounding only (FMA, lane counts, a polynomial exp); the
//   scalar cpu::attention_head stays the oracle, and tests/test-cpu-attention.cpp states the
//   tolerance.
#pragma once

#include "common/dtype.h"
#include "common/thread_pool.h"
#include "model/cpu_kernels_bf16.h"
#include "model/llama_config.h"

namespace cllm::cpu {

constexpr int kAttentionChunk = 256;  // positions per work item

struct AttentionArgs {
  float* out = nullptr;        // token t, head h at out + t * out_stride + h * head_dim
  int out_stride = 0;
  const float* q = nullptr;    // token t, head h at q + t * q_stride + h * head_dim (after RoPE)
  int q_stride = 0;
  const void* k = nullptr;     // position p, kv head j at k + p * kv_stride + j * head_dim
  const void* v = nullptr;     // (elements of kv_dtype)
  DType kv_dtype = DType::F16;  // F16 or F32
  int kv_stride = 0;
  int n_tokens = 0;            // token t sits at position pos + t and sees positions [0, pos + t]
  int pos = 0;
  int window = 0;              // > 0: token t sees only [pos + t - window + 1, pos + t] (sliding window)
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;  // n_heads a multiple of n_kv_heads
  float scale = 0;             // scores are q.k * scale; 0: 1 / sqrt(head_dim)
  float softcap = 0;           // > 0: scores become softcap * tanh(score / softcap) (Gemma 2)
};

// The arguments for a model's layer: q and out (n, q_dim) fp32 rows, the layer's cache of
// (context, kv_dim) rows of kv_dtype; the layer's sliding window, the config's score scale and
// softcap.
AttentionArgs layer_attention_args(const LlamaConfig& c, int layer, float* out, const float* q, const void* k,
                                   const void* v, DType kv_dtype, int n, int pos);

// out = softmax(softcap(q k^T * scale)) v per (token, head), causal (and within the window),
// on the pool's threads. Keys and values of positions [0, pos + n_tokens) must be in the cache
// (finite: a chunk's positions below a row's window get weight 0, and 0 * NaN is NaN). Chunks wholly below a token's window are neither
// computed nor combined, so a window changes no bit of a row that it does not shorten.
// Throws on bad shapes.
void attention(const AttentionArgs& a, ThreadPool* pool, Isa isa = isa_best());

}  // namespace cllm::cpu
