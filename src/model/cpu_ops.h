// The fp32 CPU building blocks of a Llama forward pass: matrix products, RMSNorm, RoPE,
// one attention head, SwiGLU. forward_cpu.cpp strings them together; tests check them alone.
//
// Every output element is computed by exactly one thread, in one fixed summation order that
// depends neither on the batch size, nor on the blocking, nor on the thread count: a batched
// prompt gives the same bits as feeding its tokens one by one, and -t 1 the same as -t 16.
#pragma once

#include <cstddef>
#include <vector>

#include "common/thread_pool.h"
#include "model/llama_config.h"

namespace cllm::cpu {

// Dot products sum in kDotLanes interleaved partial sums (lane l takes the elements i with
// i % kDotLanes == l, tail included), reduced by a fixed tree: wide enough to vectorise
// without -ffast-math, and the same order everywhere (dot, matmul, attention, RMSNorm).
constexpr int kDotLanes = 8;
float dot(const float* a, const float* b, int n);

// y (n, d) = x (n, k) @ w (d, k)^T, i.e. y[t][r] = dot(x[t], w[r]); y's rows are ldy apart
// (ldy >= d). Rows of w are split among the pool's threads; a small product runs inline.
void matmul(float* y, int ldy, const float* x, const float* w, int n, int k, int d, ThreadPool* pool);

// out = x * rsqrt(mean(x^2) + eps) * w, in fp32 (as Hugging Face's LlamaRMSNorm).
void rmsnorm(float* out, const float* x, const float* w, int dim, float eps);

// RoPE inverse frequencies freq_i = theta^(-2i/head_dim), i < head_dim/2, with llama3
// scaling applied when scaling.type == "llama3" (HF transformers' _compute_llama3_parameters),
// each divided by the factor when it is "linear".
std::vector<float> rope_frequencies(int head_dim, float theta, const RopeScaling& scaling);

// cos/sin of pos * freq_i for pos < n_pos: two (n_pos, head_dim/2) tables.
struct RopeTable {
  int n_pos = 0, half = 0;
  std::vector<float> cos, sin;  // (n_pos, head_dim/2)
  const float* cos_at(int pos) const { return cos.data() + static_cast<size_t>(pos) * half; }
  const float* sin_at(int pos) const { return sin.data() + static_cast<size_t>(pos) * half; }
};
// cos/sin of pos * freq_i for pos < n_pos, each times scale (longrope's attention factor).
RopeTable rope_table(const std::vector<float>& freqs, int n_pos, float scale = 1.0f);
// The table every engine of a model uses for a context of n_pos positions: frequencies of the
// rotary dimensions, llama3 or longrope scaling (longrope's long factors when n_pos passes
// the original context, as llama.cpp chooses them; transformers switches per forward call on
// the positions it sees, so the two agree whenever the context is within the original).
// local: the table of the windowed layers of a model with a rope_local_theta (Gemma 3), that
// base without scaling.
RopeTable model_rope_table(const LlamaConfig& c, int n_pos, bool local = false);

// Rotates n_heads heads of head_dim values in place: the pairs (2i, 2i+1) (interleaved) or
// (i, i + rope_dim/2) (neox) of the first rope_dim values (0: head_dim; partial rotary leaves
// the rest as they are) by the angle whose cos/sin are c[i], s[i].
void rope(float* v, int n_heads, int head_dim, RopeLayout layout, const float* c, const float* s, int rope_dim = 0);
// RoPE of n tokens at positions pos .. pos+n-1 in place: their q (n, q_dim) and k (n, kv_dim)
// rows, by the table given (the model's, or its windowed layers'); callers skip the layers
// without RoPE (c.uses_rope).
void rope_tokens(float* q, float* k, int n, int pos, const LlamaConfig& c, const RopeTable& table);

// One query head over positions [0, n_pos): out (head_dim) = softmax(q . k_p / sqrt(head_dim)) v.
// k and v point at the head's first element of position 0; rows are kv_stride floats apart.
// scores is scratch of n_pos floats.
void attention_head(float* out, const float* q, const float* k, const float* v, int n_pos,
                    int kv_stride, int head_dim, float* scores);

// h = silu(h) * up, silu(x) = x / (1 + e^-x).
void swiglu(float* h, const float* up, size_t n);
// h = gelu(h) * up with gelu's tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// (PyTorch's gelu(approximate="tanh"), Gemma's gelu_pytorch_tanh).
void geglu_tanh(float* h, const float* up, size_t n);

// out = x * rsqrt(mean(x^2) + eps) * (1 + w) (Gemma's RMSNorm; 1 + w in fp32, as transformers).
void rmsnorm_unit_offset(float* out, const float* x, const float* w, int dim, float eps);

// v[i] = cap * tanh(v[i] / cap) for i < n: Gemma's soft-capping of scores and logits.
void softcap(float* v, size_t n, float cap);

// Runs fn(i) for i in [0, n): on the pool when the work (n * cost_per_item, in multiply-adds)
// is large enough to pay for waking the threads, else inline. Never changes results.
void parallel_for(ThreadPool* pool, size_t n, double cost_per_item, const std::function<void(size_t)>& fn);

}  // namespace cllm::cpu
