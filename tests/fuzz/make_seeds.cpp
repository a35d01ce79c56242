// Writes the seed corpus of every fuzz target into OUT_DIR/<target>/: small valid files that
// codecllm generates itself (a tiny Llama as .cllm, safetensors, GGUF and llama2.c .bin; tiny
// tokenizers), each also cut in half (a truncated download). With SHARED_MODELS (the
// ../shared/models folder) it adds tok512.model, tok512.bin and the metadata part of
// stories260K-f32.gguf, read at generation time and never copied into the repository.
//
//   make_seeds OUT_DIR [SHARED_MODELS]
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"
#include "common/file_io.h"
#include "convert/compress.h"
#include "convert/safetensors.h"
#include "convert/spm_model_builder.h"
#include "text/bpe_tokenizer.h"

using namespace cllm;

namespace {

using Bytes = std::vector<uint8_t>;

void write_seed(const std::string& dir, const std::string& name, const Bytes& b, bool also_half = true) {
  ::mkdir(dir.c_str(), 0755);
  auto put = [&](const std::string& path, size_t n) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(b.data(), 1, n, f) != n || std::fclose(f) != 0) fail("writing '", path, "'");
  };
  put(dir + "/" + name, b.size());
  if (also_half) put(dir + "/" + name + ".half", b.size() / 2);
}

// A tiny Llama: 1 layer, dim 32, 2 heads of 16 (1 kv head), ffn 64, vocab 32.
LlamaConfig tiny_config() {
  LlamaConfig c;
  c.dim = 32;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 16;
  c.ffn_dim = 64;
  c.vocab_size = 32;
  c.context_length = 64;
  c.rope_layout = RopeLayout::interleaved;
  c.tie_embeddings = true;
  return c;
}

// Its tokenizer: <unk>, <s>, </s>, then '▁' and single letters and a few words.
SpmModelSpec tiny_vocab() {
  SpmModelSpec s;
  s.unk_id = 0;
  s.bos_id = 1;
  s.eos_id = 2;
  s.pieces.push_back({"<unk>", 0, SpmPieceType::unknown});
  s.pieces.push_back({"<s>", 0, SpmPieceType::control});
  s.pieces.push_back({"</s>", 0, SpmPieceType::control});
#define SP "\xE2\x96\x81"  // '▁'
  const char* words[] = {SP, "a", "e", "i", "o", "n", "t", "s", "h", "r", "d", "l", "w", SP "t", SP "a", "he", "in",
                         "on", SP "the", "ce", "up", SP "once", SP "upon", SP "time", "\xC3\xA9", "!", "\n", ","};
#undef SP
  float score = -1;
  for (const char* w : words) s.pieces.push_back({w, score--, SpmPieceType::normal});
  return s;
}

// Values of a tensor: Gaussian (std 0.02) for matrices, near 1 for norms.
struct Tensor {
  std::string name;
  std::vector<uint64_t> shape;
  DType dtype;
  Bytes data;
};

