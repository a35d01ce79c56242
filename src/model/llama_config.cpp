#include "model/llama_config.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "model/architecture.h"

#include "common/error.h"

namespace cllm {

const char* rope_layout_name(RopeLayout l) {
  return l == RopeLayout::neox ? "neox" : "interleaved";
}

bool LlamaConfig::uses_rope(int layer) const {
  return !std::binary_search(no_rope_layers.begin(), no_rope_layers.end(), layer);
}

int LlamaConfig::window_of(int layer) const {
  if (std::binary_search(full_attention_layers.begin(), full_attention_layers.end(), layer)) return 0;
  return sliding_window;
}

float LlamaConfig::attention_scale() const {
  const float base = query_pre_attn_scalar > 0.0f ? query_pre_attn_scalar : static_cast<float>(head_dim);
  return 1.0f / std::sqrt(base);
}

namespace {

// A list of layer indices: ascending, each below n_layers.
void check_layer_list(const std::vector<int>& v, int n_layers, const std::string& key) {
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] < 0 || v[i] >= n_layers || (i > 0 && v[i] <= v[i - 1]))
      fail("model config: '", key, "' must list ascending layers below ", n_layers, ", found ", v[i], " at ", i);
}

}  // namespace

void LlamaConfig::validate() const {
  // Errors name the metadata key of the field ("llama.block_count"), as the file spells it.
  const std::string p = architecture + ".";
  auto positive = [&](const char* key, long v) {
    if (v <= 0) fail("model config: '", p, key, "' must be positive, found ", v);
  };
  architecture_of(*this);  // a supported architecture
  positive("embedding_length", dim);
  positive("block_count", n_layers);
  positive("attention.head_count", n_heads);
  positive("attention.head_count_kv", n_kv_heads);
  positive("attention.key_length", head_dim);
  positive("feed_forward_length", ffn_dim);
  positive("vocab_size", vocab_size);
  positive("context_length", context_length);
  if (n_heads % n_kv_heads != 0)
    fail("model config: head_count ", n_heads, " is not a multiple of head_count_kv ", n_kv_heads);
  if (head_dim % 2 != 0) fail("model config: head dimension ", head_dim, " must be even for RoPE");
  if (!(norm_eps > 0.0f)) fail("model config: '", p, "attention.layer_norm_rms_epsilon' must be > 0");
  if (!(rope_theta > 0.0f)) fail("model config: '", p, "rope.freq_base' must be > 0");
  check_layer_list(no_rope_layers, n_layers, p + "rope.no_rope_layers");
  check_layer_list(full_attention_layers, n_layers, p + "attention.full_attention_layers");
  if (!full_attention_layers.empty() && sliding_window == 0)
    fail("model config: '", p, "attention.full_attention_layers' is set but there is no sliding window");
  const std::pair<const char*, float> non_negative[] = {{"rope.local_freq_base", rope_local_theta},
                                                        {"attention.query_pre_attn_scalar", query_pre_attn_scalar},
                                                        {"attn_logit_softcapping", attn_softcap},
                                                        {"final_logit_softcapping", final_softcap}};
  for (const auto& [key, v] : non_negative)
    if (!(v >= 0.0f) || std::isinf(v)) fail("model config: '", p, key, "' must be >= 0 and finite (0: unused), found ", v);
  if (sliding_window < 0) fail("model config: '", p, "attention.sliding_window' must be >= 0, found ", sliding_window);
  if (rope_dim < 0 || rope_dim > head_dim || rope_dim % 2 != 0)
    fail("model config: '", p, "rope.dimension_count' ", rope_dim, " must be even and at most the head dimension ",
         head_dim);
  if (rope_scaling.type != "none" && rope_scaling.type != "llama3" && rope_scaling.type != "longrope" &&
      rope_scaling.type != "linear")
    fail("model config: unknown rope scaling type '", rope_scaling.type,
         "' (expected 'none', 'llama3', 'longrope' or 'linear')");
  if (rope_scaling.type == "linear" && !(rope_scaling.factor > 0.0f))
    fail("model config: linear rope scaling needs a positive factor, found ", rope_scaling.factor);
  if (rope_scaling.type == "longrope") {
    const size_t half = static_cast<size_t>(rotary_dim() / 2);
    if (rope_scaling.short_factor.size() != half || rope_scaling.long_factor.size() != half)
      fail("model config: longrope needs ", half, " short and long factors (rotary_dim / 2), found ",
           rope_scaling.short_factor.size(), " and ", rope_scaling.long_factor.size());
    for (const auto* v : {&rope_scaling.short_factor, &rope_scaling.long_factor})
      for (float f : *v)
        if (!(f > 0.0f)) fail("model config: longrope factors must be positive, found ", f);
    if (rope_scaling.original_context <= 0 || !(rope_scaling.attention_factor > 0.0f))
      fail("model config: bad longrope scaling (original context ", rope_scaling.original_context,
           ", attention factor ", rope_scaling.attention_factor, ")");
  }
  if (rope_scaling.type == "llama3") {
    if (!(rope_scaling.factor > 0.0f) || rope_scaling.original_context <= 0 ||
        !(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor))
      fail("model config: bad llama3 rope scaling (factor ", rope_scaling.factor, ", low ",
           rope_scaling.low_freq_factor, ", high ", rope_scaling.high_freq_factor,
           ", original context ", rope_scaling.original_context, ")");
  }
}

