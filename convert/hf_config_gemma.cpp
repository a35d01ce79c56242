// Gemma 2 and Gemma 3 (text) config.json fields beyond the Llama ones, as transformers 5.25's
// Gemma2Config / Gemma3TextConfig read them (their defaults for absent keys; null disables a
// softcap).
#include <algorithm>
#include <string>
#include <vector>

#include "common/error.h"
#include "convert/hf_config.h"
#include "convert/import_util.h"

namespace cllm {

namespace {

// A softcap: absent, the family's default; null, none (0); else a positive number.
float read_softcap(const nlohmann::json& cfg, const char* key, double def, const std::string& file) {
  if (!cfg.contains(key)) return static_cast<float>(def);
  if (cfg.at(key).is_null()) return 0.0f;
  const double cap = json_number_or(cfg, key, 0.0, file);
  if (!(cap > 0)) fail("'", file, "': ", key, " must be positive or null, found ", cap);
  return static_cast<float>(cap);
}

// layer_types (one "sliding_attention" or "full_attention" a layer); absent, every pattern-th
// layer is full and the others slide (Gemma 2: 2, Gemma 3: sliding_window_pattern, default 6).
// Returns the indices of the full ones.
std::vector<int> read_full_attention_layers(const nlohmann::json& cfg, int n_layers, int pattern,
                                            const std::string& file) {
  std::vector<int> full;
  const auto* types = json_find(cfg, "layer_types");
  if (!types) {
    if (pattern <= 0) fail("'", file, "': sliding_window_pattern must be positive, found ", pattern);
    for (int l = 0; l < n_layers; ++l)
      if ((l + 1) % pattern == 0) full.push_back(l);
    return full;
  }
  if (!types->is_array() || static_cast<int>(types->size()) != n_layers)
    fail("'", file, "': layer_types must name the attention of each of the ", n_layers, " layers");
  for (int l = 0; l < n_layers; ++l) {
    const auto& t = (*types)[l];
    if (t == "full_attention") full.push_back(l);
    else if (t != "sliding_attention")
      fail("'", file, "': layer_types[", l, "] is ", t.dump(), ", expected \"sliding_attention\" or \"full_attention\"");
  }
  return full;
}

// Gemma 3's sliding layers' RoPE base: rope_parameters.sliding_attention (transformers 5) or
// rope_local_base_freq (transformers 4), default 10000, never scaled.
float read_local_rope_theta(const nlohmann::json& cfg, const std::string& file) {
  double theta = json_number_or(cfg, "rope_local_base_freq", 10000.0, file);
  const auto* params = json_find(cfg, "rope_parameters");
  if (const auto* local = params && params->is_object() ? json_find(*params, "sliding_attention") : nullptr) {
    const std::string type = json_string_or(*local, "rope_type", "default", file);
    if (type != "default")
      fail("'", file, "': rope_parameters.sliding_attention type '", type, "' is not supported (only default)");
    theta = json_number_or(*local, "rope_theta", theta, file);
  }
  if (!(theta > 0)) fail("'", file, "': the sliding layers' rope_theta must be positive, found ", theta);
  return static_cast<float>(theta);
}

}  // namespace

bool is_gemma(const std::string& architecture) {
  return architecture == "gemma2" || architecture == "gemma3";
}

const nlohmann::json* gemma3_text_config(const nlohmann::json& cfg, const std::string& file) {
  const auto* archs = json_find(cfg, "architectures");
  if (!archs || !archs->is_array() || std::find(archs->begin(), archs->end(), "Gemma3ForConditionalGeneration") == archs->end())
    return nullptr;
  const auto* text = json_find(cfg, "text_config");
  if (!text || !text->is_object()) fail("'", file, "': Gemma3ForConditionalGeneration without a text_config object");
  return text;
}

nlohmann::json with_gemma_defaults(const nlohmann::json& cfg, const std::string& architecture) {
  // transformers 5.25's defaults for the keys read_hf_config reads (the Gemma keys' defaults
  // are read_gemma_config's)
  nlohmann::json merged = {{"hidden_size", 2304},           {"intermediate_size", 9216},
                           {"num_hidden_layers", 26},       {"num_attention_heads", 8},
                           {"num_key_value_heads", 4},      {"head_dim", 256},
                           {"rms_norm_eps", 1e-6},          {"tie_word_embeddings", true},
                           {"hidden_activation", "gelu_pytorch_tanh"}};
  if (architecture == "gemma2") {
    merged["vocab_size"] = 256000;
    merged["max_position_embeddings"] = 8192;
  } else {
    merged["vocab_size"] = 262208;
    merged["max_position_embeddings"] = 131072;
    merged["rope_theta"] = 1e6;
  }
  for (auto it = cfg.begin(); it != cfg.end(); ++it) merged[it.key()] = it.value();
  return merged;
}

void read_gemma_config(const nlohmann::json& cfg, const std::string& file, LlamaConfig& c) {
  const bool gemma2 = c.architecture == "gemma2";
  if (json_bool_or(cfg, "use_bidirectional_attention", false, file))
    fail("'", file, "': use_bidirectional_attention (an encoder's attention) is not supported");
  c.query_pre_attn_scalar = static_cast<float>(json_number_or(cfg, "query_pre_attn_scalar", 256.0, file));
  if (!(c.query_pre_attn_scalar > 0)) fail("'", file, "': query_pre_attn_scalar must be positive");
  c.attn_softcap = read_softcap(cfg, "attn_logit_softcapping", gemma2 ? 50.0 : 0.0, file);
  c.final_softcap = read_softcap(cfg, "final_logit_softcapping", gemma2 ? 30.0 : 0.0, file);
  if (!gemma2) c.rope_local_theta = read_local_rope_theta(cfg, file);

  int window = 4096;
  if (cfg.contains("sliding_window")) window = cfg.at("sliding_window").is_null() ? 0 : json_int(cfg, "sliding_window", file);
  if (window < 0) fail("'", file, "': sliding_window must be positive or null, found ", window);
  const int pattern = gemma2 ? 2 : json_int_or(cfg, "sliding_window_pattern", 6, file);
  std::vector<int> full = read_full_attention_layers(cfg, c.n_layers, pattern, file);
  // A window as long as the trained context masks nothing, nor one on no layer: none at all.
  if (window >= c.context_length || window == 0 || static_cast<int>(full.size()) == c.n_layers) {
    window = 0;
    full.clear();
  }
  c.sliding_window = window;
  c.full_attention_layers = full;
}

}  // namespace cllm