std::vector<Tensor> tiny_tensors(const LlamaConfig& c) {
  std::mt19937 rng(7);
  std::normal_distribution<float> gauss(0.0f, 0.02f);
  std::vector<Tensor> out;
  for (const auto& spec : expected_tensors(c)) {
    Tensor t{spec.name, spec.shape, DType::BF16, {}};
    const bool norm = spec.shape.size() == 1;
    if (spec.name == "token_embd.weight" || norm) t.dtype = DType::F32;
    else if (spec.name.find("ffn_down") != std::string::npos) t.dtype = DType::F16;
    uint64_t n = 1;
    for (auto d : spec.shape) n *= d;
    t.data.resize(n * dtype_size(t.dtype));
    for (uint64_t i = 0; i < n; ++i) {
      const float v = norm ? 1.0f + gauss(rng) : gauss(rng);
      if (t.dtype == DType::F32) std::memcpy(&t.data[4 * i], &v, 4);
      else {
        const uint16_t h = t.dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
        std::memcpy(&t.data[2 * i], &h, 2);
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

// ---- .cllm

void cllm_seeds(const std::string& dir, const std::string& tmp) {
  const LlamaConfig c = tiny_config();
  const auto tensors = tiny_tensors(c);
  struct Variant {
    const char* name;
    bool tokenizer, raw;
  };
  for (const Variant v : {Variant{"tiny.cllm", true, false}, Variant{"tiny-raw.cllm", true, true},
                          Variant{"tiny-notok.cllm", false, false}}) {
    SourceModel mv;  // its tensors point into `tensors`
    mv.format = SourceFormat::hf;
    mv.path = "tiny";
    mv.config = c;
    mv.extra_metadata = nlohmann::json::object();
    for (const auto& t : tensors) mv.tensors.push_back({t.name, t.name, t.dtype, t.shape, t.data.data(), t.data.size()});
    if (v.tokenizer) {
      mv.tokenizer.kind = "sentencepiece";
      mv.tokenizer.origin = "tiny";
      mv.tokenizer.data = build_spm_model(tiny_vocab());
      mv.extra_metadata["tokenizer.bos_id"] = 1;
      mv.extra_metadata["tokenizer.eos_id"] = 2;
      mv.extra_metadata["tokenizer.add_bos"] = true;
    }
    CompressOptions opt;
    opt.threads = 1;
    opt.overwrite = true;
    opt.tile_elems = 32768;
    opt.store_raw = v.raw;
    compress_model(mv, tmp, opt);
    write_seed(dir, v.name, read_file(tmp));
  }
}

// ---- safetensors

void safetensors_seeds(const std::string& dir, const std::string& tmp) {
  const auto tensors = tiny_tensors(tiny_config());
  std::vector<SafetensorsEntry> entries;
  for (size_t i = 0; i < 4; ++i) {  // embeddings f32, attn_norm f32, attn_q bf16, ...
    const auto& t = tensors[i];
    entries.push_back({t.name, t.dtype, t.shape, t.data.data(), t.data.size()});
  }
  for (const auto& t : tensors)
    if (t.dtype == DType::F16) {
      entries.push_back({t.name, t.dtype, t.shape, t.data.data(), t.data.size()});
      break;
    }
  entries.push_back({"empty", DType::F32, {0, 4}, nullptr, 0});
  write_safetensors(tmp, entries, {{"format", "pt"}}, true);
  write_seed(dir, "tiny.safetensors", read_file(tmp));
}

// ---- GGUF (v3), written by hand: codecllm reads GGUF but has no writer

struct GgufWriter {
  Bytes b;
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void f32(float v) { raw(&v, 4); }
  void raw(const void* p, size_t n) { b.insert(b.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n); }
  void str(const std::string& s) { u64(s.size()); raw(s.data(), s.size()); }
  void kv_u32(const std::string& k, uint32_t v) { str(k); u32(4); u32(v); }
  void kv_f32(const std::string& k, float v) { str(k); u32(6); f32(v); }
  void kv_bool(const std::string& k, bool v) { str(k); u32(7); b.push_back(v ? 1 : 0); }
  void kv_str(const std::string& k, const std::string& v) { str(k); u32(8); str(v); }
};

Bytes tiny_gguf(bool with_rope_freqs) {
  const LlamaConfig c = tiny_config();
  auto tensors = tiny_tensors(c);
  if (with_rope_freqs) {
    Tensor f{"rope_freqs.weight", {static_cast<uint64_t>(c.head_dim / 2)}, DType::F32, {}};
    for (int i = 0; i < c.head_dim / 2; ++i) {
      const float one = 1.0f;
      f.data.insert(f.data.end(), reinterpret_cast<const uint8_t*>(&one), reinterpret_cast<const uint8_t*>(&one) + 4);
    }
    tensors.push_back(std::move(f));
  }
  const SpmModelSpec vocab = tiny_vocab();
  GgufWriter w;
  w.raw("GGUF", 4);
  w.u32(3);
  w.u64(tensors.size());
  w.u64(19);  // metadata entries, counted below
  w.kv_str("general.architecture", "llama");
  w.kv_str("general.name", "tiny");
  w.kv_u32("general.alignment", 32);
  w.kv_u32("llama.context_length", static_cast<uint32_t>(c.context_length));
  w.kv_u32("llama.embedding_length", static_cast<uint32_t>(c.dim));
  w.kv_u32("llama.block_count", static_cast<uint32_t>(c.n_layers));
  w.kv_u32("llama.feed_forward_length", static_cast<uint32_t>(c.ffn_dim));
  w.kv_u32("llama.attention.head_count", static_cast<uint32_t>(c.n_heads));
  w.kv_u32("llama.attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
  w.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.kv_f32("llama.rope.freq_base", 10000.0f);
  w.kv_str("tokenizer.ggml.model", "llama");
  w.str("tokenizer.ggml.tokens");
  w.u32(9);
  w.u32(8);
  w.u64(vocab.pieces.size());
  for (const auto& p : vocab.pieces) w.str(p.piece);
  w.str("tokenizer.ggml.scores");
  w.u32(9);
  w.u32(6);
  w.u64(vocab.pieces.size());
  for (const auto& p : vocab.pieces) w.f32(p.score);
  w.str("tokenizer.ggml.token_type");
  w.u32(9);
  w.u32(5);
  w.u64(vocab.pieces.size());
  for (const auto& p : vocab.pieces) w.u32(static_cast<uint32_t>(p.type));
  w.kv_u32("tokenizer.ggml.bos_token_id", 1);
  w.kv_u32("tokenizer.ggml.eos_token_id", 2);
  w.kv_u32("tokenizer.ggml.unknown_token_id", 0);
  w.kv_bool("tokenizer.ggml.add_bos_token", true);
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    w.str(t.name);
    w.u32(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) w.u64(*it);  // ne[0] contiguous
    w.u32(t.dtype == DType::F32 ? 0 : t.dtype == DType::F16 ? 1 : 30);
    w.u64(offset);
    offset += (t.data.size() + 31) / 32 * 32;
  }
  while (w.b.size() % 32) w.b.push_back(0);
  for (const auto& t : tensors) {
    w.raw(t.data.data(), t.data.size());
    while (w.b.size() % 32) w.b.push_back(0);
  }
  return w.b;
}

// ---- llama2.c

Bytes tiny_llama2c(bool shared_classifier) {
  // dim 8, hidden 16, 1 layer, 2 heads (head size 4), 1 kv head, vocab 16, seq_len 4.
  const int32_t header[7] = {8, 16, 1, 2, 1, shared_classifier ? 16 : -16, 4};
  const uint64_t dim = 8, hidden = 16, kv = 4, vocab = 16, seq = 4, head = 4;
  uint64_t floats = vocab * dim + dim + dim * dim + 2 * kv * dim + dim * dim + dim + 3 * hidden * dim + dim + seq * head;
  if (!shared_classifier) floats += vocab * dim;
  Bytes b(sizeof header + 4 * floats);
  std::memcpy(b.data(), header, sizeof header);
  std::mt19937 rng(3);
  std::normal_distribution<float> gauss(0.0f, 0.1f);
  for (uint64_t i = 0; i < floats; ++i) {
    const float v = gauss(rng);
    std::memcpy(&b[sizeof header + 4 * i], &v, 4);
  }
  return b;
}

// ---- tokenizers: u16 (vocabulary size - 1), then the file

Bytes with_vocab_prefix(uint16_t vocab_minus_1, const Bytes& file) {
  Bytes b = {static_cast<uint8_t>(vocab_minus_1), static_cast<uint8_t>(vocab_minus_1 >> 8)};
  b.insert(b.end(), file.begin(), file.end());
  return b;
}

// llama2.c's tokenizer .bin: u32 max_token_length, then {f32 score, i32 len, bytes} per token.
Bytes tiny_llama2c_tokenizer() {
  const std::vector<std::string> tokens = {"<unk>", "\n<s>\n", "\n</s>\n", "<0x0A>", " ", "a", "b", " ab", "ba", "!"};
  Bytes b;
  auto put = [&](const void* p, size_t n) { b.insert(b.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n); };
  const uint32_t max_len = 6;
  put(&max_len, 4);
  float score = 0;
  for (const auto& t : tokens) {
    const int32_t len = static_cast<int32_t>(t.size());
    put(&score, 4);
    put(&len, 4);
    put(t.data(), t.size());
    score -= 1;
  }
  return b;
}

// ---- byte-level BPE: every byte a token, a few merges, one added special token

BpeSpec tiny_bpe() {
  BpeSpec s;
  for (int b = 0; b < 256; ++b) s.tokens.push_back(std::string(1, static_cast<char>(b)));
  auto merge = [&](const std::string& a, const std::string& b) {
    auto id = [&](const std::string& t) {
      return static_cast<int>(std::find(s.tokens.begin(), s.tokens.end(), t) - s.tokens.begin());
    };
    s.merges.push_back({id(a), id(b)});
    s.tokens.push_back(a + b);
  };
  merge("h", "e");
  merge("l", "l");
  merge("he", "ll");
  merge("hell", "o");
  merge(" ", "w");
  merge("o", "r");
  merge(" w", "or");
  merge(" wor", "l");
  merge(" worl", "d");
  s.added.push_back({static_cast<int>(s.tokens.size()), "<|begin_of_text|>", true, false, false, false});
  s.tokens.push_back("<|begin_of_text|>");
  s.template_bos = s.added.back().id;
  BpePreStep split;
  split.pattern = kGpt2SplitPattern;
  s.pre_steps.push_back(split);
  BpePreStep byte_level;
  byte_level.kind = BpePreStep::Kind::byte_level;
  s.pre_steps.push_back(byte_level);
  return s;
}

// The same as a Hugging Face tokenizer.json.
std::string tiny_bpe_json(const BpeSpec& s) {
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object(), merges = nlohmann::ordered_json::array();
  for (size_t id = 0; id + 1 < s.tokens.size(); ++id) vocab[bpe_bytes_to_piece(s.tokens[id])] = id;
  for (const auto& [a, b] : s.merges) merges.push_back(bpe_bytes_to_piece(s.tokens[a]) + " " + bpe_bytes_to_piece(s.tokens[b]));
  nlohmann::ordered_json j = {
      {"version", "1.0"},
      {"added_tokens", {{{"id", s.added[0].id}, {"content", s.added[0].content}, {"single_word", false},
                         {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", {{"type", "TemplateProcessing"},
                          {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                          {"special_tokens", {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {s.added[0].id}}, {"tokens", {"<|begin_of_text|>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                 {"vocab", vocab}, {"merges", merges}}}};
  return j.dump(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_seeds OUT_DIR [SHARED_MODELS]\n");
    return 2;
  }
  const std::string out = argv[1];
  const std::string shared = argc > 2 ? argv[2] : "";
  try {
    ::mkdir(out.c_str(), 0755);
    const std::string tmp = out + "/.tmp";
    cllm_seeds(out + "/cllm", tmp);
    safetensors_seeds(out + "/safetensors", tmp);
    write_seed(out + "/gguf", "tiny.gguf", tiny_gguf(false));
    write_seed(out + "/gguf", "tiny-rope-freqs.gguf", tiny_gguf(true));
    write_seed(out + "/llama2c", "tiny.bin", tiny_llama2c(true));
    write_seed(out + "/llama2c", "tiny-wcls.bin", tiny_llama2c(false));
    const Bytes spm = build_spm_model(tiny_vocab());
    write_seed(out + "/tokenizer", "tiny.model", with_vocab_prefix(31, spm));
    write_seed(out + "/tokenizer", "tiny-llama2c.bin", with_vocab_prefix(9, tiny_llama2c_tokenizer()));
    const BpeSpec bpe = tiny_bpe();
    write_seed(out + "/bpe", "tiny.cllm-bpe", bpe_spec_serialize(bpe));
    const std::string json = tiny_bpe_json(bpe);
    write_seed(out + "/bpe", "tiny-tokenizer.json", Bytes(json.begin(), json.end()));
    if (!shared.empty()) {
      write_seed(out + "/tokenizer", "tok512.model", with_vocab_prefix(511, read_file(shared + "/tok512.model")), false);
      write_seed(out + "/tokenizer", "tok512.bin", with_vocab_prefix(511, read_file(shared + "/tok512.bin")), false);
      // The header, metadata and tensor table of stories260K-f32.gguf (its first 16 KiB: the
      // 512-token vocabulary and more), without the weights: a truncated real file.
      Bytes g = read_file(shared + "/stories260K-f32.gguf");
      g.resize(std::min<size_t>(g.size(), 16384));
      write_seed(out + "/gguf", "stories260K-head.gguf", g, false);
    }
    ::unlink(tmp.c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
