// The fp32 CUDA-core attention kernels, and attention()'s choice of path (cuda/attention.h).
// Online softmax (running max and sum, rescaled per tile of keys), so any context length fits
// in shared memory.
// - one token (decoding): one block per head streams the key positions in tiles of kTile;
// - a prompt batch: one block per (head, 32 queries) loads each tile of 32 keys and values
//   into shared memory once for all its queries; each warp owns 4 queries.
// The f16 tensor-core and split-K kernels are in cuda/attention_prefill.cu and cuda/attention_decode.cu (their shared warp step: attention_mma.cuh).
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/element.cuh"
#include "cuda/kernels.h"
#include "cuda/launch_overlap.cuh"

namespace cllm::cuda {

namespace {

constexpr int kTile = 128;  // key positions per tile == threads per block

// q.k times the scale, soft-capped when softcap > 0 (Gemma 2): the CPU's order of operations.
__device__ __forceinline__ float score_of(float dot, float scale, float softcap) {
  const float s = dot * scale;
  return softcap > 0.0f ? tanhf(s / softcap) * softcap : s;
}

// The scale of q.k: the model's (Gemma's query_pre_attn_scalar), else 1/sqrt(head_dim).
float score_scale(float scale, int head_dim) {
  return scale > 0.0f ? scale : 1.0f / sqrtf(static_cast<float>(head_dim));
}
constexpr int kAccPerThread = kMaxHeadDim / kTile;

// One token's attention, one block per head. Scores: each warp takes every 4th key of the
// tile, its lanes read the key's row together (coalesced) and reduce the dot product in a fixed
// tree. Values: each thread owns output dimensions and walks the tile's positions.
template <class KV>
__global__ void __launch_bounds__(kTile) attention_kernel(const float* q, const KV* k_cache, const KV* v_cache,
                                                          void* out, DType out_dt, int pos_value, const int* d_pos,
                                                          int n_heads, int n_kv_heads, int head_dim, int window,
                                                          float scale, float softcap) {
  let_next_kernel_start();  // one block a head: the output product's weight loads fill the other SMs
  const int pos = d_pos ? *d_pos : pos_value;
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float p_s[kTile];
  __shared__ float scratch[32];
  const int h = blockIdx.x, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  constexpr int kWarps = kTile / 32;
  const int kvh = h / (n_heads / n_kv_heads);
  const int n_pos = pos + 1;
  const size_t kv_dim = static_cast<size_t>(n_kv_heads) * head_dim, head_off = static_cast<size_t>(kvh) * head_dim;
  for (int i = tid; i < head_dim; i += kTile) q_s[i] = q[static_cast<size_t>(h) * head_dim + i];
  __syncthreads();

  float running_max = -INFINITY, running_sum = 0.0f;
  float acc[kAccPerThread];
  for (int j = 0; j < kAccPerThread; ++j) acc[j] = 0.0f;

  // keys first .. pos: 0 .. pos, or the window's (first_key)
  const int first = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
  for (int tile = first; tile < n_pos; tile += kTile) {
    const int count = min(kTile, n_pos - tile);
    for (int r = warp; r < kTile; r += kWarps) {
      float d = 0.0f;
      if (r < count) {
        const KV* kr = k_cache + static_cast<size_t>(tile + r) * kv_dim + head_off;
        for (int i = lane; i < head_dim; i += 32) d += q_s[i] * to_f32(kr[i]);
        for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
      }
      if (lane == 0) p_s[r] = r < count ? score_of(d, scale, softcap) : -INFINITY;
    }
    __syncthreads();
    const float score = p_s[tid];
    const float new_max = fmaxf(running_max, block_max(score, scratch));
    const float e = tid < count ? expf(score - new_max) : 0.0f;
    const float rescale = expf(running_max - new_max);  // 0 on the first tile
    running_sum = running_sum * rescale + block_sum(e, scratch);
    running_max = new_max;
    p_s[tid] = e;
    __syncthreads();
    for (int j = 0; j < kAccPerThread; ++j) {
      const int d = tid + j * kTile;
      if (d >= head_dim) break;
      const KV* vc = v_cache + static_cast<size_t>(tile) * kv_dim + head_off + d;
      float a = acc[j] * rescale;
#pragma unroll 8
      for (int jj = 0; jj < count; ++jj) a += p_s[jj] * to_f32(vc[static_cast<size_t>(jj) * kv_dim]);
      acc[j] = a;
    }
    __syncthreads();  // p_s is rewritten by the next tile
  }
  const float inv = 1.0f / running_sum;
  for (int j = 0; j < kAccPerThread; ++j) {
    const int d = tid + j * kTile;
    if (d < head_dim) store_f32(out, out_dt, static_cast<size_t>(h) * head_dim + d, acc[j] * inv);
  }
}

constexpr int kPrefillQueries = 32;  // queries per block: 8 warps x 4
constexpr int kQueriesPerWarp = 4;
constexpr int kPrefillKeys = 32;     // keys per shared-memory tile: one per lane
constexpr int kAccPerLane = kMaxHeadDim / 32;

__host__ __device__ constexpr size_t prefill_smem_bytes(int head_dim) {
  // queries (32, hd), keys (32, hd + 1: the padding spreads a column over the banks), values (32, hd)
  return sizeof(float) * (kPrefillQueries * head_dim + kPrefillKeys * (head_dim + 1) + kPrefillKeys * head_dim);
}

__global__ void __launch_bounds__(256) attention_prefill_kernel(const float* q, const void* k_cache,
                                                                const void* v_cache, DType kv_dt, void* out,
                                                                DType out_dt, int n, int pos, int n_heads,
                                                                int n_kv_heads, int head_dim, int window,
                                                                float scale, float softcap) {
  extern __shared__ float smem[];
  float* q_s = smem;
  float* k_s = q_s + kPrefillQueries * head_dim;
  float* v_s = k_s + kPrefillKeys * (head_dim + 1);
  const int h = blockIdx.x, q0 = blockIdx.y * kPrefillQueries;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int kvh = h / (n_heads / n_kv_heads);
  const size_t q_dim = static_cast<size_t>(n_heads) * head_dim, kv_dim = static_cast<size_t>(n_kv_heads) * head_dim;
  const size_t head_off = static_cast<size_t>(kvh) * head_dim;
  const int q_end = min(q0 + kPrefillQueries, n);
  const int n_keys = pos + q_end;  // the last query sees keys 0 .. pos + q_end - 1

  for (int i = threadIdx.x; i < kPrefillQueries * head_dim; i += blockDim.x) {
    const int t = q0 + i / head_dim;
    q_s[i] = t < n ? q[t * q_dim + static_cast<size_t>(h) * head_dim + i % head_dim] : 0.0f;
  }
  float running_max[kQueriesPerWarp], running_sum[kQueriesPerWarp], acc[kQueriesPerWarp][kAccPerLane];
  for (int i = 0; i < kQueriesPerWarp; ++i) {
    running_max[i] = -INFINITY;
    running_sum[i] = 0.0f;
    for (int c = 0; c < kAccPerLane; ++c) acc[i][c] = 0.0f;
  }

  // From the tile holding the block's first query's first key (the window's start, or 0).
  const int first_tile = window > 0 ? max(0, pos + q0 - window + 1) / kPrefillKeys * kPrefillKeys : 0;
  for (int tile = first_tile; tile < n_keys; tile += kPrefillKeys) {
    __syncthreads();  // the previous tile is no longer read (and q_s is written, the first time)
    for (int i = threadIdx.x; i < kPrefillKeys * head_dim; i += blockDim.x) {
      const int r = i / head_dim, d = i % head_dim;
      const bool in = tile + r < n_keys;
      const size_t at = static_cast<size_t>(tile + r) * kv_dim + head_off + d;
      k_s[r * (head_dim + 1) + d] = in ? load_f32(k_cache, kv_dt, at) : 0.0f;
      v_s[r * head_dim + d] = in ? load_f32(v_cache, kv_dt, at) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kQueriesPerWarp; ++i) {
      const int qi = warp * kQueriesPerWarp + i, t = q0 + qi;
      const int last = pos + t;  // the last key this query sees, and its first
      const int first = window > 0 ? last - window + 1 : 0;
      if (t >= n || tile > last || tile + kPrefillKeys <= first) continue;  // warp-uniform
      const int key = tile + lane;
      const bool valid = key <= last && key >= first;
      float score = -INFINITY;
      if (valid) {
        const float* qv = q_s + qi * head_dim;
        const float* kv = k_s + lane * (head_dim + 1);
        float d = 0.0f;
        for (int j = 0; j < head_dim; ++j) d += qv[j] * kv[j];
        score = score_of(d, scale, softcap);
      }
      float tile_max = score;
      for (int o = 16; o > 0; o >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
      const float new_max = fmaxf(running_max[i], tile_max);
      const float p = valid ? expf(score - new_max) : 0.0f;
      const float rescale = expf(running_max[i] - new_max);
      float p_sum = p;
      for (int o = 16; o > 0; o >>= 1) p_sum += __shfl_xor_sync(0xffffffffu, p_sum, o);
      running_sum[i] = running_sum[i] * rescale + p_sum;
      running_max[i] = new_max;
#pragma unroll
      for (int c = 0; c < kAccPerLane; ++c) acc[i][c] *= rescale;
      const int count = min(kPrefillKeys, last - tile + 1);
      for (int jj = 0; jj < count; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
        const float* vr = v_s + jj * head_dim;
#pragma unroll
        for (int c = 0; c < kAccPerLane; ++c)
          if (c * 32 + lane < head_dim) acc[i][c] += pj * vr[c * 32 + lane];
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kQueriesPerWarp; ++i) {
    const int t = q0 + warp * kQueriesPerWarp + i;
    if (t >= n) continue;
    const float inv = 1.0f / running_sum[i];
#pragma unroll
    for (int c = 0; c < kAccPerLane; ++c) {
      const int d = c * 32 + lane;
      if (d < head_dim) store_f32(out, out_dt, t * q_dim + static_cast<size_t>(h) * head_dim + d, acc[i][c] * inv);
    }
  }
}

}  // namespace

void attention(const float* q, const void* k_cache, const void* v_cache, DType kv_dt, void* out, DType out_dt, int n,
               int pos, const int* d_pos, int n_heads, int n_kv_heads, int head_dim, cudaStream_t s, int window,
               const AttentionScores& scores) {
  if (n <= 0) return;
  if (window < 0) fail("attention: sliding window ", window, " must be >= 0 (0: none)");
  if (!(scores.scale >= 0.0f) || !(scores.softcap >= 0.0f))
    fail("attention: scale ", scores.scale, " and softcap ", scores.softcap, " must be >= 0 (0: default, none)");
  const float scale = score_scale(scores.scale, head_dim), softcap = scores.softcap;
  if (head_dim > kMaxHeadDim || head_dim <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0)
    fail("attention: head_dim ", head_dim, " (at most ", kMaxHeadDim, "), heads ", n_heads, "/", n_kv_heads,
         " not supported");
  if (kv_dt != DType::F16 && kv_dt != DType::F32) fail("attention: the KV cache must be f16 or f32");
  if (n == 1) {
    if (kv_dt == DType::F16)
      attention_kernel<<<n_heads, kTile, 0, s>>>(q, static_cast<const __half*>(k_cache),
                                                 static_cast<const __half*>(v_cache), out, out_dt, pos, d_pos, n_heads,
                                                 n_kv_heads, head_dim, window, scale, softcap);
    else
      attention_kernel<<<n_heads, kTile, 0, s>>>(q, static_cast<const float*>(k_cache),
                                                 static_cast<const float*>(v_cache), out, out_dt, pos, d_pos, n_heads,
                                                 n_kv_heads, head_dim, window, scale, softcap);
    CLLM_CUDA_CHECK_LAUNCH("attention");
    return;
  }
  if (d_pos) fail("attention: a prompt batch takes its position by value");
  const size_t smem = prefill_smem_bytes(head_dim);
  CLLM_CUDA_CHECK(cudaFuncSetAttribute(attention_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
  const dim3 grid(n_heads, (n + kPrefillQueries - 1) / kPrefillQueries);
  attention_prefill_kernel<<<grid, 256, smem, s>>>(q, k_cache, v_cache, kv_dt, out, out_dt, n, pos, n_heads, n_kv_heads,
                                                   head_dim, window, scale, softcap);
  CLLM_CUDA_CHECK_LAUNCH("attention_prefill");
}

bool attention_decode_rows_supported(DType kv_dt, int head_dim, const AttentionScores& scores) {
  return attention_flash_supported(kv_dt, head_dim) && scores.softcap == 0.0f &&
         score_scale(scores.scale, head_dim) == score_scale(0, head_dim);
}

void attention(const float* q, const void* k_cache, const void* v_cache, DType kv_dt, void* out, DType out_dt, int n,
               int pos, const int* d_pos, int n_heads, int n_kv_heads, int head_dim, int context, float* workspace,
               size_t workspace_bytes, cudaStream_t s, int window, const AttentionScores& scores) {
  if (n <= 0) return;
  // f32 caches stay fp32 end to end; a scale of the model's own or a softcap (Gemma) takes the
  // fp32 kernels too (the tensor-core kernels fold 1/sqrt(head_dim) into Q and cap nothing)
  const bool default_scores = scores.softcap == 0.0f && score_scale(scores.scale, head_dim) == score_scale(0, head_dim);
  if (!attention_flash_supported(kv_dt, head_dim) || !default_scores) {
    attention(q, k_cache, v_cache, kv_dt, out, out_dt, n, pos, d_pos, n_heads, n_kv_heads, head_dim, s, window, scores);
    return;
  }
  if (n <= kMaxDecodeTokens)
    attention_decode_f16(q, k_cache, v_cache, out, out_dt, n, pos, d_pos, n_heads, n_kv_heads, head_dim, context,
                         workspace, workspace_bytes, s, window);
  else {
    if (d_pos) fail("attention: a prompt batch takes its position by value");
    attention_prefill_f16(q, k_cache, v_cache, out, out_dt, n, pos, n_heads, n_kv_heads, head_dim, workspace,
                          workspace_bytes, s, window);
  }
}

}  // namespace cllm::cuda
