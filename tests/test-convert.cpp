// Specification of convert/: the safetensors reader/writer, the three importers (HF folder,
// llama2.c .bin, GGUF), the SentencePiece model builder, and how each refuses bad input.
// HF folders are written by the tests themselves; the reference models come from
// ../shared/models and are never copied into the repository.
#include <sentencepiece_processor.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>

#include "common/error.h"
#include "common/file_io.h"
#include "convert/gguf_reader.h"
#include "convert/safetensors.h"
#include "convert/source_model.h"
#include "convert/spm_model_builder.h"
#include "convert/tokenizer_import.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Contains;

namespace {

using test::error_of;
using test::write_bytes;

void write_text(const std::string& path, const std::string& text) {
  write_bytes(path, std::vector<uint8_t>(text.begin(), text.end()));
}

// The message of the cllm::Error fn throws; any other exception escapes and fails the test.
void require_same_tensors(const SourceModel& a, const SourceModel& b) {
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& x = a.tensors[i];
    const auto& y = b.tensors[i];
    INFO("tensor " << x.name);
    REQUIRE(x.name == y.name);
    REQUIRE(x.shape == y.shape);
    REQUIRE(x.dtype == y.dtype);
    REQUIRE(x.size == y.size);
    REQUIRE(std::memcmp(x.data, y.data, x.size) == 0);
  }
}

std::unique_ptr<sentencepiece::SentencePieceProcessor> load_spm(const std::vector<uint8_t>& proto) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto st = sp->LoadFromSerializedProto(std::string(proto.begin(), proto.end()));
  INFO(st.ToString());
  REQUIRE(st.ok());
  return sp;
}

// ---- a tiny Llama written as a Hugging Face folder

struct HfSpec {
  LlamaConfig config;
  DType dtype = DType::F32;
  int shards = 1;                  // 1: model.safetensors; more: an index and shard files
  bool lm_head_when_tied = false;  // write lm_head.weight (a copy of the embedding) although tied
  std::string rope_scaling_json;   // "" = none; otherwise the JSON of rope_scaling
  bool transformers5 = false;      // rope_theta/rope_scaling inside "rope_parameters"
};

LlamaConfig tiny_config() {
  LlamaConfig c;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;  // GQA
  c.head_dim = 16;
  c.ffn_dim = 96;
  c.vocab_size = 512;
  c.context_length = 1024;
  c.norm_eps = 1e-6f;
  c.rope_theta = 500000.0f;
  c.rope_layout = RopeLayout::neox;
  return c;
}

std::string hf_name(const std::string& canonical) {
  if (canonical == "token_embd.weight") return "model.embed_tokens.weight";
  if (canonical == "output_norm.weight") return "model.norm.weight";
  if (canonical == "output.weight") return "lm_head.weight";
  static const std::vector<std::pair<std::string, std::string>> parts = {
      {"attn_q", "self_attn.q_proj"},  {"attn_k", "self_attn.k_proj"},   {"attn_v", "self_attn.v_proj"},
      {"attn_output", "self_attn.o_proj"}, {"ffn_gate", "mlp.gate_proj"}, {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},   {"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"}};
  const auto dot1 = canonical.find('.', 4);
  const std::string layer = canonical.substr(4, dot1 - 4);
  const std::string part = canonical.substr(dot1 + 1, canonical.size() - dot1 - 1 - 7);
  for (const auto& p : parts)
    if (p.first == part) return "model.layers." + layer + "." + p.second + ".weight";
  FAIL("no HF name for " << canonical);
  return "";
}

// Writes config.json and the weights; returns the bytes written per HF tensor name.
std::map<std::string, std::vector<uint8_t>> write_hf_model(const std::string& dir, const HfSpec& s) {
  const LlamaConfig& c = s.config;
  nlohmann::json cfg = {
      {"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_act", "silu"},
      {"hidden_size", c.dim}, {"intermediate_size", c.ffn_dim}, {"num_hidden_layers", c.n_layers},
      {"num_attention_heads", c.n_heads}, {"num_key_value_heads", c.n_kv_heads}, {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size}, {"max_position_embeddings", c.context_length},
      {"rms_norm_eps", c.norm_eps}, {"tie_word_embeddings", c.tie_embeddings},
      {"torch_dtype", s.dtype == DType::BF16 ? "bfloat16" : "float32"},
      {"bos_token_id", 1}, {"eos_token_id", 2}};
  nlohmann::json scaling = s.rope_scaling_json.empty() ? nlohmann::json() : nlohmann::json::parse(s.rope_scaling_json);
  if (s.transformers5) {
    nlohmann::json params = scaling.is_null() ? nlohmann::json{{"rope_type", "default"}} : scaling;
    params["rope_theta"] = c.rope_theta;
    cfg["rope_parameters"] = params;
  } else {
    cfg["rope_theta"] = c.rope_theta;
    cfg["rope_scaling"] = scaling;
  }
  write_text(path_join(dir, "config.json"), cfg.dump(2));

  std::map<std::string, std::vector<uint8_t>> bytes;
  std::vector<SafetensorsEntry> entries;
  auto specs = expected_tensors(c);
  if (c.tie_embeddings && s.lm_head_when_tied) specs.push_back({"output.weight", {uint64_t(c.vocab_size), uint64_t(c.dim)}});
  uint64_t seed = 1;
  for (const auto& spec : specs) {
    uint64_t n = 1;
    for (auto d : spec.shape) n *= d;
    const std::string name = hf_name(spec.name);
    std::vector<uint8_t>& b = bytes[name];
    if (spec.name == "output.weight" && c.tie_embeddings) {
      b = bytes["model.embed_tokens.weight"];
    } else if (s.dtype == DType::BF16) {
      const auto v = test::gaussian_bf16(n, 0.02f, seed++);
      b.assign(reinterpret_cast<const uint8_t*>(v.data()), reinterpret_cast<const uint8_t*>(v.data() + n));
    } else {
      const auto v = test::gaussian_f32(n, 0.02f, seed++);
      b.assign(reinterpret_cast<const uint8_t*>(v.data()), reinterpret_cast<const uint8_t*>(v.data() + n));
    }
    entries.push_back({name, s.dtype, spec.shape, nullptr, b.size()});
  }
  for (auto& e : entries) e.data = bytes[e.name].data();

  if (s.shards == 1) {
    write_safetensors(path_join(dir, "model.safetensors"), entries, {{"format", "pt"}});
  } else {
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
    for (int k = 0; k < s.shards; ++k) {
      char shard[64];
      std::snprintf(shard, sizeof(shard), "model-%05d-of-%05d.safetensors", k + 1, s.shards);
      std::vector<SafetensorsEntry> part;
      for (size_t i = k; i < entries.size(); i += s.shards) {
        part.push_back(entries[i]);
        index["weight_map"][entries[i].name] = shard;
      }
      write_safetensors(path_join(dir, shard), part, {{"format", "pt"}});
    }
    write_text(path_join(dir, "model.safetensors.index.json"), index.dump(2));
  }
  return bytes;
}