void config_to_metadata(const LlamaConfig& c, nlohmann::json& m) {
  const std::string p = c.architecture + ".";
  m["general.architecture"] = c.architecture;
  m[p + "embedding_length"] = c.dim;
  m[p + "block_count"] = c.n_layers;
  m[p + "attention.head_count"] = c.n_heads;
  m[p + "attention.head_count_kv"] = c.n_kv_heads;
  m[p + "attention.key_length"] = c.head_dim;
  m[p + "feed_forward_length"] = c.ffn_dim;
  m[p + "vocab_size"] = c.vocab_size;
  m[p + "context_length"] = c.context_length;
  m[p + "attention.layer_norm_rms_epsilon"] = c.norm_eps;
  m[p + "rope.freq_base"] = c.rope_theta;
  m[p + "rope.layout"] = rope_layout_name(c.rope_layout);
  m[p + "rope.scaling.type"] = c.rope_scaling.type;
  if (c.rope_scaling.type == "llama3") {
    m[p + "rope.scaling.factor"] = c.rope_scaling.factor;
    m[p + "rope.scaling.low_freq_factor"] = c.rope_scaling.low_freq_factor;
    m[p + "rope.scaling.high_freq_factor"] = c.rope_scaling.high_freq_factor;
    m[p + "rope.scaling.original_context_length"] = c.rope_scaling.original_context;
  }
  if (c.rope_scaling.type == "longrope") {
    m[p + "rope.scaling.short_factor"] = c.rope_scaling.short_factor;
    m[p + "rope.scaling.long_factor"] = c.rope_scaling.long_factor;
    m[p + "rope.scaling.attention_factor"] = c.rope_scaling.attention_factor;
    m[p + "rope.scaling.original_context_length"] = c.rope_scaling.original_context;
  }
  if (c.rope_scaling.type == "linear") m[p + "rope.scaling.factor"] = c.rope_scaling.factor;
  if (c.rope_dim > 0) m[p + "rope.dimension_count"] = c.rope_dim;
  m[p + "tie_embeddings"] = c.tie_embeddings;
  if (c.sliding_window > 0) m[p + "attention.sliding_window"] = c.sliding_window;
  if (!c.no_rope_layers.empty()) m[p + "rope.no_rope_layers"] = c.no_rope_layers;
  if (!c.full_attention_layers.empty()) m[p + "attention.full_attention_layers"] = c.full_attention_layers;
  // Gemma's fields, written only when set (GGUF's names for the softcaps)
  if (c.rope_local_theta > 0) m[p + "rope.local_freq_base"] = c.rope_local_theta;
  if (c.query_pre_attn_scalar > 0) m[p + "attention.query_pre_attn_scalar"] = c.query_pre_attn_scalar;
  if (c.attn_softcap > 0) m[p + "attn_logit_softcapping"] = c.attn_softcap;
  if (c.final_softcap > 0) m[p + "final_logit_softcapping"] = c.final_softcap;
}

namespace {

const nlohmann::json& require(const nlohmann::json& m, const std::string& key) {
  auto it = m.find(key);
  if (it == m.end()) fail("metadata: missing key '", key, "'");
  return *it;
}

int get_int(const nlohmann::json& m, const std::string& key) {
  const auto& v = require(m, key);
  if (!v.is_number_integer()) fail("metadata: '", key, "' must be an integer, found ", v.dump());
  const auto x = v.get<int64_t>();
  if (x < INT32_MIN || x > INT32_MAX) fail("metadata: '", key, "' out of range: ", x);
  return static_cast<int>(x);
}

float get_float(const nlohmann::json& m, const std::string& key) {
  const auto& v = require(m, key);
  if (!v.is_number()) fail("metadata: '", key, "' must be a number, found ", v.dump());
  return v.get<float>();
}

std::vector<float> get_floats(const nlohmann::json& m, const std::string& key) {
  const auto& v = require(m, key);
  if (!v.is_array()) fail("metadata: '", key, "' must be a list of numbers");
  std::vector<float> out;
  for (const auto& x : v) {
    if (!x.is_number()) fail("metadata: '", key, "' holds ", x.dump(), ", not a number");
    out.push_back(x.get<float>());
  }
  return out;
}

std::vector<int> get_layer_list(const nlohmann::json& m, const std::string& key) {
  std::vector<int> out;
  const auto it = m.find(key);
  if (it == m.end()) return out;
  if (!it->is_array()) fail("metadata: '", key, "' must be a list of layer indices");
  for (const auto& v : *it) {
    if (!v.is_number_integer()) fail("metadata: '", key, "' holds ", v.dump(), ", not a layer index");
    out.push_back(v.get<int>());
  }
  return out;
}

float get_float_or(const nlohmann::json& m, const std::string& key, float fallback) {
  return m.contains(key) ? get_float(m, key) : fallback;
}

}  // namespace

