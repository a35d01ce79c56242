#include "model/architecture.h"

#include "common/error.h"
#include "model/llama_config.h"

namespace cllm {

uint64_t extent_size(Extent e, const LlamaConfig& c) {
  switch (e) {
    case Extent::none: return 1;
    case Extent::dim: return static_cast<uint64_t>(c.dim);
    case Extent::q_dim: return static_cast<uint64_t>(c.q_dim());
    case Extent::kv_dim: return static_cast<uint64_t>(c.kv_dim());
    case Extent::ffn: return static_cast<uint64_t>(c.ffn_dim);
    case Extent::head_dim: return static_cast<uint64_t>(c.head_dim);
  }
  return 0;
}

namespace {

// The Llama layer: pre-norm attention and SwiGLU feed-forward, no biases.
std::vector<LayerTensorDesc> llama_layer() {
  return {
      {kAttnNorm, "attn_norm", Extent::dim, Extent::none},
      {kAttnQ, "attn_q", Extent::q_dim, Extent::dim},
      {kAttnK, "attn_k", Extent::kv_dim, Extent::dim},
      {kAttnV, "attn_v", Extent::kv_dim, Extent::dim},
      {kAttnOutput, "attn_output", Extent::dim, Extent::q_dim},
      {kFfnNorm, "ffn_norm", Extent::dim, Extent::none},
      {kFfnGate, "ffn_gate", Extent::ffn, Extent::dim},
      {kFfnUp, "ffn_up", Extent::ffn, Extent::dim},
      {kFfnDown, "ffn_down", Extent::dim, Extent::ffn},
  };
}

// The Llama layer with q, k and v biases, stored after the layer's weights.
std::vector<LayerTensorDesc> llama_layer_with_qkv_bias() {
  std::vector<LayerTensorDesc> l = llama_layer();
  l.push_back({kAttnQBias, "attn_q", Extent::q_dim, Extent::none, "bias"});
  l.push_back({kAttnKBias, "attn_k", Extent::kv_dim, Extent::none, "bias"});
  l.push_back({kAttnVBias, "attn_v", Extent::kv_dim, Extent::none, "bias"});
  return l;
}

// The Llama layer with RMSNorm weights (head_dim) for each q and k head.
std::vector<LayerTensorDesc> llama_layer_with_qk_norm() {
  std::vector<LayerTensorDesc> l = llama_layer();
  l.push_back({kAttnQNorm, "attn_q_norm", Extent::head_dim, Extent::none});
  l.push_back({kAttnKNorm, "attn_k_norm", Extent::head_dim, Extent::none});
  return l;
}

// Gemma's layer: the Llama layer's tensors with a norm after attention and one after the FFN
// (ffn_norm is the norm before the FFN, transformers' pre_feedforward_layernorm), and
// optionally per-head q and k norms (Gemma 3).
std::vector<LayerTensorDesc> gemma_layer(bool qk_norm) {
  std::vector<LayerTensorDesc> l = qk_norm ? llama_layer_with_qk_norm() : llama_layer();
  l.push_back({kAttnPostNorm, "post_attention_norm", Extent::dim, Extent::none});
  l.push_back({kFfnPostNorm, "post_ffw_norm", Extent::dim, Extent::none});
  return l;
}

Architecture gemma(const char* name, const char* hf_class, bool qk_norm) {
  Architecture a{name, hf_class, gemma_layer(qk_norm), NormKind::rms_unit_offset, FfnKind::geglu_tanh};
  a.scale_embeddings = true;
  return a;
}

}  // namespace

bool Architecture::has(LayerTensor role) const {
  for (const LayerTensorDesc& d : layer)
    if (d.role == role) return true;
  return false;
}

const LayerTensorDesc& Architecture::tensor(LayerTensor role) const {
  for (const LayerTensorDesc& d : layer)
    if (d.role == role) return d;
  fail("internal: architecture '", name, "' has no layer tensor of role ", static_cast<int>(role));
}

std::string layer_tensor_name(int layer, const LayerTensorDesc& d) {
  return cat("blk.", layer, ".", d.part, ".", d.kind);
}

const Architecture& llama_architecture() {
  static const Architecture arch{"llama", "LlamaForCausalLM", llama_layer(), NormKind::rms, FfnKind::swiglu};
  return arch;
}

// Mistral: the Llama layer; what differs is in the config (sliding_window, LlamaConfig).
const Architecture& mistral_architecture() {
  static const Architecture arch{"mistral", "MistralForCausalLM", llama_layer(), NormKind::rms, FfnKind::swiglu};
  return arch;
}

const Architecture& qwen2_architecture() {
  static const Architecture arch{"qwen2", "Qwen2ForCausalLM", llama_layer_with_qkv_bias(), NormKind::rms,
                                 FfnKind::swiglu};
  return arch;
}

const Architecture& qwen3_architecture() {
  static const Architecture arch{"qwen3", "Qwen3ForCausalLM", llama_layer_with_qk_norm(), NormKind::rms,
                                 FfnKind::swiglu};
  return arch;
}

const Architecture& smollm3_architecture() {
  static const Architecture arch{"smollm3", "SmolLM3ForCausalLM", llama_layer(), NormKind::rms, FfnKind::swiglu};
  return arch;
}

const Architecture& phi3_architecture() {
  static const Architecture arch{"phi3", "Phi3ForCausalLM", llama_layer(), NormKind::rms, FfnKind::swiglu};
  return arch;
}

const Architecture& gemma2_architecture() {
  static const Architecture arch = gemma("gemma2", "Gemma2ForCausalLM", false);
  return arch;
}

const Architecture& gemma3_architecture() {
  static const Architecture arch = gemma("gemma3", "Gemma3ForCausalLM", true);
  return arch;
}

const std::vector<const Architecture*>& architectures() {
  static const std::vector<const Architecture*> all = {
      &llama_architecture(),   &mistral_architecture(), &qwen2_architecture(), &qwen3_architecture(),
      &smollm3_architecture(), &phi3_architecture(),    &gemma2_architecture(), &gemma3_architecture()};
  return all;
}

const Architecture* find_architecture(const std::string& name) {
  for (const Architecture* a : architectures())
    if (name == a->name) return a;
  return nullptr;
}

std::string supported_architectures() {
  std::string s;
  for (const Architecture* a : architectures()) s += cat(s.empty() ? "" : ", ", a->name, " (", a->hf_class, ")");
  return s;
}

const Architecture& architecture_of(const LlamaConfig& c) {
  const Architecture* a = find_architecture(c.architecture);
  if (!a) fail("architecture '", c.architecture, "' is not supported (supported: ", supported_architectures(), ")");
  return *a;
}

}  // namespace cllm