void require_config_equal(const LlamaConfig& a, const LlamaConfig& b) {
  CHECK(a.dim == b.dim);
  CHECK(a.n_layers == b.n_layers);
  CHECK(a.n_heads == b.n_heads);
  CHECK(a.n_kv_heads == b.n_kv_heads);
  CHECK(a.head_dim == b.head_dim);
  CHECK(a.ffn_dim == b.ffn_dim);
  CHECK(a.vocab_size == b.vocab_size);
  CHECK(a.context_length == b.context_length);
  CHECK(a.norm_eps == b.norm_eps);
  CHECK(a.rope_theta == b.rope_theta);
  CHECK(a.rope_layout == b.rope_layout);
  CHECK(a.rope_scaling.type == b.rope_scaling.type);
  CHECK(a.rope_scaling.factor == b.rope_scaling.factor);
  CHECK(a.rope_scaling.low_freq_factor == b.rope_scaling.low_freq_factor);
  CHECK(a.rope_scaling.high_freq_factor == b.rope_scaling.high_freq_factor);
  CHECK(a.rope_scaling.original_context == b.rope_scaling.original_context);
  CHECK(a.tie_embeddings == b.tie_embeddings);
}

void require_hf_import_matches(const std::string& dir, const HfSpec& s,
                               const std::map<std::string, std::vector<uint8_t>>& written) {
  const SourceModel m = open_source_model(dir);
  CHECK(m.format == SourceFormat::hf);
  require_config_equal(m.config, s.config);
  const auto specs = expected_tensors(s.config);
  REQUIRE(m.tensors.size() == specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const SourceTensor& t = m.tensors[i];
    INFO("tensor " << t.name);
    CHECK(t.name == specs[i].name);
    CHECK(t.source_name == hf_name(t.name));
    CHECK(t.shape == specs[i].shape);
    CHECK(t.dtype == s.dtype);
    const auto& b = written.at(t.source_name);
    REQUIRE(t.size == b.size());
    CHECK(std::memcmp(t.data, b.data(), b.size()) == 0);
  }
  CHECK(m.extra_metadata["general.source.format"] == "hf");
  CHECK(m.extra_metadata["general.source.dtype"] == dtype_name(s.dtype));
  CHECK(m.extra_metadata["tokenizer.bos_id"] == 1);
  CHECK(m.extra_metadata["tokenizer.eos_id"] == 2);
}

// Byte offset of the u32 type field of a tensor info in a GGUF file (found by its name).
size_t gguf_tensor_type_offset(const std::vector<uint8_t>& f, const std::string& name, uint32_t n_dims) {
  std::vector<uint8_t> needle(8);
  const uint64_t len = name.size();
  std::memcpy(needle.data(), &len, 8);
  needle.insert(needle.end(), name.begin(), name.end());
  auto it = std::search(f.begin(), f.end(), needle.begin(), needle.end());
  REQUIRE(it != f.end());
  return static_cast<size_t>(it - f.begin()) + needle.size() + 4 + 8 * n_dims;
}

// Byte offset just after a metadata key's string (where its u32 value type is).
size_t gguf_key_end(const std::vector<uint8_t>& f, const std::string& key) {
  std::vector<uint8_t> needle(8);
  const uint64_t len = key.size();
  std::memcpy(needle.data(), &len, 8);
  needle.insert(needle.end(), key.begin(), key.end());
  auto it = std::search(f.begin(), f.end(), needle.begin(), needle.end());
  REQUIRE(it != f.end());
  return static_cast<size_t>(it - f.begin()) + needle.size();
}

template <class T>
void poke(std::vector<uint8_t>& f, size_t at, T v) {
  REQUIRE(at + sizeof(T) <= f.size());
  std::memcpy(f.data() + at, &v, sizeof(T));
}

const std::vector<std::string> kPlainTexts = {
    "Once upon a time, there was a little girl named Lily.",
    "Hello world",
    "a",
    "Lily's mom said, \"Lily, let's go to the park.\"",
    "The quick brown fox jumps over the lazy dog 1234567890!",
    "na\xC3\xAFve caf\xC3\xA9 \xE2\x80\x94 \xC3\xBC \xC3\x9F \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x99\x82",  // byte fallback
    "tab\there\nnew line",
};
const std::vector<std::string> kExtraSpaceTexts = {"x  y", " leading", "trailing ", "  two   three    four"};

}  // namespace

// ---------------------------------------------------------------------------------------------
// llama2.c and GGUF: the stories260K reference model

