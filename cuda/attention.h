// Causal attention over one layer's KV cache (cuda/attention.cu; the f16 tensor-core kernels in attention_prefill.cu and attention_decode.cu).
//
// q (n, n_heads*head_dim) fp32 after RoPE; k_cache, v_cache (context, kv_dim) with
// kv_dim = n_kv_heads*head_dim, rows 0 .. pos+n-1 valid; out (n, n_heads*head_dim) in out_dt.
// Query t (absolute position pos+t) of head h attends to rows 0 .. pos+t of kv head
// h / (n_heads / n_kv_heads); with a sliding window (window > 0, the last argument of every
// entry point, 0 by default) only to rows pos+t-window+1 .. pos+t. Every path skips the tiles
// and chunks below a query's window, and a window that shortens no query's range changes no bit. With n == 1, pos may come from d_pos in device memory (a CUDA
// graph captured once serves every position).
//
// Paths (f16 caches with head_dim 64 or 128; anything else takes the fp32 kernels):
// - n <= kMaxDecodeTokens, "flash-decoding": the rows 0 .. context-1 are cut into fixed chunks
//   whose size depends only on context (attention_decode_chunk). One block per (chunk, kv head,
//   up to 64 query rows: all of the group's heads for all n tokens when n x group <= 64)
//   computes its partial softmax (max, sum, unnormalised output) into the
//   workspace; a combine kernel merges the chunks of each query in chunk order. Results depend
//   only on (inputs, pos, context): the same bits whether pos comes from the host or from d_pos
//   inside a graph (where the grid covers the whole context and blocks past pos exit at once).
// - n > kMaxDecodeTokens: flash attention on tensor cores (mma.sync m16n8k16, f16 in, fp32
//   accumulate), 64 query rows x 64 keys a step, no workspace.
// - f32 caches (f32 models, checked against the CPU at 1e-4) or other head_dims: the fp32
//   CUDA-core kernels (one block per head for n == 1, 32 queries a block otherwise).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "common/dtype.h"
#include "cuda/attention_sizes.h"

namespace cllm::cuda {

constexpr int kMaxHeadDim = 256;

// How q.k becomes a score: times scale (0: 1/sqrt(head_dim)), then softcap * tanh(s / softcap)
// when softcap > 0 (Gemma's query_pre_attn_scalar and attention soft-capping). Anything but the
// default takes the fp32 CUDA-core kernels.
struct AttentionScores {
  float scale = 0.0f;
  float softcap = 0.0f;
};
// Causal attention as described above. workspace: device memory of at least
// attention_workspace_bytes(n_heads, head_dim, context) bytes (may be null only where the
// decode path is not taken: n > kMaxDecodeTokens, or an f32 cache). The last kernel it
// launches calls let_next_kernel_start() first, so the product after it may be a
// programmatic dependent launch.
void attention(const float* q, const void* k_cache, const void* v_cache, DType kv_dt, void* out, DType out_dt,
               int n, int pos, const int* d_pos, int n_heads, int n_kv_heads, int head_dim, int context,
               float* workspace, size_t workspace_bytes, cudaStream_t s, int window = 0,
               const AttentionScores& scores = {});

// The previous entry point (today's engine calls it): the fp32 CUDA-core kernels for every
// dtype and batch, one block per head when n == 1. Kept until the engine passes a workspace.
void attention(const float* q, const void* k_cache, const void* v_cache, DType kv_dt, void* out, DType out_dt,
               int n, int pos, const int* d_pos, int n_heads, int n_kv_heads, int head_dim, cudaStream_t s,
               int window = 0, const AttentionScores& scores = {});

// The new path's kernels alone, for tests and benchmarks (f16 caches, head_dim 64 or 128);
// attention() chooses between them and the fp32 kernels.
bool attention_flash_supported(DType kv_dt, int head_dim);
void attention_decode_f16(const float* q, const void* k_cache, const void* v_cache, void* out, DType out_dt, int n,
                          int pos, const int* d_pos, int n_heads, int n_kv_heads, int head_dim, int context,
                          float* workspace, size_t workspace_bytes, cudaStream_t s, int window = 0);
// Continuous batching (model/batch.h): one token of each of n_segs <= kMaxDecodeTokens sequences
// in one launch. Token z is row d_row[z] of q and of out, at position d_pos[z] of sequence
// d_seq[z], whose cache rows start at d_seq[z] * region_rows; max_pos (host) is the largest
// position. Each token gets the bits attention_decode_f16 gives it alone (the same blocks
// and the same merge order). Device arrays of n_segs ints each.
void attention_decode_f16_rows(const float* q, const void* k_cache, const void* v_cache, int region_rows, void* out,
                               DType out_dt, int n_segs, const int* d_pos, const int* d_seq, const int* d_row,
                               int max_pos, int n_heads, int n_kv_heads, int head_dim, int context, float* workspace,
                               size_t workspace_bytes, cudaStream_t s, int window = 0);
// Whether attention() takes attention_decode_f16 for these caches and scores (and so whether
// the batched form above applies).
bool attention_decode_rows_supported(DType kv_dt, int head_dim, const AttentionScores& scores);
// workspace (may be null): the split-key variant's partials, when it holds them.
void attention_prefill_f16(const float* q, const void* k_cache, const void* v_cache, void* out, DType out_dt, int n,
                           int pos, int n_heads, int n_kv_heads, int head_dim, float* workspace,
                           size_t workspace_bytes, cudaStream_t s, int window = 0);

// The prompt kernel's variants (cuda/attention_prefill.cu), for A/B runs: same numerics in kind
// (f16 Q, K, P; fp32 accumulators; the same masking), each deterministic. attention() and
// attention_prefill_f16 take attention_prefill_default_variant(): CLLM_PREFILL_VARIANT from the
// environment, read once (a value outside 0 .. attention_prefill_variants()-1 fails), else
// kDefaultPrefillVariant. Tests and benchmarks name a variant explicitly. The default is
// Hopper's pipelined wgmma kernel (9), which runs the original (0) on every other device: on
// the H100 it took pp512 @ d4096 from 24838 to 27062 t/s (docs/benchmarks.md).
constexpr int kDefaultPrefillVariant = 9;
int attention_prefill_variants();
const char* attention_prefill_variant_name(int variant);
int attention_prefill_default_variant();
void attention_prefill_f16_variant(int variant, const float* q, const void* k_cache, const void* v_cache, void* out,
                                   DType out_dt, int n, int pos, int n_heads, int n_kv_heads, int head_dim,
                                   float* workspace, size_t workspace_bytes, cudaStream_t s, int window = 0);

}  // namespace cllm::cuda
