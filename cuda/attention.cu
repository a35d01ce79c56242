// Causal attention over the KV cache, for prompt batches and single tokens alike. One block
// per (head, query token) streams the key positions in tiles of kTile with an online softmax
// (running max and sum, rescaled per tile), so any context length fits in shared memory.
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/element.cuh"
#include "cuda/kernels.h"

namespace cllm::cuda {

namespace {

constexpr int kTile = 128;  // key positions per tile == threads per block
constexpr int kAccPerThread = kMaxHeadDim / kTile;

__global__ void __launch_bounds__(kTile) attention_kernel(const float* q, const void* k_cache, const void* v_cache,
                                                          DType kv_dt, void* out, DType out_dt, int pos, int n_heads,
                                                          int n_kv_heads, int head_dim) {
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float p_s[kTile];
  __shared__ float scratch[32];
  const int h = blockIdx.x, t = blockIdx.y, tid = threadIdx.x;
  const int kvh = h / (n_heads / n_kv_heads);
  const int n_pos = pos + t + 1;  // causal: positions 0 .. pos+t
  const size_t q_dim = static_cast<size_t>(n_heads) * head_dim, kv_dim = static_cast<size_t>(n_kv_heads) * head_dim;
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  for (int i = tid; i < head_dim; i += kTile) q_s[i] = q[t * q_dim + static_cast<size_t>(h) * head_dim + i];
  __syncthreads();

  float running_max = -INFINITY, running_sum = 0.0f;
  float acc[kAccPerThread];
  for (int j = 0; j < kAccPerThread; ++j) acc[j] = 0.0f;
  const size_t head_off = static_cast<size_t>(kvh) * head_dim;

  for (int tile = 0; tile < n_pos; tile += kTile) {
    // this thread's score: q . k_p / sqrt(head_dim) for p = tile + tid
    const int p = tile + tid;
    float score = -INFINITY;
    if (p < n_pos) {
      const size_t row = static_cast<size_t>(p) * kv_dim + head_off;
      float d = 0.0f;
      for (int i = 0; i < head_dim; ++i) d += q_s[i] * load_f32(k_cache, kv_dt, row + i);
      score = d * scale;
    }
    const float new_max = fmaxf(running_max, block_max(score, scratch));
    const float e = p < n_pos ? expf(score - new_max) : 0.0f;
    const float rescale = expf(running_max - new_max);  // 0 on the first tile
    running_sum = running_sum * rescale + block_sum(e, scratch);
    running_max = new_max;
    p_s[tid] = e;
    __syncthreads();
    // output dims d = tid + j*kTile: rescale, then add this tile's weighted values
    const int count = min(kTile, n_pos - tile);
    for (int j = 0; j < kAccPerThread; ++j) {
      const int d = tid + j * kTile;
      if (d >= head_dim) break;
      float a = acc[j] * rescale;
      for (int jj = 0; jj < count; ++jj)
        a += p_s[jj] * load_f32(v_cache, kv_dt, static_cast<size_t>(tile + jj) * kv_dim + head_off + d);
      acc[j] = a;
    }
    __syncthreads();  // p_s is rewritten by the next tile
  }
  const float inv = 1.0f / running_sum;
  for (int j = 0; j < kAccPerThread; ++j) {
    const int d = tid + j * kTile;
    if (d < head_dim) store_f32(out, out_dt, t * q_dim + static_cast<size_t>(h) * head_dim + d, acc[j] * inv);
  }
}

}  // namespace

void attention(const float* q, const void* k_cache, const void* v_cache, DType kv_dt, void* out, DType out_dt, int n,
               int pos, int n_heads, int n_kv_heads, int head_dim, cudaStream_t s) {
  if (n <= 0) return;
  if (head_dim > kMaxHeadDim || n_kv_heads <= 0 || n_heads % n_kv_heads != 0)
    fail("attention: head_dim ", head_dim, " (at most ", kMaxHeadDim, "), heads ", n_heads, "/", n_kv_heads,
         " not supported");
  const dim3 grid(n_heads, n);
  attention_kernel<<<grid, kTile, 0, s>>>(q, k_cache, v_cache, kv_dt, out, out_dt, pos, n_heads, n_kv_heads, head_dim);
  CLLM_CUDA_CHECK_LAUNCH("attention");
}

}  // namespace cllm::cuda