TEST_CASE("stories260K.bin imports with the documented config", "[convert]") {
  ImportOptions opt;
  opt.tokenizer_path = test::shared_model("tok512.model");
  const SourceModel m = open_source_model(test::shared_model("stories260K.bin"), opt);
  CHECK(m.format == SourceFormat::llama2c);
  const LlamaConfig& c = m.config;
  CHECK(c.dim == 64);
  CHECK(c.ffn_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.head_dim == 8);
  CHECK(c.vocab_size == 512);
  CHECK(c.context_length == 512);
  CHECK(c.norm_eps == 1e-5f);
  CHECK(c.rope_theta == 10000.0f);
  CHECK(c.rope_layout == RopeLayout::interleaved);
  CHECK(c.rope_scaling.type == "none");
  CHECK(c.tie_embeddings);
  CHECK(m.tensors.size() == 2 + 5 * 9);
  CHECK(m.total_bytes() == 4 * 260032ull);
  const SourceTensor* wk = m.find("blk.3.attn_k.weight");
  REQUIRE(wk);
  CHECK(wk->source_name == "wk[3]");
  CHECK(wk->shape == std::vector<uint64_t>{32, 64});
  // wk[3] starts after the embedding, 5 attention norms, all of wq and wk[0..2].
  const size_t floats = 512 * 64 + 5 * 64 + 5 * 64 * 64 + 3 * 32 * 64;
  const MappedFile f(test::shared_model("stories260K.bin"));
  CHECK(std::memcmp(wk->data, f.data() + 28 + 4 * floats, wk->size) == 0);

  CHECK(m.tokenizer.kind == "sentencepiece");
  CHECK(m.tokenizer.data == read_file(opt.tokenizer_path));  // a .model is kept byte for byte
  const auto& meta = m.extra_metadata;
  CHECK(meta["general.name"] == "stories260K");
  CHECK(meta["general.source.format"] == "llama2c");
  CHECK(meta["general.source.dtype"] == "f32");
  CHECK(meta["general.source.path"] == test::shared_model("stories260K.bin"));
  CHECK(meta["tokenizer.model"] == "sentencepiece");
  CHECK(meta["tokenizer.source"] == "tok512.model");
  CHECK(meta["tokenizer.bos_id"] == 1);
  CHECK(meta["tokenizer.eos_id"] == 2);
  CHECK(meta["tokenizer.add_bos"] == true);
}

TEST_CASE("stories260K .bin and .gguf import to bit-identical tensors", "[convert]") {
  ImportOptions opt;
  opt.tokenizer_path = test::shared_model("tok512.bin");
  const SourceModel bin = open_source_model(test::shared_model("stories260K.bin"), opt);
  const SourceModel gguf = open_source_model(test::shared_model("stories260K-f32.gguf"));
  CHECK(gguf.format == SourceFormat::gguf);
  require_same_tensors(bin, gguf);
  CHECK(gguf.find("output.weight") == nullptr);  // the GGUF's explicit copy was dropped...
  CHECK(gguf.config.tie_embeddings);              // ...and the model marked tied

  // Same config, except the context length each file states.
  CHECK(bin.config.context_length == 512);    // seq_len in the .bin header
  CHECK(gguf.config.context_length == 2048);  // llama.context_length
  LlamaConfig g = gguf.config;
  g.context_length = bin.config.context_length;
  require_config_equal(g, bin.config);

  CHECK(gguf.tokenizer.kind == "sentencepiece");
  CHECK(gguf.tokenizer.origin == "gguf metadata");
  CHECK(gguf.extra_metadata["tokenizer.bos_id"] == 1);
  CHECK(gguf.extra_metadata["tokenizer.eos_id"] == 2);
  CHECK(gguf.extra_metadata["tokenizer.model"] == "sentencepiece");
  CHECK(gguf.extra_metadata["general.name"] == "stories260K-f32");
  CHECK(bin.extra_metadata["tokenizer.source"] == "tok512.bin (llama2.c tokenizer, converted)");
}

TEST_CASE("the GGUF reader exposes stories260K-f32.gguf's header, metadata and tensors", "[convert]") {
  const GGUFFile g(test::shared_model("stories260K-f32.gguf"));
  CHECK(g.version() == 3);
  CHECK(g.alignment() == 32);
  CHECK(g.data_offset() == 14176);
  CHECK(g.metadata().size() == 19);
  CHECK(g.tensors().size() == 48);
  std::string s;
  REQUIRE(g.get_string("general.architecture", &s));
  CHECK(s == "llama");
  uint64_t u = 0;
  REQUIRE(g.get_uint("llama.context_length", &u));
  CHECK(u == 2048);
  double eps = 0;
  REQUIRE(g.get_float("llama.attention.layer_norm_rms_epsilon", &eps));
  CHECK(static_cast<float>(eps) == 1e-5f);
  CHECK_FALSE(g.get_uint("llama.rope.freq_base", &u));
  const auto tokens = g.get_string_array("tokenizer.ggml.tokens");
  REQUIRE(tokens.size() == 512);
  CHECK(tokens[1] == "<s>");
  CHECK(tokens[3] == "<0x00>");
  const auto types = g.get_i32_array("tokenizer.ggml.token_type");
  CHECK(std::count(types.begin(), types.end(), 6) == 256);
  CHECK(std::count(types.begin(), types.end(), 1) == 253);
  CHECK(g.get_f32_array("tokenizer.ggml.scores").size() == 512);
  // A wrongly typed request names the key.
  CHECK_THAT(error_of([&] { g.get_string("llama.context_length", &s); }),
             Contains("llama.context_length") && Contains("expected string"));
  const auto& t0 = g.tensors()[0];
  CHECK(t0.name == "token_embd.weight");
  CHECK(t0.ne == std::vector<uint64_t>{64, 512});
  CHECK(t0.shape() == std::vector<uint64_t>{512, 64});
  CHECK(t0.size == 512 * 64 * 4);
}

// ---------------------------------------------------------------------------------------------
// Tokenizers rebuilt as SentencePiece models

