// GGUF files with general.architecture "llama", "qwen2" or "qwen3" and F32/F16/BF16 or quantized
// tensors (gguf_tensors.h: dequantized on import). Tensor names are already canonical;
// llama.cpp's converter permutes a Llama's Hugging Face q/k rows back to adjacent-pair RoPE, so
// its layout is interleaved (Qwen2's rows are kept: neox). The "llama" (SentencePiece)
// vocabulary in tokenizer.ggml.* is rebuilt as a SentencePiece ModelProto, a "gpt2" one
// (byte-level BPE) as the compact BPE form (gguf_vocab.h).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/log.h"
#include "format/cllm_format.h"
#include "convert/chat_template_import.h"
#include "convert/gguf_reader.h"
#include "convert/gguf_tensors.h"
#include "convert/gguf_vocab.h"
#include "convert/import_util.h"
#include "convert/source_model.h"
#include "convert/spm_model_builder.h"
#include "convert/tokenizer_import.h"

namespace cllm {

namespace {

int hparam(const GGUFFile& g, const std::string& key, int def, bool required) {
  uint64_t v = 0;
  if (!g.get_uint(key, &v)) {
    if (required) fail("'", g.path(), "': missing metadata '", key, "'");
    return def;
  }
  if (v == 0 || v > static_cast<uint64_t>(INT32_MAX))
    fail("'", g.path(), "': metadata '", key, "' = ", v, " is out of range");
  return static_cast<int>(v);
}

// llama.cpp bakes Llama-3.x "llama3" RoPE scaling into a tensor of per-frequency divisors
// (rope_freqs.weight, [head_dim/2]). The runtime applies llama3 scaling from its parameters,
// so recover them: the tensor must equal the factors those parameters produce.
std::vector<double> llama3_factors(int head_dim, double theta, const RopeScaling& s) {
  const double pi = 3.14159265358979323846;
  const double low_wavelen = s.original_context / s.low_freq_factor;
  const double high_wavelen = s.original_context / s.high_freq_factor;
  std::vector<double> out;
  for (int i = 0; i < head_dim; i += 2) {
    // As the converter computes it: the frequency in float32.
    const float freq = static_cast<float>(1.0 / std::pow(theta, static_cast<float>(i) / static_cast<float>(head_dim)));
    const double wavelen = 2 * pi / freq;
    if (wavelen < high_wavelen) out.push_back(1.0);
    else if (wavelen > low_wavelen) out.push_back(s.factor);
    else {
      const double smooth = (s.original_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      out.push_back(1.0 / ((1 - smooth) / s.factor + smooth));
    }
  }
  return out;
}

void rope_scaling_from_freqs(const GGUFFile& g, const GGUFTensorInfo& t, LlamaConfig& c) {
  const std::string what = "'" + g.path() + "': tensor 'rope_freqs.weight'";
  if (t.type != kGgmlF32) fail(what, ": type ", ggml_type_name(t.type), ", expected F32");
  if (t.ne.size() != 1 || t.ne[0] != static_cast<uint64_t>(c.head_dim / 2))
    fail(what, ": shape ", shape_to_string(t.shape()), ", expected [", c.head_dim / 2, "]");
  std::vector<float> f(t.ne[0]);
  std::memcpy(f.data(), t.data, t.size);
  float max_factor = 1.0f;
  for (float x : f) max_factor = std::max(max_factor, x);
  if (max_factor == 1.0f) return;  // all ones: no scaling

  uint64_t orig = 0;
  std::vector<int> contexts = {8192, 4096, 2048, 16384, 32768, 131072};
  if (g.get_uint("llama.rope.scaling.original_context_length", &orig) && orig > 0 && orig <= INT32_MAX)
    contexts.insert(contexts.begin(), static_cast<int>(orig));
  for (int ctx : contexts) {
    RopeScaling s;
    s.type = "llama3";
    s.factor = max_factor;
    s.low_freq_factor = 1.0f;
    s.high_freq_factor = 4.0f;
    s.original_context = ctx;
    const auto expect = llama3_factors(c.head_dim, c.rope_theta, s);
    bool same = true;
    for (size_t i = 0; i < f.size() && same; ++i) same = std::fabs(f[i] - expect[i]) <= 1e-5 * std::fabs(expect[i]);
    if (same) {
      c.rope_scaling = s;
      return;
    }
  }
  fail(what, ": RoPE frequency factors (max ", max_factor,
       ") do not match llama3 scaling with low_freq_factor 1, high_freq_factor 4 and a usual original "
       "context: this RoPE scaling is not supported");
}

SpmPieceType piece_type(int32_t t, size_t id, const std::string& path) {
  if (t == 0) return SpmPieceType::normal;  // llama.cpp's "undefined"
  if (t < 1 || t > 6) fail("'", path, "': tokenizer.ggml.token_type[", id, "] = ", t, " is not a known token type");
  return static_cast<SpmPieceType>(t);
}

// Builds the SentencePiece model from the "llama" vocabulary, the BPE tokenizer from a "gpt2"
// one; other tokenizer models leave the model without a tokenizer. Special ids and the
// end-of-generation ids are recorded either way.
void import_gguf_tokenizer(const GGUFFile& g, SourceModel& m) {
  const std::string& path = g.path();
  std::string model;
  uint64_t u = 0;
  int bos = -1, eos = -1;
  if (g.get_uint("tokenizer.ggml.bos_token_id", &u) && u < static_cast<uint64_t>(m.config.vocab_size)) bos = static_cast<int>(u);
  if (g.get_uint("tokenizer.ggml.eos_token_id", &u) && u < static_cast<uint64_t>(m.config.vocab_size)) eos = static_cast<int>(u);
  bool add_bos = true;
  g.get_bool("tokenizer.ggml.add_bos_token", &add_bos);
  m.extra_metadata["tokenizer.add_bos"] = add_bos;

  if (!g.get_string("tokenizer.ggml.model", &model)) {
    log_warn("'", path, "': no tokenizer in the GGUF metadata");
  } else if (model == "gpt2") {
    m.tokenizer = gguf_bpe_tokenizer(g, m.config.vocab_size, add_bos ? bos : -1);
  } else if (model != "llama") {
    log_warn("'", path, "': tokenizer model '", model,
             "' is not supported (SentencePiece \"llama\", byte-level BPE \"gpt2\"): the model will have no tokenizer");
  } else {
    const auto tokens = g.get_string_array("tokenizer.ggml.tokens");
    const size_t n = tokens.size();
    if (n > static_cast<size_t>(m.config.vocab_size))
      fail("'", path, "': tokenizer.ggml.tokens has ", n, " tokens, more than the ", m.config.vocab_size,
           " rows of token_embd.weight");
    if (n < static_cast<size_t>(m.config.vocab_size))
      log_warn("'", path, "': the tokenizer has ", n, " tokens, the embedding ", m.config.vocab_size, " rows");
    std::vector<float> scores(n, 0.0f);
    std::vector<int32_t> types(n, 0);
    if (g.find("tokenizer.ggml.scores")) scores = g.get_f32_array("tokenizer.ggml.scores");
    if (g.find("tokenizer.ggml.token_type")) types = g.get_i32_array("tokenizer.ggml.token_type");
    if (scores.size() != n || types.size() != n)
      fail("'", path, "': tokenizer.ggml.scores (", scores.size(), ") and token_type (", types.size(),
           ") must have one entry per token (", n, ")");

    SpmModelSpec spec;
    spec.unk_id = -1;
    spec.pieces.resize(n);
    for (size_t i = 0; i < n; ++i) {
      SpmPiece& p = spec.pieces[i];
      p.piece = std::string(tokens[i]);
      p.score = scores[i];
      p.type = piece_type(types[i], i, path);
      if (types[i] == 0) {  // no type recorded: recognise the usual special pieces
        if (p.piece == "<unk>") p.type = SpmPieceType::unknown;
        else if (is_spm_byte_piece(p.piece)) p.type = SpmPieceType::byte;
        else if (static_cast<int>(i) == bos || static_cast<int>(i) == eos) p.type = SpmPieceType::control;
      }
      if (p.type == SpmPieceType::unknown && spec.unk_id < 0) spec.unk_id = static_cast<int>(i);
    }
    if (g.get_uint("tokenizer.ggml.unknown_token_id", &u) && u < n) {
      spec.unk_id = static_cast<int>(u);
      spec.pieces[u].type = SpmPieceType::unknown;
    }
    if (spec.unk_id < 0) fail("'", path, "': the tokenizer has no unknown token (SentencePiece needs one)");
    spec.bos_id = bos < static_cast<int>(n) ? bos : -1;
    spec.eos_id = eos < static_cast<int>(n) ? eos : -1;
    // llama.cpp's SentencePiece tokenizer adds the dummy prefix and never collapses spaces;
    // newer files may say otherwise explicitly.
    spec.add_dummy_prefix = true;
    spec.remove_extra_whitespaces = false;
    g.get_bool("tokenizer.ggml.add_space_prefix", &spec.add_dummy_prefix);
    g.get_bool("tokenizer.ggml.remove_extra_whitespaces", &spec.remove_extra_whitespaces);

    m.tokenizer.kind = "sentencepiece";
    m.tokenizer.origin = "gguf metadata";
    m.tokenizer.data = with_context("'" + path + "': tokenizer.ggml.tokens", [&] { return build_spm_model(spec); });
    spm_check(m.tokenizer.data, path + ": tokenizer.ggml.*");
  }
  if (bos >= 0) m.extra_metadata["tokenizer.bos_id"] = bos;
  if (eos >= 0) m.extra_metadata["tokenizer.eos_id"] = eos;
  if (const auto eog = gguf_eog_ids(g, m.config.vocab_size); !eog.empty()) m.extra_metadata["tokenizer.eos_ids"] = eog;
}

// general.architecture: "llama" (which llama.cpp also writes for Mistral 7B), "qwen2" or "qwen3".
std::string check_architecture(const GGUFFile& g) {
  const std::string& path = g.path();
  std::string arch;
  if (!g.get_string("general.architecture", &arch)) fail("'", path, "': missing metadata 'general.architecture'");
  if (arch != "llama" && arch != "qwen2" && arch != "qwen3")
    fail("'", path, "': general.architecture is '", arch,
         "': codecllm reads GGUF files of \"llama\", \"qwen2\" and \"qwen3\"");
  return arch;
}

// The <arch>.* hyperparameters; the vocabulary size comes from token_embd.weight instead.
void read_hparams(const GGUFFile& g, const std::string& arch, LlamaConfig& c) {
  const std::string& path = g.path();
  const std::string p = arch + ".";
  c.architecture = arch;
  c.dim = hparam(g, p + "embedding_length", 0, true);
  c.n_layers = hparam(g, p + "block_count", 0, true);
  c.ffn_dim = hparam(g, p + "feed_forward_length", 0, true);
  c.n_heads = hparam(g, p + "attention.head_count", 0, true);
  c.n_kv_heads = hparam(g, p + "attention.head_count_kv", c.n_heads, false);
  c.context_length = hparam(g, p + "context_length", 0, true);
  if (c.dim % c.n_heads != 0 && !g.find(p + "attention.key_length"))
    fail("'", path, "': embedding_length ", c.dim, " is not a multiple of head_count ", c.n_heads);
  c.head_dim = hparam(g, p + "attention.key_length", c.dim / c.n_heads, false);
  if (hparam(g, p + "attention.value_length", c.head_dim, false) != c.head_dim)
    fail("'", path, "': ", p, "attention.value_length differs from key_length: not supported");
  const int rope_dims = hparam(g, p + "rope.dimension_count", c.head_dim, false);
  if (rope_dims != c.head_dim)
    fail("'", path, "': ", p, "rope.dimension_count ", rope_dims, " differs from the head dimension ", c.head_dim,
         ": partial RoPE is not supported");
  double d = 0;
  if (!g.get_float(p + "attention.layer_norm_rms_epsilon", &d))
    fail("'", path, "': missing metadata '", p, "attention.layer_norm_rms_epsilon'");
  c.norm_eps = static_cast<float>(d);
  c.rope_theta = g.get_float(p + "rope.freq_base", &d) ? static_cast<float>(d) : 10000.0f;
  // llama.cpp's converter permutes Llama's q/k rows to adjacent pairs, not Qwen's (NEOX RoPE).
  c.rope_layout = arch == "llama" ? RopeLayout::interleaved : RopeLayout::neox;
  // llama.cpp writes Mistral 7B as "llama", without its window; a file that gives one keeps it.
  const int window = hparam(g, p + "attention.sliding_window", 0, false);
  if (arch == "llama" && window > 0 && window < c.context_length) {
    c.architecture = "mistral";
    c.sliding_window = window;
  }
  std::string scaling;
  if (g.get_string(p + "rope.scaling.type", &scaling) && scaling != "none")
    fail("'", path, "': ", p, "rope.scaling.type '", scaling, "' is not supported (llama3 scaling comes as rope_freqs.weight)");
}

// The vocabulary is token_embd.weight's rows; <arch>.vocab_size, when present, must agree.
void set_vocab_size(const GGUFFile& g, const std::string& arch, SourceModel& m) {
  const std::string& path = g.path();
  const SourceTensor* embd = m.find("token_embd.weight");
  if (!embd) fail("'", path, "': missing tensor 'token_embd.weight'");
  if (embd->shape.size() != 2 || embd->shape[0] == 0 || embd->shape[0] > static_cast<uint64_t>(INT32_MAX))
    fail("'", path, "': tensor 'token_embd.weight' has shape ", shape_to_string(embd->shape), ", expected [vocab, dim]");
  m.config.vocab_size = static_cast<int>(embd->shape[0]);
  uint64_t vocab_kv = 0;
  if (g.get_uint(arch + ".vocab_size", &vocab_kv) && vocab_kv != static_cast<uint64_t>(m.config.vocab_size))
    fail("'", path, "': ", arch, ".vocab_size ", vocab_kv, " differs from token_embd.weight's ", m.config.vocab_size,
         " rows");
}

// An output projection that is a byte copy of the embedding (stories260K's) is dropped and
// the model marked tied, so every source of the same weights imports to the same tensors.
void drop_copied_output(SourceModel& m) {
  m.config.tie_embeddings = true;
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    if (m.tensors[i].name != "output.weight") continue;
    if (tensors_identical(m.tensors[i], *m.find("token_embd.weight"))) {
      m.tensors.erase(m.tensors.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      m.config.tie_embeddings = false;
    }
    break;
  }
}

}  // namespace

SourceModel import_gguf(const std::string& path, const ImportOptions& opt) {
  GGUFFile g(path);
  SourceModel m;
  m.format = SourceFormat::gguf;
  m.path = path;

  const std::string arch = check_architecture(g);
  LlamaConfig& c = m.config;
  read_hparams(g, arch, c);
  GgufQuantization quantization;
  const GGUFTensorInfo* rope_freqs = add_gguf_tensors(g, m, &quantization);
  set_vocab_size(g, arch, m);
  check_layer_count(m, "'" + path + "': " + arch + ".block_count");
  with_context("'" + path + "'", [&] { c.validate(); });
  if (rope_freqs) rope_scaling_from_freqs(g, *rope_freqs, c);
  drop_copied_output(m);

  m.extra_metadata = nlohmann::json::object();
  import_gguf_tokenizer(g, m);
  record_gguf_chat_template(g, m);
  if (!opt.tokenizer_path.empty()) {
    SpmInfo info;
    m.tokenizer = load_tokenizer_file(opt.tokenizer_path, c.vocab_size, &info);
    if (info.bos_id >= 0) m.extra_metadata["tokenizer.bos_id"] = info.bos_id;
    if (info.eos_id >= 0) m.extra_metadata["tokenizer.eos_id"] = info.eos_id;
  }
  m.files.push_back(g.release_file());
  fill_source_metadata(m);
  record_gguf_quantization(quantization, m);
  check_and_order_tensors(m);
  return m;
}

}  // namespace cllm
