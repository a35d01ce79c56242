// An architecture's transformer layer described by data: which tensors a layer has (their
// roles, file names and shapes), how its norms, attention and feed-forward compute. The
// importers' tensor checks (expected_tensors), the GPU runtime's weight schedule and both
// forward passes (CPU and GPU) read this one description, so a new family is a new entry
// here plus the kernels its features need, not a fork of the forward passes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cllm {

struct LlamaConfig;

// A layer tensor's role, in the order the layer's tensors are stored (and laid out in a
// GPU layer slot). The first nine every architecture has; the others only those that list
// them (Architecture::has): an absent role has no tensor, no slot space and no kernel.
enum LayerTensor {
  kAttnNorm, kAttnQ, kAttnK, kAttnV, kAttnOutput, kFfnNorm, kFfnGate, kFfnUp, kFfnDown,
  kAttnQBias, kAttnKBias, kAttnVBias,  // added to q, k, v before RoPE (Qwen2)
  kAttnQNorm, kAttnKNorm,              // RMSNorm of each q and k head before RoPE (Qwen3, Gemma 3)
  kAttnPostNorm, kFfnPostNorm,         // norms of the attention's and the FFN's outputs before the residual (Gemma)
  kLayerTensors
};

// One extent of a tensor's shape, in the config's terms.
enum class Extent { none, dim, q_dim, kv_dim, ffn, head_dim };
uint64_t extent_size(Extent e, const LlamaConfig& c);

struct LayerTensorDesc {
  LayerTensor role;
  const char* part;  // its name in "blk.N.<part>.<kind>"
  Extent rows;       // [rows, cols] as nn.Linear stores it; a vector has cols none
  Extent cols;
  const char* kind = "weight";  // "weight" or "bias" (GGUF's "blk.0.attn_q.bias")
};

enum class NormKind {
  rms,              // x * rsqrt(mean(x^2) + eps) * w
  rms_unit_offset,  // x * rsqrt(mean(x^2) + eps) * (1 + w): Gemma stores w - 1 (kept as stored)
};

enum class FfnKind {
  swiglu,      // w_down (silu(w_gate x) * (w_up x))
  geglu_tanh,  // w_down (gelu(w_gate x) * (w_up x)), gelu's tanh approximation (Gemma)
};

// Attention is causal multi-head attention with grouped KV heads and RoPE on q and k, whose
// layout and frequency scaling come from the config (LlamaConfig::rope_layout, rope_scaling);
// a config's sliding_window (Mistral; Gemma on some layers) bounds each query's keys from below;
// a config's query_pre_attn_scalar and softcaps (Gemma) change the scores' scale and bound them.
struct Architecture {
  const char* name;                    // "llama", as general.architecture names it (and the metadata keys' prefix)
  const char* hf_class;                // "LlamaForCausalLM", as config.json's "architectures" names it
  std::vector<LayerTensorDesc> layer;  // the tensors it has, in role order
  NormKind norm = NormKind::rms;       // before attention, before the FFN, and at the output
  FfnKind ffn = FfnKind::swiglu;
  bool scale_embeddings = false;       // token embeddings times sqrt(dim) before the first layer (Gemma)

  bool has(LayerTensor role) const;
  const LayerTensorDesc& tensor(LayerTensor role) const;  // throws when absent
  // A norm's weights or a bias: a vector, kept in its own dtype (not the linear layers').
  bool is_vector(LayerTensor role) const { return tensor(role).cols == Extent::none; }
};

// "blk.3.attn_q.weight", "blk.3.attn_q.bias".
std::string layer_tensor_name(int layer, const LayerTensorDesc& d);

// The Llama family (Llama 2/3/3.1, TinyLlama, SmolLM2, the TinyStories models).
const Architecture& llama_architecture();
// Mistral (7B v0.1 with its 4096-position sliding window; v0.2+ without one).
const Architecture& mistral_architecture();
// Qwen2 and Qwen2.5: the Llama layer with biases on q, k and v.
const Architecture& qwen2_architecture();
// Qwen3: the Llama layer with a per-head RMSNorm of q and k (head_dim from the config).
const Architecture& qwen3_architecture();
// SmolLM3: the Llama layer; the config names layers without RoPE (no_rope_layers).
const Architecture& smollm3_architecture();
// Phi-3, Phi-3.5, Phi-4 (mini): the Llama layer once the importer has split the fused qkv and
// gate_up projections; partial rotary and LongRoPE live in the config.
const Architecture& phi3_architecture();
// Gemma 2: (1 + w) norms, also after attention and the FFN (kAttnPostNorm, kFfnPostNorm),
// GeGLU, embeddings scaled by sqrt(dim); softcaps, query scale and the layers' alternating
// sliding windows live in the config.
const Architecture& gemma2_architecture();
// Gemma 3 (text): Gemma 2's layer with (1 + w) q and k norms; the sliding layers' own RoPE base
// lives in the config.
const Architecture& gemma3_architecture();
// Every supported architecture, the Llama family's first.
const std::vector<const Architecture*>& architectures();
// The entry named name ("llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3", "gemma2", "gemma3")
// or null.
const Architecture* find_architecture(const std::string& name);
// "llama (LlamaForCausalLM), mistral (MistralForCausalLM)": for refusals of the others.
std::string supported_architectures();
// The architecture a config describes (LlamaConfig::architecture); throws naming it and the
// supported ones when there is no such entry.
const Architecture& architecture_of(const LlamaConfig& c);

}  // namespace cllm
