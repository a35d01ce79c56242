// The GPU forward pass (CUDA builds only): the transformer's kernels strung together over
// the weights a GpuWeights store hands out, with the CPU layers run through GpuCpuLayers.
// It owns what a pass writes: activations, the KV cache, cuBLAS's workspace, the logits, and
// in full mode one token's pass captured as a CUDA graph.
//
//   tokens -> embed -> per layer: [CPU run | acquire weights -> layer kernels -> release]
//          -> final RMSNorm -> classifier slices -> logits
//
// The KV cache holds `sequences` regions of `context` positions per layer (model/batch.h): a
// pass runs the rows of one or more segments through the products together, and each segment's
// RoPE, cache writes and attention in its own sequence's region at its own positions.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "cuda/blas.h"
#include "cuda/device_buffer.h"
#include "model/architecture.h"
#include "model/batch.h"
#include "model/llama_config.h"
#include "runtime/gpu_cpu_layers.h"
#include "runtime/gpu_weights.h"
#include "runtime/memory_plan.h"
#include "runtime/weight_schedule.h"

namespace cllm {

struct GpuForwardShape {
  int context = 0;        // KV cache positions per sequence
  int sequences = 1;      // KV cache regions; more than one only without CPU layers
  int batch = 0;          // tokens per pass through the layers (prompts run in batches of this)
  int cpu_max_batch = 0;  // batches of up to this many tokens compute the CPU layers on the CPU
  Placements placements;  // per weight step
};

class GpuForward {
 public:
  // Allocates the buffers of memory_plan.h's plan (activations, KV cache, workspace).
  GpuForward(const CllmFile& file, const LlamaConfig& c, const WeightSchedule& s, const GpuForwardShape& shape,
             GpuWeights& weights, GpuCpuLayers& cpu, cudaStream_t compute);
  ~GpuForward();
  GpuForward(const GpuForward&) = delete;
  GpuForward& operator=(const GpuForward&) = delete;

  // As GpuEngine::forward: tokens[0..n) at positions pos.., the last token's logits (vocab
  // floats), or every token's (n, vocab) with all_logits; valid until the next call.
  // Sequence 0's cache.
  const float* forward(const int* tokens, int n, int pos, bool all_logits);

  // As GpuEngine::forward_batch, the batch already checked (check_batch: at most `batch`
  // tokens, sequences in range): (n_segs, vocab) logits, row i after segment i's last token.
  const float* forward_batch(const int* tokens, const BatchSegment* segs, int n_segs);

 private:
  // Layer l over its weights, for the rows of segs_: a fused step's planes at one token, else
  // the step acquired (and released) in its slot layout.
  void run_step(size_t l, int n, const int* d_pos = nullptr);
  void run_layer(const StepWeights& w, int n, const int* d_pos);
  DeviceKvLayer kv_region(int layer, int seq) const;  // sequence seq's rows of the layer's caches
  // Several sequences: their rows' positions and sequences, and their single-token segments,
  // to the device once per pass (batch_rows_ then says the launches below may use them).
  void upload_batch_rows();
  void attention_segments(int layer);  // after the batched RoPE: every segment's attention
  void norm(const float* x, const void* w, DType w_dt, int n);
  bool unit_offset() const { return arch_.norm == NormKind::rms_unit_offset; }  // Gemma's (1 + w)
  // Tensor t of w in the fused layout, checked against the product's shape (n tokens, d x k);
  // null when t is decoded.
  const cuda::FusedWeights* fused_matrix(const StepWeights& w, LayerTensor t, int n, int d, int k) const;
  // y (n, d) fp32 (rows ldy apart) = tensor t of w times in (n, k) (+ y): the fused product
  // where t is in the fused layout (one token), else cuBLAS or matvec (Blas::linear).
  void linear(const StepWeights& w, LayerTensor t, const void* in, float* y, int ldy, int n, int k, int d,
              bool accumulate);
  // x += the block's output projection of in (n, k), normed first where the layer has post_norm
  void output_projection(const StepWeights& w, LayerTensor proj, LayerTensor post_norm, const void* in, int n, int k);
  void scale_embeddings(int n);  // x (n, dim) times sqrt(dim) where the architecture says so
  void qkv_one_token(const StepWeights& w);
  void attention_block(const StepWeights& w, int n, const int* d_pos);
  void ffn_block(const StepWeights& w, int n);
  void run_layers(int n, int pos, bool cpu_route);
  void run_classifier(int first_row, int rows);
  void ensure_logit_rows(int rows);  // logits_ holds at least rows rows
  const float* forward_one_graph(int token, int pos);
  void drop_graph();

  const LlamaConfig& c_;
  const Architecture& arch_;  // how a layer computes: the norm and feed-forward kinds
  const WeightSchedule& s_;
  GpuForwardShape shape_;
  GpuWeights& weights_;
  GpuCpuLayers& cpu_;
  cudaStream_t compute_;
  DType act_, kv_;

  cuda::DeviceBuffer<uint8_t> workspace_;
  std::unique_ptr<cuda::Blas> blas_;
  // activations (memory_plan.h ActivationSizes)
  cuda::DeviceBuffer<float> x_, q_, k_, v_, gate_, up_, logits_, rope_cos_, rope_sin_;
  cuda::DeviceBuffer<float> rope_local_cos_, rope_local_sin_;  // the sliding layers' (rope_local_theta); else empty
  cuda::DeviceBuffer<uint8_t> xn_, h_, rows_;  // act dtype; rows_: token ids or gathered embedding rows
  cuda::DeviceBuffer<uint8_t> attention_ws_;   // decode attention's split-K partials
  cuda::DeviceBuffer<uint8_t> output_norm_;    // decoded at load, in VRAM in every mode
  cuda::DeviceBuffer<uint8_t> k_cache_, v_cache_;
  std::vector<DeviceKvLayer> kv_layers_;       // per layer: its `sequences` regions in the caches
  uint64_t kv_region_bytes_ = 0;               // one sequence's rows of one layer, k or v
  std::vector<BatchSegment> segs_;             // the pass's segments, rows in order
  // A pass of several sequences: per row (position, sequence) = d_rows_[r], d_rows_[batch + r];
  // per single-token segment k (position, sequence, row) = d_singles_[k], [batch + k], [2 batch + k]
  cuda::DeviceBuffer<int> d_rows_, d_singles_;
  std::vector<int> host_rows_, host_singles_;
  int n_singles_ = 0;
  std::vector<int> singles_max_pos_;           // per group of kMaxDecodeTokens single-token segments
  bool batch_rows_ = false;                    // the arrays above describe this pass
  bool batched_attention_ = true;              // CLLM_NO_BATCHED_ATTENTION=1: one launch per segment (A/B)
  int logit_rows_ = 1;
  std::vector<float> logits_host_;
  // Full mode, one token: the whole pass captured once as a CUDA graph (one launch instead of
  // ~8 per layer); the position comes from d_pos_, the token from rows_.
  bool use_graph_ = false;
  cudaGraphExec_t token_graph_ = nullptr;
  cuda::DeviceBuffer<int> d_pos_;
};

}  // namespace cllm
