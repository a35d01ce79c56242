// A model's hyper-parameters, as stored in a .cllm file's metadata (dotted keys prefixed by the
// architecture's name, docs/format.md "Metadata"), and the tensor names and shapes they imply.
// One struct serves every architecture of model/architecture.h (the Llama family and its
// relatives); fields a family does not use keep their neutral defaults.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cllm {

// Which pairs of a head's dimensions RoPE rotates together.
enum class RopeLayout {
  interleaved,  // (x[2i], x[2i+1]): llama2.c, GGUF, Meta's original checkpoints
  neox,         // (x[i], x[i + head_dim/2]) "rotate half": Hugging Face checkpoints
};
const char* rope_layout_name(RopeLayout l);

struct RopeScaling {
  std::string type = "none";  // "none", "llama3", "longrope" (Phi-3/4) or "linear" (Gemma 3)
  float factor = 1.0f;        // llama3: 8 for Llama-3.1; linear: every frequency divided by it
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_context = 8192;  // llama3, longrope: the context trained before the extension
  // longrope: frequency i divided by short_factor[i] when the engine's context is at most
  // original_context, else by long_factor[i] (rotary_dim / 2 each); cos and sin times
  // attention_factor.
  std::vector<float> short_factor, long_factor;
  float attention_factor = 1.0f;
};

struct LlamaConfig {
  std::string architecture = "llama";  // an Architecture's name (model/architecture.h)
  int dim = 0;             // model width (embedding_length)
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;      // < n_heads: grouped-query attention
  int head_dim = 0;        // usually dim / n_heads
  int ffn_dim = 0;         // SwiGLU hidden width
  int vocab_size = 0;
  int context_length = 0;  // the longest context the model was trained for
  float norm_eps = 1e-5f;  // RMSNorm epsilon
  float rope_theta = 10000.0f;
  RopeLayout rope_layout = RopeLayout::interleaved;
  RopeScaling rope_scaling;
  bool tie_embeddings = false;  // output projection == token embedding (no output.weight)
  // 0: full causal attention. Else the query at position p sees keys p - sliding_window + 1 .. p
  // (Mistral's window; transformers' "kv_idx > q_idx - sliding_window").
  int sliding_window = 0;
  int rope_dim = 0;  // RoPE rotates a head's first rope_dim values (partial rotary, Phi-3/4); 0: all
  std::vector<int> no_rope_layers;  // ascending indices of layers whose attention has no RoPE (SmolLM3)
  // With a sliding_window: ascending indices of the layers that attend to every position
  // (Gemma's "full_attention" layers); empty, the window bounds every layer (Mistral).
  std::vector<int> full_attention_layers;
  // > 0: the RoPE base of the windowed layers, without rope_scaling (Gemma 3's
  // rope_local_base_freq); 0: they rotate as the other layers.
  float rope_local_theta = 0.0f;
  // > 0: attention scores are q.k / sqrt(query_pre_attn_scalar) (Gemma); 0: q.k / sqrt(head_dim).
  float query_pre_attn_scalar = 0.0f;
  // > 0: scores become cap * tanh(score / cap) before the softmax (attn_softcap, Gemma 2) and
  // the logits cap * tanh(logit / cap) (final_softcap, Gemma 2 and 3); 0: neither is bounded.
  float attn_softcap = 0.0f;
  float final_softcap = 0.0f;

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  bool uses_rope(int layer) const;  // false for the no_rope_layers
  int rotary_dim() const { return rope_dim > 0 ? rope_dim : head_dim; }
  // The sliding window of a layer: 0 (every position) for the full_attention_layers.
  int window_of(int layer) const;
  // Whether a layer uses the local RoPE table (windowed, with a rope_local_theta).
  bool uses_local_rope(int layer) const { return rope_local_theta > 0.0f && window_of(layer) > 0; }
  float attention_scale() const;  // 1 / sqrt(query_pre_attn_scalar or head_dim), in fp32
  // Throws cllm::Error naming the first bad field.
  void validate() const;
};

// Writes general.architecture and the "<architecture>.*" keys ("llama.block_count", ...);
// reads them back (throws naming a missing or bad key, or an unsupported architecture).
void config_to_metadata(const LlamaConfig& c, nlohmann::json& meta);
LlamaConfig config_from_metadata(const nlohmann::json& meta);

// Canonical tensor names (GGUF's): "token_embd.weight", "blk.3.attn_q.weight", ...
std::string layer_tensor_name(int layer, const char* part);  // part: "attn_q", "ffn_down", ...

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> shape;  // outermost first, PyTorch order: [out_features, in_features]
};
// Every tensor a model with this config must have, in file order (global ones first).
std::vector<TensorSpec> expected_tensors(const LlamaConfig& c);

}  // namespace cllm
