// Hugging Face model folders: config.json (LlamaForCausalLM, MistralForCausalLM,
// Qwen2ForCausalLM, Qwen3ForCausalLM, SmolLM3ForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM,
// Gemma3ForCausalLM, and Gemma3ForConditionalGeneration's text model: model/architecture.h), model.safetensors or shards listed
// in model.safetensors.index.json, and optionally tokenizer.model (SentencePiece) or, without it,
// tokenizer.json (byte-level BPE, Llama 3), with tokenizer_config.json's special tokens and chat
// template.
//
// HF checkpoints store q/k rows permuted for "rotate half" RoPE. The tensors are kept exactly
// as stored and the layout is recorded as neox; the runtime rotates (x[i], x[i + d/2]).
#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <set>

#include "common/error.h"
#include "common/file_io.h"
#include "common/log.h"
#include "convert/chat_template_import.h"
#include "convert/hf_config.h"
#include "convert/import_util.h"
#include "convert/safetensors.h"
#include "convert/source_model.h"
#include "convert/tokenizer_import.h"
#include "format/cllm_format.h"
#include "model/architecture.h"
#include "text/chat_template.h"

namespace cllm {

namespace {

// Gemma's four norms a layer: post_attention_layernorm is the attention output's norm there
// (ffn_norm in Llama), pre_feedforward_layernorm the FFN input's (GGUF's gemma2 names).
const std::map<std::string, std::string>& gemma_norm_parts() {
  static const std::map<std::string, std::string> parts = {
      {"post_attention_layernorm", "post_attention_norm"},
      {"pre_feedforward_layernorm", "ffn_norm"},
      {"post_feedforward_layernorm", "post_ffw_norm"},
  };
  return parts;
}

// Gemma3ForConditionalGeneration keeps its text model under language_model ("model.language_model.
// layers.0..." in transformers 5, "language_model.model.layers.0..." in 4): the text model's
// own names. Others come back unchanged.
std::string strip_gemma3_text_prefix(const std::string& hf) {
  static const std::pair<std::string, std::string> prefixes[] = {
      {"model.language_model.", "model."}, {"language_model.model.", "model."}, {"language_model.lm_head.", "lm_head."}};
  for (const auto& [from, to] : prefixes)
    if (hf.compare(0, from.size(), from) == 0) return to + hf.substr(from.size());
  return hf;
}

// A Gemma 3 vision model's image encoder and projector: not imported (codecllm runs the text).
bool is_gemma3_vision_tensor(const std::string& hf) {
  for (const char* prefix : {"vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                             "model.multi_modal_projector."})
    if (hf.compare(0, std::strlen(prefix), prefix) == 0) return true;
  return false;
}

// HF parameter name -> canonical name. Unknown names come back unchanged (check_and_order_tensors
// then reports them); *skip is set for buffers that are not weights. gemma: the norms are
// Gemma's (gemma_norm_parts).
std::string canonical_name(const std::string& hf, bool gemma, bool* skip) {
  *skip = false;
  static const std::map<std::string, std::string> globals = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
  };
  static const std::map<std::string, std::string> parts = {
      {"self_attn.q_proj", "attn_q"},     {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},     {"self_attn.o_proj", "attn_output"},
      {"mlp.gate_proj", "ffn_gate"},      {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"},      {"input_layernorm", "attn_norm"},
      {"post_attention_layernorm", "ffn_norm"}, {"self_attn.q_norm", "attn_q_norm"},
      {"self_attn.k_norm", "attn_k_norm"},
      {"self_attn.qkv_proj", "attn_qkv"},  // Phi-3's fused projections, split by split_fused
      {"mlp.gate_up_proj", "ffn_gate_up"},
  };
  if (auto it = globals.find(hf); it != globals.end()) return it->second;
  const std::string inv_freq = "rotary_emb.inv_freq";  // a RoPE buffer some exports save
  if (hf.size() >= inv_freq.size() && hf.compare(hf.size() - inv_freq.size(), inv_freq.size(), inv_freq) == 0) {
    *skip = true;
    return hf;
  }
  const std::string prefix = "model.layers.";
  const auto ends_with = [&](const std::string& x) {
    return hf.size() >= x.size() && hf.compare(hf.size() - x.size(), x.size(), x) == 0;
  };
  const std::string suffix = ends_with(".weight") ? ".weight" : ends_with(".bias") ? ".bias" : "";
  if (suffix.empty() || hf.compare(0, prefix.size(), prefix) != 0 || hf.size() < prefix.size() + suffix.size())
    return hf;
  size_t pos = prefix.size(), digits = 0;
  while (pos < hf.size() && hf[pos] >= '0' && hf[pos] <= '9') ++pos, ++digits;
  if (digits == 0 || digits > 6 || pos >= hf.size() || hf[pos] != '.') return hf;
  const int layer = std::stoi(hf.substr(prefix.size(), digits));
  const std::string part = hf.substr(pos + 1, hf.size() - suffix.size() - pos - 1);
  auto it = parts.find(part);
  if (gemma && gemma_norm_parts().count(part)) it = gemma_norm_parts().find(part);
  else if (it == parts.end()) return hf;
  // "blk.N.attn_q.weight"; biases (Qwen2's q, k, v) "blk.N.attn_q.bias": a bias the
  // architecture lacks is then reported as unexpected by check_and_order_tensors
  return "blk." + std::to_string(layer) + "." + it->second + suffix;
}

struct Collected {
  std::vector<SourceTensor> tensors;
  std::vector<std::string> file_of;
};

void add_tensors(const SafetensorsFile& st, const std::string& file, const std::set<std::string>* only,
                 bool gemma, Collected& out) {
  for (const auto& t : st.tensors) {
    if (only && !only->count(t.name)) continue;
    bool skip = false;
    SourceTensor s;
    s.name = canonical_name(strip_gemma3_text_prefix(t.name), gemma, &skip);
    if (skip || (gemma && is_gemma3_vision_tensor(t.name))) continue;
    s.source_name = t.name;
    s.dtype = t.dtype;
    s.shape = t.shape;
    s.data = t.data;
    s.size = t.size;
    out.tensors.push_back(std::move(s));
    out.file_of.push_back(file);
  }
}

// Shard file names in an index must stay inside the folder.
bool plain_relative_path(const std::string& p) {
  if (p.empty() || p[0] == '/') return false;
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string::npos) end = p.size();
    const std::string part = p.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

// Phi-3's fused projections become the standard roles, as row ranges of the stored tensor
// (row-major [out, in]: a range of rows is a contiguous range of bytes, nothing is copied):
// qkv_proj = [q (q_dim rows); k (kv_dim); v (kv_dim)], gate_up_proj = [gate (ffn); up (ffn)],
// transformers' own split. The runtime then sees a Llama layer.
void split_fused(const LlamaConfig& c, Collected& col) {
  struct Part {
    const char* name;
    uint64_t rows;
  };
  const uint64_t qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.ffn_dim;
  Collected out;
  for (size_t i = 0; i < col.tensors.size(); ++i) {
    const SourceTensor& t = col.tensors[i];
    const size_t dot = t.name.rfind('.', t.name.size() - std::string(".weight").size() - 1);
    const std::string part = dot == std::string::npos ? "" : t.name.substr(dot + 1);
    std::vector<Part> parts;
    if (part == "attn_qkv.weight") parts = {{"attn_q", qd}, {"attn_k", kvd}, {"attn_v", kvd}};
    if (part == "ffn_gate_up.weight") parts = {{"ffn_gate", ffn}, {"ffn_up", ffn}};
    if (parts.empty()) {
      out.tensors.push_back(t);
      out.file_of.push_back(col.file_of[i]);
      continue;
    }
    uint64_t total = 0;
    for (const Part& p : parts) total += p.rows;
    if (t.shape.size() != 2 || t.shape[0] != total || t.size != t.shape[0] * t.shape[1] * dtype_size(t.dtype))
      fail("'", col.file_of[i], "': tensor '", t.source_name, "': shape ", shape_to_string(t.shape), ", expected [",
           total, ", ", c.dim, "] from config.json");
    const uint64_t row_bytes = t.shape[1] * dtype_size(t.dtype);
    uint64_t row = 0;
    for (const Part& p : parts) {
      SourceTensor s = t;
      s.name = t.name.substr(0, dot + 1) + p.name + ".weight";
      s.source_name = cat(t.source_name, "[", row, ":", row + p.rows, "]");
      s.shape = {p.rows, t.shape[1]};
      s.data = t.data + row * row_bytes;
      s.size = p.rows * row_bytes;
      out.tensors.push_back(std::move(s));
      out.file_of.push_back(col.file_of[i]);
      row += p.rows;
    }
  }
  col = std::move(out);
}

void read_weights(const std::string& dir, bool gemma, SourceModel& m, Collected& out) {
  const std::string single = path_join(dir, "model.safetensors");
  const std::string index = path_join(dir, "model.safetensors.index.json");
  if (path_exists(single)) {  // transformers prefers the single file too
    auto st = read_safetensors(single);
    add_tensors(st, single, nullptr, gemma, out);
    m.files.push_back(std::move(st.file));
    return;
  }
  if (!path_exists(index)) {
    std::string hint;
    if (path_exists(path_join(dir, "pytorch_model.bin")) || path_exists(path_join(dir, "pytorch_model.bin.index.json")))
      hint = " (PyTorch .bin checkpoints are not read: save the model with safe_serialization=True)";
    fail("'", dir, "': no model.safetensors or model.safetensors.index.json", hint);
  }
  const nlohmann::json j = json_read_file(index);
  const auto* wm = json_find(j, "weight_map");
  if (!wm || !wm->is_object()) fail("'", index, "': missing 'weight_map' object");
  std::map<std::string, std::set<std::string>> by_shard;  // shard -> tensor names
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) fail("'", index, "': weight_map entry '", it.key(), "' must name a file");
    const std::string shard = it.value().get<std::string>();
    if (!plain_relative_path(shard))
      fail("'", index, "': weight_map entry '", it.key(), "' names '", shard, "', which is outside the folder");
    by_shard[shard].insert(it.key());
  }
  if (by_shard.empty()) fail("'", index, "': weight_map is empty");
  for (const auto& [shard, names] : by_shard) {
    const std::string path = path_join(dir, shard);
    if (!path_exists(path))
      fail("'", index, "': shard '", shard, "' (holding tensor '", *names.begin(), "' and ", names.size() - 1,
           " more) is missing");
    auto st = read_safetensors(path);
    for (const auto& name : names)
      if (!st.find(name)) fail("'", path, "': tensor '", name, "', listed in model.safetensors.index.json, is not in this shard");
    add_tensors(st, path, &names, gemma, out);
    m.files.push_back(std::move(st.file));
  }
}

// A special token in tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
std::string special_token_text(const nlohmann::json& tc, const char* key) {
  const auto* v = json_find(tc, key);
  if (!v) return "";
  if (v->is_string()) return v->get<std::string>();
  if (v->is_object()) {
    const auto c = v->find("content");
    if (c != v->end() && c->is_string()) return c->get<std::string>();
  }
  return "";
}

void read_tokenizer(const std::string& dir, const nlohmann::json& cfg, const std::string& cfg_path, SourceModel& m) {
  // tokenizer.model (SentencePiece) first: Llama 2 / TinyLlama folders carry both it and a
  // tokenizer.json converted from it. Without it, tokenizer.json is the (Llama 3) BPE tokenizer.
  const std::string spm_path = path_join(dir, "tokenizer.model");
  const std::string json_path = path_join(dir, "tokenizer.json");
  SpmInfo info;
  if (path_exists(spm_path)) {
    m.tokenizer.kind = "sentencepiece";
    m.tokenizer.origin = "tokenizer.model";
    m.tokenizer.data = read_file(spm_path);
    info = spm_check(m.tokenizer.data, spm_path);
    if (info.vocab_size > m.config.vocab_size)
      fail("'", spm_path, "': ", info.vocab_size, " tokens, more than config.json's vocab_size ", m.config.vocab_size);
  } else if (path_exists(json_path)) {
    m.tokenizer = load_hf_tokenizer_json(json_path, m.config.vocab_size, &info);
  } else {
    log_debug("'", dir, "': no tokenizer.model or tokenizer.json: the model will have no tokenizer");
  }

  nlohmann::json tc = nlohmann::json::object();
  const std::string tc_path = path_join(dir, "tokenizer_config.json");
  if (path_exists(tc_path)) tc = json_read_file(tc_path);
  if (!tc.is_object()) fail("'", tc_path, "': expected a JSON object");

  // The id of a token given by its text, in whichever tokenizer was found.
  auto piece_id = [&](const std::string& text) -> int {
    if (text.empty() || m.tokenizer.data.empty()) return -1;
    return m.tokenizer.kind == "bpe" ? bpe_added_token_id(m.tokenizer.data, text) : spm_piece_id(m.tokenizer.data, text);
  };
  // Special ids: config.json, then tokenizer_config.json's token strings, then the tokenizer's.
  auto special_id = [&](const char* id_key, const char* token_key, int own_id) -> int {
    if (const auto* v = json_find(cfg, id_key)) {
      const nlohmann::json& x = v->is_array() && !v->empty() ? v->front() : *v;  // eos may be a list
      if (!x.is_number_integer()) fail("'", cfg_path, "': '", id_key, "' must be an integer or a list of them");
      return x.get<int>();
    }
    const int id = piece_id(special_token_text(tc, token_key));
    return id >= 0 ? id : own_id;
  };
  const int bos = special_id("bos_token_id", "bos_token", info.bos_id);
  const int eos = special_id("eos_token_id", "eos_token", info.eos_id);
  for (int id : {bos, eos})
    if (id >= m.config.vocab_size) fail("'", cfg_path, "': special token id ", id, " is outside the vocabulary (", m.config.vocab_size, ")");
  if (bos >= 0) m.extra_metadata["tokenizer.bos_id"] = bos;
  if (eos >= 0) m.extra_metadata["tokenizer.eos_id"] = eos;
  // Every end-of-generation token: config.json's / generation_config.json's eos_token_id lists and
  // the tokenizer's end-of-turn tokens (<|eot_id|>, <|im_end|>, <end_of_turn> ...).
  const std::vector<int> eog = hf_eog_ids(m.tokenizer, cfg, dir, eos, m.config.vocab_size);
  if (!eog.empty()) m.extra_metadata["tokenizer.eos_ids"] = eog;
  // A BPE tokenizer adds BOS when its post-processor says so (Llama 3's does); SentencePiece
  // models do unless tokenizer_config.json says otherwise.
  const bool bpe_adds_bos = m.tokenizer.kind != "bpe" || info.bos_id >= 0;
  m.extra_metadata["tokenizer.add_bos"] = json_bool_or(tc, "add_bos_token", bpe_adds_bos, tc_path);
  std::string template_origin;
  const std::string jinja = hf_chat_template(dir, tc, tc_path, &template_origin);
  record_chat_template(jinja, template_origin, m);
}

}  // namespace

namespace {

// Where the weights come from: the folder's safetensors files, or tensors given by the caller.
using WeightReader = std::function<void(bool gemma, SourceModel& m, Collected& out)>;

SourceModel import_hf(const std::string& dir, const ImportOptions& opt, const WeightReader& read_weights) {
  if (!is_directory(dir)) fail("'", dir, "': not a directory");
  SourceModel m;
  m.format = SourceFormat::hf;
  m.path = dir;
  m.extra_metadata = nlohmann::json::object();

  const std::string cfg_path = path_join(dir, "config.json");
  if (!path_exists(cfg_path))
    fail("'", dir, "': no config.json: not a Hugging Face model folder (expected config.json and model.safetensors)");
  const nlohmann::json cfg = json_read_file(cfg_path);
  read_hf_config(cfg, cfg_path, m.config);

  Collected col;
  read_weights(is_gemma(m.config.architecture), m, col);
  split_fused(m.config, col);
  m.tensors = std::move(col.tensors);
  check_layer_count(m, "'" + cfg_path + "': num_hidden_layers");

  // Tied embeddings: the output projection is the embedding. A stored lm_head.weight is
  // dropped; transformers ignores it too (tie_weights), so one that differs only gets a warning.
  if (m.config.tie_embeddings) {
    const SourceTensor* embd = m.find("token_embd.weight");
    for (size_t i = 0; i < m.tensors.size(); ++i) {
      if (m.tensors[i].name != "output.weight") continue;
      if (!embd || !tensors_identical(m.tensors[i], *embd))
        log_warn("'", col.file_of[i], "': lm_head.weight differs from embed_tokens but config.json ties them; "
                 "using embed_tokens, as transformers does");
      m.tensors.erase(m.tensors.begin() + static_cast<std::ptrdiff_t>(i));
      col.file_of.erase(col.file_of.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  } else if (!m.find("output.weight") && m.find("token_embd.weight")) {
    fail("'", dir, "': config.json has tie_word_embeddings false, but the weights have no lm_head.weight");
  }
  check_shapes_against_config(m, col.file_of, "config.json");

  if (!opt.tokenizer_path.empty()) {
    SpmInfo info;
    m.tokenizer = load_tokenizer_file(opt.tokenizer_path, m.config.vocab_size, &info);
    if (info.bos_id >= 0) m.extra_metadata["tokenizer.bos_id"] = info.bos_id;
    if (info.eos_id >= 0) m.extra_metadata["tokenizer.eos_id"] = info.eos_id;
    m.extra_metadata["tokenizer.add_bos"] = m.tokenizer.kind != "bpe" || info.bos_id >= 0;
  } else {
    read_tokenizer(dir, cfg, cfg_path, m);
  }
  fill_source_metadata(m);
  check_and_order_tensors(m);
  return m;
}

}  // namespace

SourceModel import_hf_folder(const std::string& dir, const ImportOptions& opt) {
  return import_hf(dir, opt, [&](bool gemma, SourceModel& m, Collected& out) { read_weights(dir, gemma, m, out); });
}

SourceModel import_hf_folder_with_tensors(const std::string& dir, const ImportOptions& opt,
                                          std::vector<SourceTensor> hf_tensors) {
  return import_hf(dir, opt, [&](bool gemma, SourceModel&, Collected& out) {
    for (auto& t : hf_tensors) {
      bool skip = false;
      t.source_name = t.name;
      t.name = canonical_name(strip_gemma3_text_prefix(t.source_name), gemma, &skip);
      if (skip) continue;
      out.tensors.push_back(std::move(t));
      out.file_of.push_back(dir);
    }
  });
}

}  // namespace cllm
