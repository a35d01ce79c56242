// The transformer's GPU kernels, one job each; src/runtime/gpu_forward.cpp strings them
// together. They see raw device pointers, sizes, dtypes and a stream; every launch is
// checked (CLLM_CUDA_CHECK_LAUNCH) and all run asynchronously on the stream given.
//
// Precision (docs/architecture.md "GPU numerics"): the residual stream, norms, RoPE, softmax
// and every accumulation are fp32. The inputs of linear layers ("act", shapes (n, k)) are
// stored in the weights' dtype (bf16, f16 or f32) as cuBLAS and the matrix-vector kernel
// read them; the KV cache is f16 (f32 for f32 models).
//
// Every output element is computed by one thread or one fixed reduction tree, so results
// never depend on timing: the same inputs give the same bits on every run and in every mode.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/dtype.h"
#include "cuda/attention.h"

namespace cllm::cuda {

// x (n, dim) fp32 = rows of table (vocab, dim), stored in dt: row tokens[t] for token t, or
// row t when tokens is null (rows already gathered on the host).
void gather_rows_f32(const void* table, DType dt, int dim, const int* tokens, int n, float* x, cudaStream_t s);

// out (n, dim) in out_dt = x * rsqrt(mean(x^2) + eps) * w, per row; x fp32, w (dim) in w_dt;
// unit_offset: * (1 + w) (Gemma; 1 + w in fp32).
void rmsnorm(const float* x, const void* w, DType w_dt, void* out, DType out_dt, int n, int dim, float eps,
             cudaStream_t s, bool unit_offset = false);
// x (n, dim) fp32 += rmsnorm(y) * w (or * (1 + w) with unit_offset), y fp32: Gemma's norm of a
// block's output before the residual adds it.
void add_rmsnorm(float* x, const float* y, const void* w, DType w_dt, int n, int dim, float eps, bool unit_offset,
                 cudaStream_t s);
// x (count) fp32 *= factor (Gemma's embeddings times sqrt(dim)).
void scale_f32(float* x, size_t count, float factor, cudaStream_t s);
// x (count) fp32 = softcap * tanh(x / softcap), softcap > 0 (Gemma's final logits).
void softcap_f32(float* x, size_t count, float softcap, cudaStream_t s);

// y (n, d) fp32 += b (d) in b_dt, per row: a projection's bias (Qwen2's q, k and v), added in
// fp32 after the product, as the CPU reference adds it.
void add_bias(float* y, const void* b, DType b_dt, int n, int d, cudaStream_t s);

// RoPE and the KV cache write for n tokens at positions pos .. pos+n-1 (pos is read from
// d_pos in device memory when d_pos is not null, so a captured CUDA graph serves every position):
// q (n, n_heads*head_dim) and k (n, n_kv_heads*head_dim), fp32, are rotated (q in place),
// then k and v (n, kv_dim) are stored at rows pos.. of the layer's caches (context, kv_dim)
// in kv_dt. cos, sin: (context, rope_dim/2) each.
struct RopeArgs {
  int n_heads, n_kv_heads, head_dim;
  bool neox;  // pairs (i, i + head_dim/2); else (2i, 2i+1)
  const float* cos;
  const float* sin;
  bool rotate = true;  // false: a layer without RoPE (SmolLM3): q untouched, k stored as it is
  int rope_dim = 0;    // the first rope_dim values of a head rotate (partial rotary); 0: head_dim
};
// rows: a batch of several sequences (model/batch.h): row t is at position rows->pos[t] of
// sequence rows->seq[t], whose cache rows start at seq * rows->region_rows (device arrays of n
// ints each; pos and d_pos are then unused).
struct BatchRows {
  const int* pos = nullptr;
  const int* seq = nullptr;
  int region_rows = 0;
};
void rope_store_kv(float* q, const float* k, const float* v, void* k_cache, void* v_cache, DType kv_dt, int n,
                   int pos, const int* d_pos, const RopeArgs& r, cudaStream_t s, const BatchRows* rows = nullptr);

// Causal attention over the KV cache: cuda/attention.h.

// dst (count) = src (count), fp32, by the SMs. Either side may be mapped pinned host memory
// (PinnedBuffer::device_data()): the hybrid runtime's hand-over of activations between GPU
// and CPU layers, which must not queue behind a layer's bytes on the copy engine.
void copy_f32(float* dst, const float* src, size_t count, cudaStream_t s);

// out (count) in out_dt = silu(gate) * up, gate and up fp32; gelu_tanh: gelu(gate) * up with
// GELU's tanh approximation (GeGLU, Gemma).
void swiglu(const float* gate, const float* up, void* out, DType out_dt, size_t count, cudaStream_t s,
            bool gelu_tanh = false);

// y (d) fp32 = W x (+ y when accumulate): W (d, k) row-major in dt, x (k) in dt. One warp
// per row with 16-byte loads: batch-1 decoding is bound by reading W once.
// overlap_previous: W is never written while kernels run (full mode), so on sm_90+ the product
// may start loading it before the stream's previous kernel has finished (launch_overlap.cuh).
void matvec(const void* w, DType dt, const void* x, float* y, int d, int k, bool accumulate, cudaStream_t s,
            bool overlap_previous = false);

// Up to three such products of the same x in one launch (q, k and v of one token).
struct MatVecJob {
  const void* w;
  float* y;
  int d;
  bool accumulate;
};
struct MatVecJobs {
  MatVecJob job[3];
  int first_block[3];  // filled in by matvec()
  int count = 0;
  bool overlap_previous = false;  // as matvec()'s
};
void matvec(MatVecJobs jobs, DType dt, const void* x, int k, cudaStream_t s);

// out (d) in dt = silu(W_gate x) * (W_up x) (gelu with gelu_tanh): one token's SwiGLU (GeGLU)
// input to w_down, in one launch.
// The same bits as matvec() twice and swiglu().
void matvec_swiglu(const void* gate, const void* up, DType dt, const void* x, void* out, int d, int k, cudaStream_t s,
                   bool overlap_previous = false, bool gelu_tanh = false);

}  // namespace cllm::cuda
