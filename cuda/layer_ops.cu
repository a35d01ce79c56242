// The small per-token kernels of a layer: embedding gather, RMSNorm, a projection's bias,
// RoPE with the KV cache write, SwiGLU (or GeGLU), Gemma's post norms, scaling and soft-capping. Each is memory-bound and tiny next to the matrix products.
#include <algorithm>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/element.cuh"
#include "cuda/kernels.h"
#include "cuda/launch_overlap.cuh"

namespace cllm::cuda {

namespace {

__global__ void gather_rows_kernel(const void* table, DType dt, int dim, const int* tokens, float* x) {
  const int t = blockIdx.x;
  const size_t row = tokens ? static_cast<size_t>(tokens[t]) : static_cast<size_t>(t);
  for (int i = threadIdx.x; i < dim; i += blockDim.x)
    x[static_cast<size_t>(t) * dim + i] = load_f32(table, dt, row * dim + i);
}

// One block per row: sum of squares in a fixed tree, then the scaled, weighted row.
__global__ void rmsnorm_kernel(const float* x, const void* w, DType w_dt, void* out, DType out_dt, int dim,
                               float eps, bool unit_offset) {
  let_next_kernel_start();  // a few blocks: the next product's weight loads fill the other SMs
  wait_for_previous_kernel();  // launched as an overlap: it may start during the previous product's tail
  __shared__ float scratch[32];
  const float* row = x + static_cast<size_t>(blockIdx.x) * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += row[i] * row[i];
  ss = block_sum(ss, scratch);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  const size_t base = static_cast<size_t>(blockIdx.x) * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float wi = load_f32(w, w_dt, i);
    store_f32(out, out_dt, base + i, (row[i] * r) * (unit_offset ? 1.0f + wi : wi));
  }
}

// x (n, dim) += rmsnorm(y) * (1 + w) or * w: Gemma's post norms, one block per row, the
// CPU's order (the normed row rounded to fp32, then added).
__global__ void add_rmsnorm_kernel(float* x, const float* y, const void* w, DType w_dt, int dim, float eps,
                                   bool unit_offset) {
  __shared__ float scratch[32];
  const size_t base = static_cast<size_t>(blockIdx.x) * dim;
  const float* row = y + base;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += row[i] * row[i];
  ss = block_sum(ss, scratch);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float wi = load_f32(w, w_dt, i);
    x[base + i] += (row[i] * r) * (unit_offset ? 1.0f + wi : wi);
  }
}

// x[i] = x[i] * factor, or softcap * tanh(x[i] / softcap) when softcap > 0.
__global__ void scale_or_cap_kernel(float* x, size_t count, float factor, float softcap) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    x[i] = softcap > 0.0f ? tanhf(x[i] / softcap) * softcap : x[i] * factor;
}

// y (n, d) += b (d): one thread an element, grid-stride.
__global__ void add_bias_kernel(float* y, const void* b, DType b_dt, int d, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    y[i] += load_f32(b, b_dt, i % d);
}

__device__ __forceinline__ void rotate_pair(float* v, int a, int b, float c, float s) {
  const float x0 = v[a], x1 = v[b];
  v[a] = x0 * c - x1 * s;
  v[b] = x0 * s + x1 * c;
}

// One block per token; threads walk the (head, pair) grid of q, then of k, then v's values.
__global__ void rope_store_kernel(float* q, const float* k, const float* v, void* k_cache, void* v_cache,
                                  DType kv_dt, int pos_value, const int* d_pos, RopeArgs r, BatchRows rows) {
  const int t = blockIdx.x, rope_dim = r.rope_dim > 0 ? r.rope_dim : r.head_dim, half = rope_dim / 2;
  // token t's position, and its row of the caches (in its sequence's region for a batch of several)
  const int p = rows.pos ? rows.pos[t] : (d_pos ? *d_pos : pos_value) + t;
  const size_t cache_pos = rows.pos ? static_cast<size_t>(rows.seq[t]) * rows.region_rows + p : p;
  const int q_dim = r.n_heads * r.head_dim, kv_dim = r.n_kv_heads * r.head_dim;
  const float* c = r.cos + static_cast<size_t>(p) * half;
  const float* s = r.sin + static_cast<size_t>(p) * half;
  float* qt = q + static_cast<size_t>(t) * q_dim;
  const size_t row = cache_pos * kv_dim;
  const float* kt = k + static_cast<size_t>(t) * kv_dim;
  const float* vt = v + static_cast<size_t>(t) * kv_dim;
  if (!r.rotate) {  // a layer without RoPE: keys and values stored as they are
    for (int j = threadIdx.x; j < kv_dim; j += blockDim.x) {
      store_f32(k_cache, kv_dt, row + j, kt[j]);
      store_f32(v_cache, kv_dt, row + j, vt[j]);
    }
    return;
  }
  for (int j = threadIdx.x; j < r.n_heads * half; j += blockDim.x) {
    const int h = j / half, i = j % half;
    const int a = r.neox ? i : 2 * i, b = r.neox ? i + half : 2 * i + 1;
    rotate_pair(qt + h * r.head_dim, a, b, c[i], s[i]);
  }
  for (int j = threadIdx.x; j < r.n_kv_heads * half; j += blockDim.x) {
    const int h = j / half, i = j % half;
    const int a = h * r.head_dim + (r.neox ? i : 2 * i), b = h * r.head_dim + (r.neox ? i + half : 2 * i + 1);
    const float x0 = kt[a], x1 = kt[b];
    store_f32(k_cache, kv_dt, row + a, x0 * c[i] - x1 * s[i]);
    store_f32(k_cache, kv_dt, row + b, x0 * s[i] + x1 * c[i]);
  }
  const int pass = r.head_dim - rope_dim;  // partial rotary: each head's values past rope_dim as they are
  for (int j = threadIdx.x; j < r.n_kv_heads * pass; j += blockDim.x) {
    const int at = (j / pass) * r.head_dim + rope_dim + j % pass;
    store_f32(k_cache, kv_dt, row + at, kt[at]);
  }
  for (int j = threadIdx.x; j < kv_dim; j += blockDim.x) store_f32(v_cache, kv_dt, row + j, vt[j]);
}