TEST_CASE("tokenizers rebuilt from tok512.bin and the GGUF vocabulary encode like tok512.model", "[convert]") {
  const auto reference = load_spm(read_file(test::shared_model("tok512.model")));
  const auto bin_bytes = read_file(test::shared_model("tok512.bin"));
  const auto from_bin = load_spm(spm_from_llama2c_tokenizer(bin_bytes.data(), bin_bytes.size(), 512, "tok512.bin"));
  const SourceModel gguf = import_gguf(test::shared_model("stories260K-f32.gguf"), {});
  const auto from_gguf = load_spm(gguf.tokenizer.data);

  // Same pieces, scores and special roles.
  for (auto* sp : {from_bin.get(), from_gguf.get()}) {
    REQUIRE(sp->GetPieceSize() == 512);
    for (int id = 0; id < 512; ++id) {
      INFO("id " << id);
      CHECK(sp->IdToPiece(id) == reference->IdToPiece(id));
      CHECK(sp->GetScore(id) == reference->GetScore(id));
      CHECK(sp->IsByte(id) == reference->IsByte(id));
      CHECK(sp->IsControl(id) == reference->IsControl(id));
      CHECK(sp->IsUnknown(id) == reference->IsUnknown(id));
    }
    CHECK(sp->bos_id() == 1);
    CHECK(sp->eos_id() == 2);
    CHECK(sp->unk_id() == 0);
  }
  for (const auto& text : kPlainTexts) {
    INFO("text: " << text);
    const auto want = reference->EncodeAsIds(text);
    CHECK(from_bin->EncodeAsIds(text) == want);
    CHECK(from_gguf->EncodeAsIds(text) == want);
  }
  // Runs of spaces: tok512.model collapses them (remove_extra_whitespaces true); the rebuilt
  // models keep them, as llama2.c's run.c and llama.cpp do when they run these files.
  for (const auto& text : kExtraSpaceTexts) {
    INFO("text: '" << text << "'");
    const auto ids = from_bin->EncodeAsIds(text);
    CHECK(from_gguf->EncodeAsIds(text) == ids);
    CHECK(from_bin->DecodeIds(ids) == text);
  }
  CHECK(from_bin->EncodeAsIds("x  y") != reference->EncodeAsIds("x  y"));
}

TEST_CASE("the Llama-2 tokenizer.bin rebuilds into a model that encodes like tokenizer.model", "[convert]") {
  const auto reference = load_spm(read_file(test::shared_model("tokenizer.model")));
  const auto bin_bytes = read_file(test::shared_model("tokenizer.bin"));
  const auto from_bin = load_spm(spm_from_llama2c_tokenizer(bin_bytes.data(), bin_bytes.size(), 32000, "tokenizer.bin"));
  REQUIRE(from_bin->GetPieceSize() == 32000);
  CHECK(from_bin->EncodeAsIds("Hello world") == std::vector<int>{15043, 3186});
  // Llama-2's own model keeps extra spaces too, so every text must agree.
  std::vector<std::string> texts = kPlainTexts;
  texts.insert(texts.end(), kExtraSpaceTexts.begin(), kExtraSpaceTexts.end());
  for (const auto& text : texts) {
    INFO("text: '" << text << "'");
    CHECK(from_bin->EncodeAsIds(text) == reference->EncodeAsIds(text));
  }
}

TEST_CASE("the SentencePiece builder refuses vocabularies SentencePiece cannot load", "[convert]") {
  SpmModelSpec spec;
  spec.pieces = {{"<unk>", 0, SpmPieceType::unknown}, {"<s>", 0, SpmPieceType::control}, {"</s>", 0, SpmPieceType::control},
                 {"\xE2\x96\x81" "a", -1, SpmPieceType::normal}, {"b", -2, SpmPieceType::normal}};
  const auto sp = load_spm(build_spm_model(spec));
  CHECK(sp->EncodeAsIds("a") == std::vector<int>{3});

  SpmModelSpec empty_piece = spec;
  empty_piece.pieces[4].piece = "";
  CHECK_THAT(error_of([&] { build_spm_model(empty_piece); }), Contains("token 4") && Contains("empty"));
  SpmModelSpec no_unk = spec;
  no_unk.pieces[0].type = SpmPieceType::normal;
  CHECK_THAT(error_of([&] { build_spm_model(no_unk); }), Contains("UNKNOWN"));
  SpmModelSpec bad_byte = spec;
  bad_byte.pieces[4].type = SpmPieceType::byte;
  CHECK_THAT(error_of([&] { build_spm_model(bad_byte); }), Contains("<0xNN>"));
  SpmModelSpec dup = spec;
  dup.pieces[4].piece = dup.pieces[3].piece;
  CHECK_THAT(error_of([&] { spm_check(build_spm_model(dup), "dup.model"); }), Contains("dup.model"));
}

// ---------------------------------------------------------------------------------------------
// safetensors

TEST_CASE("safetensors files round-trip through the writer and the reader", "[convert]") {
  test::TempDir dir;
  const auto f32 = test::gaussian_f32(6, 1.0f, 1);
  const auto bf16 = test::gaussian_bf16(12, 1.0f, 2);
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x7BFF};
  const float scalar = 3.5f;
  const std::string path = dir.file("t.safetensors");
  write_safetensors(path,
                    {{"a", DType::F32, {2, 3}, f32.data(), 24},
                     {"b", DType::BF16, {3, 2, 2}, bf16.data(), 24},
                     {"c", DType::F16, {3}, f16.data(), 6},
                     {"scalar", DType::F32, {}, &scalar, 4},
                     {"empty", DType::BF16, {0, 4}, nullptr, 0}},
                    {{"format", "pt"}});
  const auto bytes = read_file(path);
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  CHECK((8 + header_len) % 8 == 0);

  const SafetensorsFile st = read_safetensors(path);
  CHECK(st.metadata.at("format") == "pt");
  REQUIRE(st.tensors.size() == 5);
  const auto* a = st.find("a");
  const auto* b = st.find("b");
  const auto* c = st.find("c");
  const auto* s = st.find("scalar");
  REQUIRE((a && b && c && s && st.find("empty")));
  CHECK(a->dtype == DType::F32);
  CHECK(a->shape == std::vector<uint64_t>{2, 3});
  CHECK(std::memcmp(a->data, f32.data(), 24) == 0);
  CHECK(b->dtype == DType::BF16);
  CHECK(b->shape == std::vector<uint64_t>{3, 2, 2});
  CHECK(std::memcmp(b->data, bf16.data(), 24) == 0);
  CHECK(c->dtype == DType::F16);
  CHECK(std::memcmp(c->data, f16.data(), 6) == 0);
  CHECK(s->shape.empty());
  CHECK(s->size == 4);
  CHECK(st.find("empty")->size == 0);

  // The writer refuses to replace a file and checks what it is given.
  CHECK_THAT(error_of([&] { write_safetensors(path, {}); }), Contains("already exists"));
  CHECK_THAT(error_of([&] { write_safetensors(dir.file("u.safetensors"), {{"x", DType::F32, {4}, f32.data(), 8}}); }),
             Contains("'x'") && Contains("16"));
  CHECK_FALSE(path_exists(dir.file("u.safetensors")));
  SafetensorsWriter w(dir.file("v.safetensors"), false);
  w.add_tensor("x", DType::F32, {4});
  w.write(f32.data(), 8);
  CHECK_THAT(error_of([&] { w.commit(); }), Contains("'x'") && Contains("incomplete"));
}

