// The fp32 CPU forward pass of a Llama model: the reference the GPU engine is tested against.
// A prompt goes through each layer as an (n, dim) matrix, in batches of at most max_batch
// tokens; generation feeds one token at a time. Keys and values live in a KV cache of one
// region of `context` positions per sequence; a batch may hold segments of several sequences
// (model/batch.h), whose rows share the products and attend each to its own region. Results do
// not depend on the batching, on a segment's batch mates, or on the thread count (cpu_ops.h,
// cpu_attention.h).
#pragma once

#include <memory>
#include <vector>

#include "common/thread_pool.h"
#include "model/architecture.h"
#include "model/batch.h"
#include "model/cpu_engine.h"
#include "model/cpu_ops.h"
#include "model/llama_weights.h"

namespace cllm {


// Activations and KV cache for one sequence (llama2.c's RunState), all fp32.
struct CpuRunState {
  int batch = 0;                // rows allocated for the (batch, ...) buffers
  std::vector<float> x;         // (batch, dim) residual stream
  std::vector<float> xb;        // (batch, max(dim, q_dim)) normed input / attention output
  std::vector<float> xb2;       // (batch, dim) projection output added to the residual
  std::vector<float> q;         // (batch, q_dim)
  std::vector<float> k, v;      // (batch, kv_dim): a batch's new keys and values before the cache
  std::vector<float> hb, hb2;   // (batch, ffn) gate and up projections
  std::vector<float> logits;    // (rows, vocab): last token's, or every token's when asked
  std::vector<float> key_cache;    // (n_layers, sequences, context, kv_dim)
  std::vector<float> value_cache;  // (n_layers, sequences, context, kv_dim)
};

class CpuForward : public CpuEngine {
 public:
  // weights must outlive this object. Throws when the context exceeds the model's.
  CpuForward(const LlamaWeights& weights, const CpuForwardOptions& opt);

  const LlamaConfig& config() const override { return w_.config; }
  int context() const override { return context_; }  // positions per sequence
  int sequences() const override { return sequences_; }
  int batch_capacity() const override { return s_.batch; }  // most tokens one forward_batch may hold
  int threads() const override { return pool_.size(); }
  const char* arithmetic() const override { return "fp32"; }
  ThreadPool& pool() { return pool_; }
  const float* forward(const int* tokens, int n, int pos) override { return forward(tokens, n, pos, false); }

  // Runs tokens[0..n) at positions pos .. pos+n-1 (earlier positions must already be in the
  // KV cache). Returns the last token's logits (vocab floats), or with all_logits every
  // token's, (n, vocab). The pointer stays valid until the next call. Throws when the
  // positions pass the context or a token id is out of range.
  // Sequence 0's cache.
  const float* forward(const int* tokens, int n, int pos, bool all_logits);

  // model/batch.h's BatchForwardFn: the segments' tokens in one pass, (n_segs, vocab) logits
  // (row i after segment i's last token), valid until the next call. Each row has the bits of
  // running its sequence alone. Throws, before touching any cache, when a segment names a
  // sequence out of range or twice, has no tokens, passes the context, or a token id is out of
  // range, or when the batch holds more than batch_capacity() tokens.
  const float* forward_batch(const int* tokens, const BatchSegment* segs, int n_segs) override;

 private:
  // One batch of at most `batch` tokens in segments. Writes to logits (when not null) the
  // logits of every row with all_rows, else of each segment's last row, (n_segs, vocab).
  void run_batch(const int* tokens, const BatchSegment* segs, int n_segs, float* logits, bool all_rows);
  void attention_block(int layer, const BatchSegment* segs, int n_segs, int n);
  void ffn_block(int layer, int n);
  // n rows of width values (0: dim), normed as the architecture norms (out may be x).
  void norm(float* out, const float* x, const float* w, int n, int width = 0) const;
  // x (n, dim) += y, or += norm(y) * post_norm_w (Gemma's post norms) using post as scratch.
  void add_residual(const float* y, float* post, const float* post_norm_w, int n);

  const LlamaWeights& w_;
  const Architecture& arch_;  // how a layer computes: the norm and feed-forward kinds
  int context_ = 0;    // positions per sequence
  int sequences_ = 1;
  ThreadPool pool_;
  cpu::RopeTable rope_;
  cpu::RopeTable rope_local_;  // the windowed layers' (Gemma 3's rope_local_theta); else empty
  CpuRunState s_;
};

// The default context: min(model context, 4096); an explicit one larger than the model's is
// an error (the model was not trained for it).
int resolve_context(const LlamaConfig& c, int requested);

}  // namespace cllm