__global__ void swiglu_kernel(const float* gate, const float* up, void* out, DType out_dt, size_t count,
                              bool gelu_tanh) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    store_f32(out, out_dt, i, glu(gate[i], up[i], gelu_tanh));
}

void launch_scale_or_cap(float* x, size_t count, float factor, float softcap, cudaStream_t s) {
  if (count == 0) return;
  const size_t blocks = std::min<size_t>((count + 255) / 256, 4096);
  scale_or_cap_kernel<<<static_cast<unsigned>(blocks), 256, 0, s>>>(x, count, factor, softcap);
  CLLM_CUDA_CHECK_LAUNCH("scale_or_cap");
}

__global__ void copy_f32_kernel(float* dst, const float* src, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

}  // namespace

void copy_f32(float* dst, const float* src, size_t count, cudaStream_t s) {
  if (count == 0) return;
  const size_t blocks = std::min<size_t>((count + 255) / 256, 1024);
  copy_f32_kernel<<<static_cast<unsigned>(blocks), 256, 0, s>>>(dst, src, count);
  CLLM_CUDA_CHECK_LAUNCH("copy_f32");
}

void add_bias(float* y, const void* b, DType b_dt, int n, int d, cudaStream_t s) {
  if (n <= 0 || d <= 0) return;
  const size_t count = static_cast<size_t>(n) * d;
  const size_t blocks = std::min<size_t>((count + 255) / 256, 1024);
  add_bias_kernel<<<static_cast<unsigned>(blocks), 256, 0, s>>>(y, b, b_dt, d, count);
  CLLM_CUDA_CHECK_LAUNCH("add_bias");
}

void gather_rows_f32(const void* table, DType dt, int dim, const int* tokens, int n, float* x, cudaStream_t s) {
  if (n <= 0) return;
  gather_rows_kernel<<<n, 256, 0, s>>>(table, dt, dim, tokens, x);
  CLLM_CUDA_CHECK_LAUNCH("gather_rows");
}

// Enough threads that each handles about 4 elements: one row is latency-bound.
static int norm_threads(int dim) { return std::min(1024, std::max(32, (dim / 4 + 31) / 32 * 32)); }

void rmsnorm(const float* x, const void* w, DType w_dt, void* out, DType out_dt, int n, int dim, float eps,
             cudaStream_t s, bool unit_offset) {
  if (n <= 0) return;
  // As an overlap launch (it waits for the previous kernel before reading): a product before it
  // lets it start at once, and so the product after it, which then loads its weights during
  // the tail of the one before.
  start_kernel(rmsnorm_kernel, n, norm_threads(dim), 0, s, true, x, w, w_dt, out, out_dt, dim, eps, unit_offset);
  CLLM_CUDA_CHECK_LAUNCH("rmsnorm");
}

void add_rmsnorm(float* x, const float* y, const void* w, DType w_dt, int n, int dim, float eps, bool unit_offset,
                 cudaStream_t s) {
  if (n <= 0) return;
  add_rmsnorm_kernel<<<n, norm_threads(dim), 0, s>>>(x, y, w, w_dt, dim, eps, unit_offset);
  CLLM_CUDA_CHECK_LAUNCH("add_rmsnorm");
}

void scale_f32(float* x, size_t count, float factor, cudaStream_t s) { launch_scale_or_cap(x, count, factor, 0.0f, s); }

void softcap_f32(float* x, size_t count, float softcap, cudaStream_t s) {
  if (!(softcap > 0.0f)) fail("softcap_f32: the cap ", softcap, " must be positive");
  launch_scale_or_cap(x, count, 1.0f, softcap, s);
}

void rope_store_kv(float* q, const float* k, const float* v, void* k_cache, void* v_cache, DType kv_dt, int n,
                   int pos, const int* d_pos, const RopeArgs& r, cudaStream_t s, const BatchRows* rows) {
  if (n <= 0) return;
  if (rows && (!rows->pos || !rows->seq || rows->region_rows <= 0))
    fail("rope_store_kv: batch rows need positions, sequences and a region of >= 1 rows");
  rope_store_kernel<<<n, 256, 0, s>>>(q, k, v, k_cache, v_cache, kv_dt, pos, d_pos, r, rows ? *rows : BatchRows{});
  CLLM_CUDA_CHECK_LAUNCH("rope_store_kv");
}

void swiglu(const float* gate, const float* up, void* out, DType out_dt, size_t count, cudaStream_t s, bool gelu_tanh) {
  if (count == 0) return;
  const size_t blocks = std::min<size_t>((count + 255) / 256, 65536);
  swiglu_kernel<<<static_cast<unsigned>(blocks), 256, 0, s>>>(gate, up, out, out_dt, count, gelu_tanh);
  CLLM_CUDA_CHECK_LAUNCH("swiglu");
}

}  // namespace cllm::cuda