LlamaConfig config_from_metadata(const nlohmann::json& m) {
  if (!m.is_object()) fail("metadata: expected a JSON object");
  const auto& arch = require(m, "general.architecture");
  if (!arch.is_string() || !find_architecture(arch.get<std::string>()))
    fail("metadata: unsupported architecture ", arch.dump(), " (supported: ", supported_architectures(), ")");
  LlamaConfig c;
  c.architecture = arch.get<std::string>();
  const std::string p = c.architecture + ".";
  c.dim = get_int(m, p + "embedding_length");
  c.n_layers = get_int(m, p + "block_count");
  c.n_heads = get_int(m, p + "attention.head_count");
  c.n_kv_heads = get_int(m, p + "attention.head_count_kv");
  c.head_dim = get_int(m, p + "attention.key_length");
  c.ffn_dim = get_int(m, p + "feed_forward_length");
  c.vocab_size = get_int(m, p + "vocab_size");
  c.context_length = get_int(m, p + "context_length");
  c.norm_eps = get_float(m, p + "attention.layer_norm_rms_epsilon");
  c.rope_theta = get_float(m, p + "rope.freq_base");
  const auto& layout = require(m, p + "rope.layout");
  if (layout == "interleaved") c.rope_layout = RopeLayout::interleaved;
  else if (layout == "neox") c.rope_layout = RopeLayout::neox;
  else fail("metadata: '", p, "rope.layout' must be \"interleaved\" or \"neox\", found ", layout.dump());
  const auto& stype = require(m, p + "rope.scaling.type");
  if (!stype.is_string()) fail("metadata: '", p, "rope.scaling.type' must be a string");
  c.rope_scaling.type = stype.get<std::string>();
  if (c.rope_scaling.type == "llama3") {
    c.rope_scaling.factor = get_float(m, p + "rope.scaling.factor");
    c.rope_scaling.low_freq_factor = get_float(m, p + "rope.scaling.low_freq_factor");
    c.rope_scaling.high_freq_factor = get_float(m, p + "rope.scaling.high_freq_factor");
    c.rope_scaling.original_context = get_int(m, p + "rope.scaling.original_context_length");
  }
  if (c.rope_scaling.type == "longrope") {
    c.rope_scaling.short_factor = get_floats(m, p + "rope.scaling.short_factor");
    c.rope_scaling.long_factor = get_floats(m, p + "rope.scaling.long_factor");
    c.rope_scaling.attention_factor = get_float(m, p + "rope.scaling.attention_factor");
    c.rope_scaling.original_context = get_int(m, p + "rope.scaling.original_context_length");
  }
  if (c.rope_scaling.type == "linear") c.rope_scaling.factor = get_float(m, p + "rope.scaling.factor");
  if (m.contains(p + "rope.dimension_count")) c.rope_dim = get_int(m, p + "rope.dimension_count");
  const auto& tie = require(m, p + "tie_embeddings");
  if (!tie.is_boolean()) fail("metadata: '", p, "tie_embeddings' must be true or false");
  c.tie_embeddings = tie.get<bool>();
  if (m.contains(p + "attention.sliding_window")) c.sliding_window = get_int(m, p + "attention.sliding_window");
  c.no_rope_layers = get_layer_list(m, p + "rope.no_rope_layers");
  c.full_attention_layers = get_layer_list(m, p + "attention.full_attention_layers");
  c.rope_local_theta = get_float_or(m, p + "rope.local_freq_base", 0.0f);
  c.query_pre_attn_scalar = get_float_or(m, p + "attention.query_pre_attn_scalar", 0.0f);
  c.attn_softcap = get_float_or(m, p + "attn_logit_softcapping", 0.0f);
  c.final_softcap = get_float_or(m, p + "final_logit_softcapping", 0.0f);
  c.validate();
  return c;
}

std::string layer_tensor_name(int layer, const char* part) {
  return "blk." + std::to_string(layer) + "." + part + ".weight";
}

std::vector<TensorSpec> expected_tensors(const LlamaConfig& c) {
  using U = uint64_t;
  const U dim = c.dim, vocab = c.vocab_size;
  std::vector<TensorSpec> t;
  t.push_back({"token_embd.weight", {vocab, dim}});
  t.push_back({"output_norm.weight", {dim}});
  if (!c.tie_embeddings) t.push_back({"output.weight", {vocab, dim}});
  const Architecture& arch = architecture_of(c);
  for (int l = 0; l < c.n_layers; ++l)
    for (const LayerTensorDesc& d : arch.layer) {
      const U rows = extent_size(d.rows, c), cols = extent_size(d.cols, c);
      t.push_back({layer_tensor_name(l, d), d.cols == Extent::none ? std::vector<U>{rows} : std::vector<U>{rows, cols}});
    }
  return t;
}

}  // namespace cllm
