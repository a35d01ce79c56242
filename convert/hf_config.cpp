#include "convert/hf_config.h"

#include <cmath>
#include <vector>

#include "common/error.h"
#include "convert/import_util.h"
#include "model/architecture.h"

namespace cllm {

namespace {

// The architecture config.json names: the first entry of "architectures" that is supported
// (MistralForCausalLM -> mistral), else model_type when there is no list.
const Architecture& read_architecture(const nlohmann::json& cfg, const std::string& file) {
  const std::string model_type = json_string_or(cfg, "model_type", "", file);
  std::vector<std::string> archs;
  if (const auto* a = json_find(cfg, "architectures")) {
    if (!a->is_array()) fail("'", file, "': 'architectures' must be a list");
    for (const auto& x : *a)
      if (x.is_string()) archs.push_back(x.get<std::string>());
  }
  for (const std::string& name : archs)
    for (const Architecture* a : architectures())
      if (name == a->hf_class) return *a;
  if (archs.empty())
    if (const Architecture* a = find_architecture(model_type)) return *a;
  std::string found = archs.empty() ? "model_type '" + model_type + "'" : "architectures [";
  for (size_t i = 0; i < archs.size(); ++i) found += (i ? ", " : "") + archs[i];
  if (!archs.empty()) found += "]";
  fail("'", file, "': unsupported architecture (", found, "): codecllm supports ", supported_architectures());
}

// config.json's sliding_window: null or absent (none), or a positive window. A window that
// covers the whole trained context never masks anything and is dropped.
int read_sliding_window(const nlohmann::json& cfg, int context, const std::string& file) {
  const auto* w = json_find(cfg, "sliding_window");
  if (!w || w->is_null()) return 0;
  const int window = json_int(cfg, "sliding_window", file);
  if (window <= 0) fail("'", file, "': sliding_window must be positive or null, found ", window);
  return window < context ? window : 0;
}

// SmolLM3's no_rope_layers: one entry a layer, 1 where the layer uses RoPE and 0 where it does
// not (transformers' "use_rope = no_rope_layers[i]"); absent, every no_rope_layer_interval-th
// layer (default 4) has none. Returns the indices of the layers without RoPE.
std::vector<int> read_no_rope_layers(const nlohmann::json& cfg, int n_layers, const std::string& file) {
  std::vector<int> none;
  const auto* list = json_find(cfg, "no_rope_layers");
  if (!list || list->is_null()) {
    const int interval = json_int_or(cfg, "no_rope_layer_interval", 4, file);
    if (interval <= 0) fail("'", file, "': no_rope_layer_interval must be positive, found ", interval);
    for (int l = 0; l < n_layers; ++l)
      if ((l + 1) % interval == 0) none.push_back(l);
    return none;
  }
  if (!list->is_array() || static_cast<int>(list->size()) != n_layers)
    fail("'", file, "': no_rope_layers must list one 0 or 1 for each of the ", n_layers, " layers");
  for (int l = 0; l < n_layers; ++l) {
    const auto& v = (*list)[l];
    if (!v.is_number_integer() || (v.get<int>() != 0 && v.get<int>() != 1))
      fail("'", file, "': no_rope_layers[", l, "] is ", v.dump(), ", expected 0 (no RoPE) or 1");
    if (v.get<int>() == 0) none.push_back(l);
  }
  return none;
}

// The longrope fields (Phi-3/4): short_factor, long_factor, original_max_position_embeddings
// (in the scaling object, or beside it in transformers 4's Phi-3 configs) and the attention
// factor (given, or transformers' default: sqrt(1 + ln(factor) / ln(original)) with factor =
// max_position_embeddings / original, 1 when factor <= 1).
void read_longrope(const nlohmann::json& cfg, const nlohmann::json& scaling, const char* key, const std::string& file,
                   LlamaConfig& c) {
  RopeScaling& r = c.rope_scaling;
  r.type = "longrope";
  const auto factors = [&](const char* name) {
    const auto* v = json_find(scaling, name);
    if (!v || !v->is_array()) fail("'", file, "': ", key, " longrope needs a list '", name, "'");
    std::vector<float> f;
    for (const auto& x : *v) {
      if (!x.is_number()) fail("'", file, "': ", key, " '", name, "' holds ", x.dump(), ", not a number");
      f.push_back(x.get<float>());
    }
    return f;
  };
  r.short_factor = factors("short_factor");
  r.long_factor = factors("long_factor");
  r.original_context = json_int_or(scaling, "original_max_position_embeddings",
                                   json_int_or(cfg, "original_max_position_embeddings", 0, file), file);
  if (r.original_context <= 0) fail("'", file, "': longrope needs original_max_position_embeddings");
  if (const auto* af = json_find(scaling, "attention_factor"); af && !af->is_null()) {
    r.attention_factor = static_cast<float>(json_number_or(scaling, "attention_factor", 1.0, file));
    return;
  }
  double factor = json_number_or(scaling, "factor", 0.0, file);
  if (!(factor > 0)) factor = static_cast<double>(c.context_length) / r.original_context;
  r.attention_factor =
      factor <= 1.0 ? 1.0f : static_cast<float>(std::sqrt(1.0 + std::log(factor) / std::log(r.original_context)));
}

// RoPE: transformers 4 writes rope_theta + rope_scaling (+ partial_rotary_factor); transformers
// 5 one rope_parameters object holding rope_type, rope_theta, partial_rotary_factor and the
// scaling fields.
// Gemma 3's rope_parameters hold one such object per layer type: the full_attention one is the
// model's RoPE (the sliding layers' base is read by read_gemma_config).
void read_rope(const nlohmann::json& cfg, const std::string& file, LlamaConfig& c) {
  double theta = json_number_or(cfg, "rope_theta", 10000.0, file);
  double partial = json_number_or(cfg, "partial_rotary_factor", 1.0, file);
  const nlohmann::json* scaling = json_find(cfg, "rope_scaling");
  if (scaling && scaling->is_null()) scaling = nullptr;
  const char* scaling_key = "rope_scaling";
  if (const auto* params = json_find(cfg, "rope_parameters")) {
    if (!params->is_object()) fail("'", file, "': 'rope_parameters' must be an object");
    if (const auto* full = json_find(*params, "full_attention")) params = full;
    theta = json_number_or(*params, "rope_theta", theta, file);
    partial = json_number_or(*params, "partial_rotary_factor", partial, file);
    if (!scaling) {
      scaling = params;
      scaling_key = "rope_parameters";
    }
  }
  c.rope_theta = static_cast<float>(theta);
  if (!(partial > 0.0 && partial <= 1.0)) fail("'", file, "': partial_rotary_factor ", partial, " must be in (0, 1]");
  if (partial < 1.0) c.rope_dim = static_cast<int>(c.head_dim * partial);  // transformers' int(head_dim * factor)
  if (!scaling) return;
  if (!scaling->is_object()) fail("'", file, "': '", scaling_key, "' must be an object or null");
  std::string type = json_string_or(*scaling, "rope_type", "", file);
  if (type.empty()) type = json_string_or(*scaling, "type", "default", file);
  if (type == "llama3") {
    c.rope_scaling.type = "llama3";
    c.rope_scaling.factor = static_cast<float>(json_number_or(*scaling, "factor", 0.0, file));
    if (!(c.rope_scaling.factor > 0)) fail("'", file, "': ", scaling_key, " llama3 needs a positive 'factor'");
    c.rope_scaling.low_freq_factor = static_cast<float>(json_number_or(*scaling, "low_freq_factor", 1.0, file));
    c.rope_scaling.high_freq_factor = static_cast<float>(json_number_or(*scaling, "high_freq_factor", 4.0, file));
    c.rope_scaling.original_context = json_int_or(*scaling, "original_max_position_embeddings", 8192, file);
  } else if (type == "longrope" || type == "su") {  // "su": Phi-3's first name for it
    read_longrope(cfg, *scaling, scaling_key, file, c);
  } else if (type == "linear") {  // Gemma 3 (4B and larger): positions divided by factor
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = static_cast<float>(json_number_or(*scaling, "factor", 0.0, file));
    if (!(c.rope_scaling.factor > 0)) fail("'", file, "': ", scaling_key, " linear needs a positive 'factor'");
  } else if (type != "default") {
    fail("'", file, "': ", scaling_key, " type '", type,
         "' is not supported (llama3, longrope or linear scaling, or none)");
  }
}

}  // namespace

void read_hf_config(const nlohmann::json& folder_cfg, const std::string& file, LlamaConfig& c) {
  if (!folder_cfg.is_object()) fail("'", file, "': expected a JSON object");
  // Gemma3ForConditionalGeneration: the text model's config (text_config) under Gemma 3's
  // defaults; the others' own, Gemma's under their family's defaults
  const nlohmann::json* text = gemma3_text_config(folder_cfg, file);
  c.architecture = text ? "gemma3" : read_architecture(folder_cfg, file).name;
  const bool gemma = is_gemma(c.architecture);
  const nlohmann::json cfg = gemma ? with_gemma_defaults(text ? *text : folder_cfg, c.architecture) : folder_cfg;
  // Gemma names its activation hidden_activation (Gemma 2 configs carry hidden_act too)
  const std::string act_key = gemma ? "hidden_activation" : "hidden_act";
  const std::string want = gemma ? "gelu_pytorch_tanh" : "silu";
  const std::string act = json_string_or(cfg, act_key.c_str(), json_string_or(cfg, "hidden_act", want, file), file);
  if (act != want)
    fail("'", file, "': ", act_key, " '", act, "' is not supported (", c.architecture, " uses ", want, ")");
  // Qwen2 always has q, k and v biases (and no such keys); elsewhere biases are refused.
  if (json_bool_or(cfg, "attention_bias", false, file) || json_bool_or(cfg, "mlp_bias", false, file))
    fail("'", file, "': attention_bias / mlp_bias are not supported (Llama has no biases)");
  if ((c.architecture == "qwen2" || c.architecture == "qwen3" || c.architecture == "smollm3") &&
      json_bool_or(cfg, "use_sliding_window", false, file))
    fail("'", file, "': use_sliding_window (a window on the layers from max_window_layers on) is not supported");

  c.dim = json_int(cfg, "hidden_size", file);
  c.ffn_dim = json_int(cfg, "intermediate_size", file);
  c.n_layers = json_int(cfg, "num_hidden_layers", file);
  c.n_heads = json_int(cfg, "num_attention_heads", file);
  c.n_kv_heads = json_int_or(cfg, "num_key_value_heads", c.n_heads, file);
  if (c.n_heads <= 0) fail("'", file, "': num_attention_heads must be positive");
  if (!json_find(cfg, "head_dim") && c.dim % c.n_heads != 0)
    fail("'", file, "': hidden_size ", c.dim, " is not a multiple of num_attention_heads ", c.n_heads, " and no head_dim is given");
  c.head_dim = json_int_or(cfg, "head_dim", c.dim / c.n_heads, file);
  c.vocab_size = json_int(cfg, "vocab_size", file);
  c.context_length = json_int_or(cfg, "max_position_embeddings", 2048, file);  // transformers' default
  c.norm_eps = static_cast<float>(json_number_or(cfg, "rms_norm_eps", 1e-6, file));
  c.rope_layout = RopeLayout::neox;
  // (a vision model's top-level tie_word_embeddings is the one transformers ties by)
  c.tie_embeddings = json_bool_or(text ? folder_cfg : cfg, "tie_word_embeddings", json_bool_or(cfg, "tie_word_embeddings", false, file), file);
  if (c.architecture == "mistral" || c.architecture == "phi3")
    c.sliding_window = read_sliding_window(cfg, c.context_length, file);
  if (c.architecture == "smollm3") c.no_rope_layers = read_no_rope_layers(cfg, c.n_layers, file);

  read_rope(cfg, file, c);
  if (gemma) read_gemma_config(cfg, file, c);
  with_context("'" + file + "'", [&] { c.validate(); });
}

}  // namespace cllm
