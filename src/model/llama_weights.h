// A Llama model's weights in fp32 host memory, decoded from a .cllm file: what the CPU forward
// pass reads. Matrices are row-major [out_features, in_features] (nn.Linear.weight), so
// y[i] = sum_j W[i][j] x[j]. Shapes use dim, q_dim = n_heads * head_dim,
// kv_dim = n_kv_heads * head_dim, ffn = ffn_dim, vocab = vocab_size.
#pragma once

#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "format/cllm_reader.h"
#include "model/architecture.h"
#include "model/llama_config.h"

namespace cllm {

struct LlamaLayerWeights {
  std::vector<float> attn_norm;  // (dim)
  std::vector<float> wq;         // (q_dim, dim)
  std::vector<float> wk;         // (kv_dim, dim)
  std::vector<float> wv;         // (kv_dim, dim)
  std::vector<float> wo;         // (dim, q_dim)
  std::vector<float> ffn_norm;   // (dim)
  std::vector<float> w_gate;     // (ffn, dim)
  std::vector<float> w_up;       // (ffn, dim)
  std::vector<float> w_down;     // (dim, ffn)
  std::vector<float> bq;         // (q_dim)   q, k, v biases (Qwen2); empty where the
  std::vector<float> bk;         // (kv_dim)  architecture has none
  std::vector<float> bv;         // (kv_dim)
  std::vector<float> q_norm;     // (head_dim) per-head RMSNorm of q and k (Qwen3); empty
  std::vector<float> k_norm;     // (head_dim) where the architecture has none
  std::vector<float> attn_post_norm;  // (dim) norms of the attention's and the FFN's outputs
  std::vector<float> ffn_post_norm;   // (dim) (Gemma); empty where the architecture has none
};

// The vector holding the layer tensor of role r.
std::vector<float>& layer_vector(LlamaLayerWeights& L, LayerTensor r);
const std::vector<float>& layer_vector(const LlamaLayerWeights& L, LayerTensor r);

struct LlamaWeights {
  LlamaConfig config;
  std::vector<float> token_embd;   // (vocab, dim)
  std::vector<float> output_norm;  // (dim)
  std::vector<float> output;       // (vocab, dim); empty when config.tie_embeddings
  std::vector<LlamaLayerWeights> layers;  // n_layers

  // The output projection (vocab, dim): token_embd when the embeddings are tied.
  const float* classifier() const {
    return config.tie_embeddings ? token_embd.data() : output.data();
  }
  size_t n_params() const;  // floats held (the tied classifier counted once)
  // Throws naming the first tensor whose size is not what config implies (weights built by
  // hand, e.g. in tests, get the same checks as loaded ones).
  void check() const;
};

// Reads the config from f's metadata and decodes every tensor it implies, all tiles of all
// tensors in one parallel run on pool (inline when pool is null). Checks each tensor's
// presence, shape and dtype (f32, f16 or bf16) first. Errors read
// "loading 'x.cllm': tensor 'blk.3.attn_q.weight' tile 7: ...".
LlamaWeights load_llama_weights(const CllmFile& f, ThreadPool* pool);

}  // namespace cllm
