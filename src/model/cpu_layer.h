// One Llama layer's forward pass on the CPU, from the layer's decoded weights in host memory
// (bf16 or f16, read in place by cpu_kernels_bf16.h; f32 too), on an fp32 residual stream and
// a KV cache in host RAM: what the hybrid runtime (issue 8) runs for the layers it keeps on
// the CPU. The residual stream is the GPU engine's too (fp32, (n, dim)), so handing a token
// over between CPU and GPU layers is one copy of x each way.
//
// Numerics are the GPU engine's (docs/architecture.md, "GPU numerics"): fp32 residual stream,
// norms, RoPE, softmax and accumulation; the inputs of the linear layers rounded to the
// weights' dtype; keys and values stored in f16 (f32 for f32 models). With f32 weights and an
// f32 cache it is exactly CpuForward's layer (same operations, same order, same bits).
// Results depend neither on the thread count nor on how tokens are batched; the ISA changes
// attention's rounding (cpu_attention.h), and bf16 products' on avx512-bf16.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/dtype.h"
#include "common/host_memory.h"
#include "common/thread_pool.h"
#include "model/architecture.h"
#include "model/cpu_attention.h"
#include "model/cpu_kernels_bf16.h"
#include "model/cpu_ops.h"
#include "model/llama_config.h"
#include "model/llama_weights.h"

namespace cllm {

struct CpuTensor {
  const void* data = nullptr;
  DType dtype = DType::BF16;
};

// A layer's weights, wherever they live. Shapes as LlamaLayerWeights: (out, in), row-major.
struct CpuLayerWeights {
  CpuTensor attn_norm;  // (dim)          norms: f32, f16 or bf16
  CpuTensor wq;         // (q_dim, dim)   linear layers: bf16, f16 or f32, all seven the same
  CpuTensor wk;         // (kv_dim, dim)
  CpuTensor wv;         // (kv_dim, dim)
  CpuTensor wo;         // (dim, q_dim)
  CpuTensor ffn_norm;   // (dim)
  CpuTensor w_gate;     // (ffn, dim)
  CpuTensor w_up;       // (ffn, dim)
  CpuTensor w_down;     // (dim, ffn)
  CpuTensor bq;         // (q_dim)        biases, any float dtype; data null where the
  CpuTensor bk;         // (kv_dim)       architecture has none (all three or none)
  CpuTensor bv;         // (kv_dim)
  CpuTensor q_norm;     // (head_dim)     per-head norms of q and k (Qwen3); data null where
  CpuTensor k_norm;     // (head_dim)     the architecture has none (both or none)
  CpuTensor attn_post_norm;  // (dim)     norms of the attention's and the FFN's outputs (Gemma);
  CpuTensor ffn_post_norm;   // (dim)     data null where the architecture has none (both or none)

  DType linear_dtype() const { return wq.dtype; }
  bool has_qkv_bias() const { return bq.data != nullptr; }
  bool has_qk_norm() const { return q_norm.data != nullptr; }
  bool has_post_norms() const { return attn_post_norm.data != nullptr; }
  // Throws naming the first missing tensor, a dtype that is not a float type, or a linear
  // layer whose dtype differs from wq's.
  void check() const;
};

// Where a layer slot's tensors sit, as the GPU runtime lays it out (runtime/weight_schedule.h,
// cpu_slot_layout): the tensor of role r (LayerTensor, architecture.h) at slot + offset[r] with
// dtype[r]; roles with present[r] false are absent (biases the architecture lacks).
struct CpuSlotLayout {
  std::array<uint64_t, kLayerTensors> offset{};
  std::array<DType, kLayerTensors> dtype{};
  std::array<bool, kLayerTensors> present{};
};
CpuLayerWeights cpu_layer_weights_in_slot(const void* slot, const CpuSlotLayout& layout);
// The weights from one tensor per role (LayerTensor; data null where absent).
CpuLayerWeights cpu_layer_weights_by_role(const std::array<CpuTensor, kLayerTensors>& t);
// Host memory for a CPU layer's decoded weights (~400 MiB streamed per token): huge pages
// (common/host_memory.h). Throws when the system refuses the allocation.
using CpuLayerMemory = HostMemory;
CpuLayerMemory allocate_cpu_layer_memory(uint64_t bytes);
// A view of fp32 weights (LlamaWeights' layers), which must outlive it.
CpuLayerWeights cpu_layer_weights_f32(const LlamaLayerWeights& L);

// The KV cache dtype for a model whose linear layers are linear_dtype: f32 for f32 models,
// else f16 (the GPU engine's choice).
DType cpu_kv_dtype(DType linear_dtype);

// One layer's keys and values: two (context, kv_dim) arrays of dtype (F16 or F32).
struct CpuKvLayer {
  void* k = nullptr;
  void* v = nullptr;
  DType dtype = DType::F16;
  int context = 0;
};

// Keys and values of n_layers layers in host RAM (the layers the CPU computes).
class CpuKvCache {
 public:
  CpuKvCache(int n_layers, int context, int kv_dim, DType dtype);
  CpuKvLayer layer(int i);
  int n_layers() const { return n_layers_; }
  size_t bytes() const { return data_.size(); }