TEST_CASE("the safetensors reader refuses bad files naming file and tensor", "[convert]") {
  test::TempDir dir;
  auto make = [&](const std::string& name, const std::string& header, size_t data_bytes, int64_t len_override = -1) {
    std::vector<uint8_t> f(8);
    const uint64_t len = len_override >= 0 ? static_cast<uint64_t>(len_override) : header.size();
    std::memcpy(f.data(), &len, 8);
    f.insert(f.end(), header.begin(), header.end());
    f.resize(f.size() + data_bytes, 0);
    write_bytes(dir.file(name), f);
    return dir.file(name);
  };
  auto err = [&](const std::string& path) { return error_of([&] { read_safetensors(path); }); };

  const std::string i8 = make("i8.safetensors", R"({"w":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})", 4);
  CHECK_THAT(err(i8), Contains("i8.safetensors") && Contains("'w'") && Contains("I8"));
  const std::string f64 = make("f64.safetensors", R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8);
  CHECK_THAT(err(f64), Contains("'w'") && Contains("F64"));
  const std::string huge = make("huge.safetensors", "{}", 0, int64_t(1) << 60);
  CHECK_THAT(err(huge), Contains("huge.safetensors") && Contains("header length"));
  const std::string tiny = dir.file("tiny.safetensors");
  write_bytes(tiny, {1, 2, 3});
  CHECK_THAT(err(tiny), Contains("tiny.safetensors") && Contains("truncated"));
  const std::string past = make("past.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  CHECK_THAT(err(past), Contains("'w'") && Contains("outside"));
  const std::string mismatch = make("mismatch.safetensors", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16);
  CHECK_THAT(err(mismatch), Contains("'w'") && Contains("needs 12"));
  const std::string overlap = make("overlap.safetensors",
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  CHECK_THAT(err(overlap), Contains("overlap"));
  const std::string bad_json = make("json.safetensors", R"({"w":{"dtype":"F32",)", 0);
  CHECK_THAT(err(bad_json), Contains("json.safetensors") && Contains("JSON"));
  const std::string neg = make("neg.safetensors", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4);
  CHECK_THAT(err(neg), Contains("'w'") && Contains("shape"));
  const std::string overflow = make("overflow.safetensors",
      R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4);
  CHECK_THAT(err(overflow), Contains("'w'") && Contains("too large"));
}

// ---------------------------------------------------------------------------------------------
// Hugging Face folders written by the test

TEST_CASE("an HF folder (single file, f32, untied, GQA) imports to what was written", "[convert]") {
  test::TempDir dir;
  HfSpec s;
  s.config = tiny_config();
  const auto written = write_hf_model(dir.path(), s);
  require_hf_import_matches(dir.path(), s, written);
  const SourceModel m = open_source_model(dir.path());
  CHECK(m.tokenizer.kind.empty());
  CHECK(m.extra_metadata["tokenizer.model"] == "none");
  CHECK(m.extra_metadata["general.name"] == path_basename(dir.path()));
  CHECK(m.find("output.weight") != nullptr);
}

TEST_CASE("an HF folder (sharded, bf16, tied, llama3 rope scaling) imports to what was written", "[convert]") {
  const std::string llama3 =
      R"({"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192})";
  for (bool transformers5 : {false, true}) {
    DYNAMIC_SECTION("rope config as transformers " << (transformers5 ? 5 : 4) << " writes it") {
      test::TempDir dir;
      HfSpec s;
      s.config = tiny_config();
      s.config.tie_embeddings = true;
      s.config.rope_scaling.type = "llama3";
      s.config.rope_scaling.factor = 8.0f;
      s.config.rope_scaling.low_freq_factor = 1.0f;
      s.config.rope_scaling.high_freq_factor = 4.0f;
      s.config.rope_scaling.original_context = 8192;
      s.config.context_length = 131072;
      s.dtype = DType::BF16;
      s.shards = 3;
      s.lm_head_when_tied = true;  // an explicit copy, dropped on import
      s.rope_scaling_json = llama3;
      s.transformers5 = transformers5;
      const auto written = write_hf_model(dir.path(), s);
      REQUIRE(path_exists(dir.file("model-00003-of-00003.safetensors")));
      require_hf_import_matches(dir.path(), s, written);
      CHECK(open_source_model(dir.path()).find("output.weight") == nullptr);
    }
  }
}

TEST_CASE("an HF folder with tokenizer.model carries it and its special ids", "[convert]") {
  test::TempDir dir;
  HfSpec s;
  s.config = tiny_config();
  s.config.n_kv_heads = 4;  // plain multi-head attention
  write_hf_model(dir.path(), s);
  // config.json without special ids, so they come from the tokenizer files.
  auto cfg = nlohmann::json::parse(read_text_file(dir.file("config.json")));
  cfg.erase("bos_token_id");
  cfg.erase("eos_token_id");
  cfg.erase("head_dim");  // defaults to hidden_size / num_attention_heads
  cfg.erase("num_key_value_heads");  // defaults to num_attention_heads
  write_text(dir.file("config.json"), cfg.dump());
  write_bytes(dir.file("tokenizer.model"), read_file(test::shared_model("tok512.model")));
  write_text(dir.file("tokenizer_config.json"), R"({"add_bos_token": true, "bos_token": {"content": "<s>"}, "eos_token": "</s>"})");

  const SourceModel m = open_source_model(dir.path());
  CHECK(m.config.head_dim == 16);
  CHECK(m.config.n_kv_heads == 4);
  CHECK(m.tokenizer.kind == "sentencepiece");
  CHECK(m.tokenizer.origin == "tokenizer.model");
  CHECK(m.tokenizer.data == read_file(test::shared_model("tok512.model")));
  CHECK(m.extra_metadata["tokenizer.model"] == "sentencepiece");
  CHECK(m.extra_metadata["tokenizer.bos_id"] == 1);
  CHECK(m.extra_metadata["tokenizer.eos_id"] == 2);
  CHECK(m.extra_metadata["tokenizer.add_bos"] == true);
}

TEST_CASE("HF folders that cannot be imported are refused naming the file and field", "[convert]") {
  test::TempDir dir;
  HfSpec s;
  s.config = tiny_config();
  auto fresh = [&](const std::string& name) {
    const std::string d = dir.file(name);
    REQUIRE(::mkdir(d.c_str(), 0755) == 0);
    write_hf_model(d, s);
    return d;
  };
  auto err = [&](const std::string& d) { return error_of([&] { open_source_model(d); }); };
  auto edit_config = [&](const std::string& d, const std::function<void(nlohmann::json&)>& fn) {
    auto cfg = nlohmann::json::parse(read_text_file(path_join(d, "config.json")));
    fn(cfg);
    write_text(path_join(d, "config.json"), cfg.dump());
  };

  SECTION("missing config.json") {
    const std::string d = fresh("noconfig");
    REQUIRE(::unlink(path_join(d, "config.json").c_str()) == 0);
    CHECK_THAT(err(d), Contains("noconfig") && Contains("config.json"));
  }
  SECTION("no weights") {
    const std::string d = fresh("noweights");
    REQUIRE(::unlink(path_join(d, "model.safetensors").c_str()) == 0);
    CHECK_THAT(err(d), Contains("noweights") && Contains("model.safetensors"));
  }
  SECTION("unknown architecture: the refusal lists the supported ones") {
    const std::string d = fresh("gptneox");
    edit_config(d, [](nlohmann::json& c) {
      c["architectures"] = {"GPTNeoXForCausalLM"};
      c["model_type"] = "gpt_neox";
    });
    CHECK_THAT(err(d), Contains("config.json") && Contains("GPTNeoXForCausalLM") && Contains("LlamaForCausalLM") &&
                           Contains("MistralForCausalLM") && Contains("Qwen2ForCausalLM"));
  }
  SECTION("a sliding window that is not a positive number") {
    const std::string d = fresh("badwindow");
    edit_config(d, [](nlohmann::json& c) {
      c["architectures"] = {"MistralForCausalLM"};
      c["sliding_window"] = 0;
    });
    CHECK_THAT(err(d), Contains("config.json") && Contains("sliding_window"));
  }
  SECTION("missing hyper-parameter") {
    const std::string d = fresh("nohidden");
    edit_config(d, [](nlohmann::json& c) { c.erase("hidden_size"); });
    CHECK_THAT(err(d), Contains("config.json") && Contains("hidden_size"));
  }
  SECTION("unsupported rope scaling") {
    const std::string d = fresh("yarn");
    edit_config(d, [](nlohmann::json& c) { c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; });
    CHECK_THAT(err(d), Contains("config.json") && Contains("rope_scaling") && Contains("yarn"));
  }
  SECTION("unsupported dtype") {
    const std::string d = fresh("int8");
    const std::string header = R"({"model.embed_tokens.weight":{"dtype":"I8","shape":[512,64],"data_offsets":[0,32768]}})";
    std::vector<uint8_t> f(8);
    const uint64_t len = header.size();
    std::memcpy(f.data(), &len, 8);
    f.insert(f.end(), header.begin(), header.end());
    f.resize(f.size() + 32768);
    write_bytes(path_join(d, "model.safetensors"), f);
    CHECK_THAT(err(d), Contains("model.safetensors") && Contains("model.embed_tokens.weight") && Contains("I8"));
  }
  SECTION("shape that contradicts config.json") {
    const std::string d = fresh("shape");
    edit_config(d, [](nlohmann::json& c) { c["num_key_value_heads"] = 4; });  // k/v are written for 2
    CHECK_THAT(err(d), Contains("model.safetensors") && Contains("model.layers.0.self_attn.k_proj.weight") &&
                           Contains("config.json"));
  }
  SECTION("untied config without lm_head") {
    s.config.tie_embeddings = true;
    const std::string d = fresh("nolmhead");
    edit_config(d, [](nlohmann::json& c) { c["tie_word_embeddings"] = false; });
    CHECK_THAT(err(d), Contains("nolmhead") && Contains("lm_head.weight"));
  }
  SECTION("shard listed in the index but missing") {
    s.shards = 2;
    const std::string d = fresh("missingshard");
    REQUIRE(::unlink(path_join(d, "model-00002-of-00002.safetensors").c_str()) == 0);
    CHECK_THAT(err(d), Contains("model.safetensors.index.json") && Contains("model-00002-of-00002.safetensors"));
  }
  SECTION("tensor listed in the index but not in its shard") {
    s.shards = 2;
    const std::string d = fresh("wrongshard");
    auto index = nlohmann::json::parse(read_text_file(path_join(d, "model.safetensors.index.json")));
    index["weight_map"]["model.norm.weight"] =
        index["weight_map"]["model.norm.weight"] == "model-00001-of-00002.safetensors" ? "model-00002-of-00002.safetensors"
                                                                                      : "model-00001-of-00002.safetensors";
    write_text(path_join(d, "model.safetensors.index.json"), index.dump());
    CHECK_THAT(err(d), Contains("model.norm.weight") && Contains("not in this shard"));
  }
  SECTION("shard path escaping the folder") {
    s.shards = 2;
    const std::string d = fresh("escape");
    auto index = nlohmann::json::parse(read_text_file(path_join(d, "model.safetensors.index.json")));
    index["weight_map"]["model.norm.weight"] = "../model-00001-of-00002.safetensors";
    write_text(path_join(d, "model.safetensors.index.json"), index.dump());
    CHECK_THAT(err(d), Contains("model.safetensors.index.json") && Contains("outside the folder"));
  }
  SECTION("an extra tensor") {
    const std::string d = fresh("extra");
    // Rewrite the weights with one tensor a Llama does not have.
    const std::vector<float> v(4);
    std::vector<SafetensorsEntry> entries;
    {
      const SafetensorsFile st = read_safetensors(path_join(d, "model.safetensors"));
      for (const auto& t : st.tensors) entries.push_back({t.name, t.dtype, t.shape, t.data, t.size});
      entries.push_back({"model.layers.0.self_attn.q_norm.weight", DType::F32, {4}, v.data(), 16});
      write_safetensors(path_join(d, "model2.safetensors"), entries);
    }
    REQUIRE(::rename(path_join(d, "model2.safetensors").c_str(), path_join(d, "model.safetensors").c_str()) == 0);
    CHECK_THAT(err(d), Contains("model.layers.0.self_attn.q_norm.weight") && Contains("unexpected"));
  }
  SECTION("absurd layer count") {
    const std::string d = fresh("layers");
    edit_config(d, [](nlohmann::json& c) { c["num_hidden_layers"] = 2000000000; });
    CHECK_THAT(err(d), Contains("config.json") && Contains("2000000000"));
  }
}