 private:
  int n_layers_ = 0, context_ = 0;
  DType dtype_ = DType::F16;
  size_t array_bytes_ = 0;     // one (context, kv_dim) array
  std::vector<uint8_t> data_;  // per layer: keys, then values
};

// A segment of a batch of several sequences (forward_segments): n rows at positions pos .. of
// the cache kv (its sequence's).
struct CpuLayerSegment {
  CpuKvLayer kv;
  int n = 0;
  int pos = 0;
};

struct CpuLayerOptions {
  int context = 0;      // positions in the RoPE table and the largest pos + n accepted
  int max_batch = 16;   // tokens per pass through the layer; more are run in chunks of this
  cpu::Isa isa = cpu::isa_best();
};

// Runs layers of one model: holds the RoPE tables and the activations of max_batch tokens.
class CpuLayerForward {
 public:
  // pool (may be null: inline) must outlive this object.
  CpuLayerForward(const LlamaConfig& c, const CpuLayerOptions& opt, ThreadPool* pool);

  // x (n, dim): the residual stream of n tokens at positions pos .. pos+n-1, updated in place:
  //   x += wo . attention(rope(wq xa), rope(wk xa), wv xa),  xa = rmsnorm(x) * attn_norm
  //        (+ bq, bk, bv after the products, then per-head norms of q and k, where the
  //        weights have them)
  //   x += w_down (silu(w_gate xf) * (w_up xf)),              xf = rmsnorm(x) * ffn_norm
  // or Gemma's layer: (1 + w) norms, GeGLU, each block's output normed by its post norm
  // before the residual adds it (forward_cpu.cpp's order)
  // Positions < pos must already be in kv (written by earlier calls for this layer); this call
  // writes keys and values of pos .. pos+n-1. Throws when the positions pass the context, the
  // weights are incomplete or kv's dtype or context does not fit.
  // layer: the layer's index in the model, for the config's per-layer choices (RoPE or not).
  void forward(int layer, const CpuLayerWeights& w, const CpuKvLayer& kv, float* x, int n, int pos);
  // Several sequences' segments in one pass (model/batch.h): x holds their rows in order, at most
  // max_batch in all. The norms and products run over every row at once, RoPE, the cache writes
  // and attention per segment in its own cache; each row gets the bits forward() gives its
  // segment alone (norms and products are row by row). Throws as forward, naming the segment.
  void forward_segments(int layer, const CpuLayerWeights& w, const CpuLayerSegment* segs, int n_segs, float* x);

  const LlamaConfig& config() const { return c_; }
  int context() const { return opt_.context; }

 private:
  void check_segment(const CpuLayerSegment& s, int i) const;
  // x (n, dim): the rows of segs[0 .. n_segs), n of them
  void forward_rows(int layer, const CpuLayerWeights& w, const CpuLayerSegment* segs, int n_segs, float* x, int n);
  void attention_block(int layer, const CpuLayerWeights& w, const CpuLayerSegment* segs, int n_segs, float* x, int n);
  void ffn_block(const CpuLayerWeights& w, float* x, int n);
  void norm(const CpuTensor& w, const float* x, int n);  // xb_ = norm(x) * w
  void norm_rows(float* out, const float* x, const float* w, int rows, int width) const;
  // x += w in, or += post_norm's norm of it where the layer has post norms (Gemma)
  void add_output(const CpuTensor& w, const CpuTensor& post_norm, const float* in, float* x, int n, int k);
  void store_kv(const CpuKvLayer& kv, int row, int n, int pos);  // rows row.. of k_, v_ into the cache at pos
  void add_bias(const CpuTensor& b, float* y, int d, int n);  // y (n, d) += b (d)
  void head_norm(const CpuTensor& w, float* y, int rows);       // each of rows heads normed
  // y (n, d) [+]= x (n, k) @ w^T for the products of one input, whatever the weights' dtype.
  void linear(const CpuTensor* w, float* const* y, const int* d, int count, const float* x, int n, int k,
              bool accumulate);

  LlamaConfig c_;
  const Architecture& arch_;  // how a layer computes: the norm and feed-forward kinds
  CpuLayerOptions opt_;
  ThreadPool* pool_;
  cpu::RopeTable rope_;
  cpu::RopeTable rope_local_;  // the windowed layers' (rope_local_theta > 0); else empty
  // (max_batch, ...) activations, fp32
  std::vector<float> xb_;             // (B, max(dim, q_dim)) normed input, then attention output
  std::vector<float> q_, k_, v_;      // (B, q_dim), (B, kv_dim), (B, kv_dim)
  std::vector<float> hb_, hb2_;       // (B, ffn) gate and up
  std::vector<float> tmp_;            // (B, dim) f32 products before their residual add
  std::vector<float> norm_;           // (dim) a norm's weights in fp32
  std::vector<float> bias_;           // (q_dim) a bias or a head norm's weights, in fp32
};

}  // namespace cllm