// ---------------------------------------------------------------------------------------------
// llama2.c refusals

TEST_CASE("llama2.c checkpoints of the wrong size or with a wrong tokenizer are refused", "[convert]") {
  test::TempDir dir;
  const auto bin = read_file(test::shared_model("stories260K.bin"));
  auto err = [&](const std::vector<uint8_t>& bytes, const ImportOptions& opt = {}) {
    write_bytes(dir.file("m.bin"), bytes);
    return error_of([&] { import_llama2c(dir.file("m.bin"), opt); });
  };
  std::vector<uint8_t> truncated(bin.begin(), bin.end() - 100);
  CHECK_THAT(err(truncated), Contains("m.bin") && Contains("expected 1056540 bytes") && Contains("dim=64") &&
                                 Contains("layers=5") && Contains("found 1056440"));
  std::vector<uint8_t> longer = bin;
  longer.resize(bin.size() + 512 * 64 * 4);  // room for a classifier the header does not promise
  CHECK_THAT(err(longer), Contains("shared"));
  std::vector<uint8_t> negative = bin;
  poke<int32_t>(negative, 20, -512);  // promises wcls, which is absent
  CHECK_THAT(err(negative), Contains("separate classifier"));
  std::vector<uint8_t> with_cls = longer;
  poke<int32_t>(with_cls, 20, -512);
  {
    write_bytes(dir.file("cls.bin"), with_cls);
    const SourceModel m = import_llama2c(dir.file("cls.bin"), {});
    CHECK_FALSE(m.config.tie_embeddings);
    REQUIRE(m.find("output.weight"));
    CHECK(m.find("output.weight")->source_name == "wcls");
    CHECK(m.tokenizer.kind.empty());
  }
  CHECK_THAT(err({1, 2, 3}), Contains("m.bin") && Contains("truncated"));
  std::vector<uint8_t> bad_heads = bin;
  poke<int32_t>(bad_heads, 12, 7);  // n_heads 7 does not divide dim 64
  CHECK_THAT(err(bad_heads), Contains("n_heads"));
  std::vector<uint8_t> zero_dim = bin;
  poke<int32_t>(zero_dim, 0, 0);
  CHECK_THAT(err(zero_dim), Contains("dim"));

  ImportOptions wrong_tok;
  wrong_tok.tokenizer_path = test::shared_model("tokenizer.model");  // 32000 tokens, model has 512
  CHECK_THAT(err(bin, wrong_tok), Contains("tokenizer.model") && Contains("32000") && Contains("512"));
  ImportOptions wrong_bin_tok;
  wrong_bin_tok.tokenizer_path = test::shared_model("tokenizer.bin");
  CHECK_THAT(err(bin, wrong_bin_tok), Contains("tokenizer.bin"));
  write_text(dir.file("junk.tok"), "not a tokenizer at all");
  ImportOptions junk_tok;
  junk_tok.tokenizer_path = dir.file("junk.tok");
  CHECK_THAT(err(bin, junk_tok), Contains("junk.tok") && Contains("neither"));
}

// ---------------------------------------------------------------------------------------------
// GGUF refusals

TEST_CASE("GGUF files that cannot be imported are refused naming the file and field", "[convert]") {
  test::TempDir dir;
  const auto good = read_file(test::shared_model("stories260K-f32.gguf"));
  auto err = [&](const std::vector<uint8_t>& bytes) {
    write_bytes(dir.file("m.gguf"), bytes);
    return error_of([&] { import_gguf(dir.file("m.gguf"), {}); });
  };

  auto f = good;
  f[0] = 'X';
  CHECK_THAT(err(f), Contains("m.gguf") && Contains("magic"));
  f = good;
  poke<uint32_t>(f, 4, 1);
  CHECK_THAT(err(f), Contains("version 1"));
  f = good;
  poke<uint32_t>(f, 4, 0x03000000);
  CHECK_THAT(err(f), Contains("big-endian"));
  f = good;
  poke<uint64_t>(f, 8, uint64_t(1) << 60);
  CHECK_THAT(err(f), Contains("m.gguf") && Contains("tensor count"));
  f = good;
  poke<uint64_t>(f, 16, ~uint64_t(0));
  CHECK_THAT(err(f), Contains("metadata count"));
  f = good;
  poke<uint64_t>(f, 24, uint64_t(1) << 40);  // the first key's length
  CHECK_THAT(err(f), Contains("metadata key #0") && Contains("length"));
  f = good;
  const size_t tokens = gguf_key_end(f, "tokenizer.ggml.tokens");
  poke<uint64_t>(f, tokens + 8, uint64_t(1) << 62);  // after value type and element type: the count
  CHECK_THAT(err(f), Contains("tokenizer.ggml.tokens") && Contains("cannot fit"));
  f = good;
  poke<uint32_t>(f, gguf_key_end(f, "llama.block_count"), 99);  // an unknown value type
  CHECK_THAT(err(f), Contains("llama.block_count") && Contains("unknown value type"));
  f = good;
  poke<uint32_t>(f, gguf_tensor_type_offset(f, "blk.0.attn_q.weight", 2), 16);  // IQ2_XXS: not read
  CHECK_THAT(err(f), Contains("m.gguf") && Contains("blk.0.attn_q.weight") && Contains("IQ2_XXS") &&
                         Contains("Q4_K"));  // ...and the message lists the types that are
  f = good;
  poke<uint32_t>(f, gguf_tensor_type_offset(f, "blk.0.attn_q.weight", 2), 12);  // Q4_K rows of 64: not whole blocks
  CHECK_THAT(err(f), Contains("m.gguf") && Contains("blk.0.attn_q.weight") && Contains("Q4_K") &&
                         Contains("rows of 64 weights") && Contains("256"));
  f = good;
  poke<uint64_t>(f, gguf_tensor_type_offset(f, "blk.0.attn_q.weight", 2) + 4, 7);  // misaligned offset
  CHECK_THAT(err(f), Contains("blk.0.attn_q.weight") && Contains("alignment"));
  f = good;
  {
    // attn_k stored transposed: (ne0, ne1) = (32, 64) instead of (64, 32), same byte count.
    const size_t ne = gguf_tensor_type_offset(f, "blk.0.attn_k.weight", 2) - 16;
    poke<uint64_t>(f, ne, 32);
    poke<uint64_t>(f, ne + 8, 64);
  }
  CHECK_THAT(err(f), Contains("m.gguf") && Contains("blk.0.attn_k.weight") && Contains("shape [64, 32]") &&
                         Contains("expected [32, 64]"));
  f = good;
  const size_t arch = gguf_key_end(f, "general.architecture") + 4 + 8;  // the value's bytes
  std::memcpy(f.data() + arch, "mamba", 5);
  CHECK_THAT(err(f), Contains("general.architecture") && Contains("mamba"));
  f = good;
  {
    // A different output projection: kept, and the model untied.
    const GGUFFile g(test::shared_model("stories260K-f32.gguf"));
    for (const auto& t : g.tensors())
      if (t.name == "output.weight") f[g.data_offset() + t.offset + 5] ^= 1;
    write_bytes(dir.file("untied.gguf"), f);
    const SourceModel m = import_gguf(dir.file("untied.gguf"), {});
    CHECK_FALSE(m.config.tie_embeddings);
    CHECK(m.find("output.weight"));
  }
  // Cut anywhere: header, metadata, tensor table, data.
  for (size_t cut : {size_t(0), size_t(3), size_t(20), size_t(100), size_t(5000), size_t(14000), size_t(14176),
                     size_t(20000), good.size() - 1}) {
    INFO("cut at " << cut);
    CHECK_THAT(err(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut))),
               Contains("m.gguf") && (Contains("truncated") || Contains("magic")));
  }
}

TEST_CASE("GGUF files of qwen2 and qwen3 read their hyper-parameters under their own prefix", "[convert]") {
  // stories260K's GGUF with every "llama." key renamed (same length): the importer must read the
  // "qwen2." keys, take the architecture's tensors, and so miss the biases (norms) it lacks.
  test::TempDir dir;
  const auto good = read_file(test::shared_model("stories260K-f32.gguf"));
  const GGUFFile g(test::shared_model("stories260K-f32.gguf"));
  for (const char* arch : {"qwen2", "qwen3"}) {
    INFO(arch);
    auto f = good;
    const std::string from = "llama.";
    int renamed = 0;
    for (size_t i = 0; i + from.size() <= g.data_offset(); ++i)
      if (std::memcmp(f.data() + i, from.data(), from.size()) == 0) {
        std::memcpy(f.data() + i, arch, 5);
        ++renamed;
      }
    REQUIRE(renamed >= 8);
    const size_t at = gguf_key_end(f, "general.architecture") + 4 + 8;  // the value's bytes
    std::memcpy(f.data() + at, arch, 5);
    write_bytes(dir.file("m.gguf"), f);
    const std::string want = std::string(arch) == "qwen2" ? "blk.0.attn_q.bias" : "blk.0.attn_q_norm.weight";
    CHECK_THAT(error_of([&] { import_gguf(dir.file("m.gguf"), {}); }), Contains("m.gguf") && Contains(want));
  }
}

TEST_CASE("truncated or corrupted GGUF and safetensors files fail cleanly, never crash", "[convert]") {
  test::TempDir dir;
  const auto good = read_file(test::shared_model("stories260K-f32.gguf"));
  // Every cut through the header, metadata and tensor table.
  for (size_t cut = 0; cut < 14176; cut += 29) {
    write_bytes(dir.file("cut.gguf"), std::vector<uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut)));
    INFO("cut at " << cut);
    CHECK_THROWS_AS(import_gguf(dir.file("cut.gguf"), {}), Error);
  }
  // Random byte changes in the header, metadata and tensor table: an import either succeeds or
  // throws cllm::Error; nothing else escapes and nothing crashes.
  std::mt19937_64 rng(42);
  int refused = 0;
  for (int iter = 0; iter < 300; ++iter) {
    auto f = good;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n; ++k) {
      const size_t at = rng() % 14176;
      f[at] = (rng() % 2) ? static_cast<uint8_t>(rng()) : static_cast<uint8_t>(0xFF);
    }
    write_bytes(dir.file("fuzz.gguf"), f);
    try {
      import_gguf(dir.file("fuzz.gguf"), {});
    } catch (const Error&) {
      ++refused;
    }
  }
  CHECK(refused > 0);

  // The same for a safetensors file written by the writer.
  const auto v = test::gaussian_bf16(64, 1.0f, 3);
  write_safetensors(dir.file("ok.safetensors"), {{"w", DType::BF16, {8, 8}, v.data(), 128}, {"n", DType::BF16, {8}, v.data(), 16}});
  const auto st = read_file(dir.file("ok.safetensors"));
  for (size_t cut = 0; cut < st.size(); cut += 7) {
    write_bytes(dir.file("cut.safetensors"), std::vector<uint8_t>(st.begin(), st.begin() + static_cast<std::ptrdiff_t>(cut)));
    INFO("cut at " << cut);
    CHECK_THROWS_AS(read_safetensors(dir.file("cut.safetensors")), Error);
  }
  for (int iter = 0; iter < 300; ++iter) {
    auto f = st;
    f[rng() % (f.size() - 144)] = static_cast<uint8_t>(rng());  // header bytes
    write_bytes(dir.file("fuzz.safetensors"), f);
    try {
      read_safetensors(dir.file("fuzz.safetensors"));
    } catch (const Error&) {
    }
  }
}
