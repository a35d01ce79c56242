// Specification of the CPU reference engine (src/model): the forward pass against llama2.c's
// published output and against a naive double-precision transcription of the math, RoPE in
// both layouts, llama3 frequency scaling, batching and threading invariance, the sampler and
// the tokenizer's streaming detokenizer.
#include <sentencepiece_processor.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "common/error.h"
#include "common/file_io.h"
#include "convert/compress.h"
#include "convert/safetensors.h"
#include "convert/source_model.h"
#include "format/cllm_reader.h"
#include "model/cpu_ops.h"
#include "model/forward_cpu.h"
#include "model/generate.h"
#include "model/llama_weights.h"
#include "model/sampler.h"
#include "tests/test_util.h"
#include "text/tokenizer.h"

using namespace cllm;
using Catch::Contains;

namespace {

// Compresses a source model (file or HF folder) into dir/name with the library pipeline.
std::string compress_to(const test::TempDir& dir, const std::string& name, const std::string& source,
                        const std::string& tokenizer = "") {
  ImportOptions io;
  io.tokenizer_path = tokenizer;
  const SourceModel m = open_source_model(source, io);
  const std::string out = dir.file(name);
  CompressOptions co;
  co.threads = 2;
  compress_model(m, out, co);
  return out;
}


GenerateResult greedy(const std::string& cllm, int n, const std::string& prompt = "", int threads = 1) {
  const CllmFile f = CllmFile::open(cllm);
  ThreadPool pool(threads);
  const LlamaWeights w = load_llama_weights(f, &pool);
  const Tokenizer tok = Tokenizer::from_cllm(f, &pool);
  CpuForward engine(w, {0, threads, 64});
  GenerateOptions g;
  g.n_predict = n;
  g.sampling.temp = 0;
  return generate([&](const int* t, int k, int pos) { return engine.forward(t, k, pos); }, engine.context(),
                  w.config.vocab_size, tok, prompt, g);
}

// ---- A small random Llama model, for the checks that need no trained weights.

using test::gaussian;
using test::small_config;

LlamaWeights random_model(const LlamaConfig& c, uint64_t seed) { return test::random_model(c, seed, 0.3f, 0.2f); }

// The row permutation Hugging Face's convert_llama_weights_to_hf.py applies to wq and wk:
// w.view(heads, head_dim/2, 2, in).transpose(1, 2).reshape(heads * head_dim, in), i.e. row
// 2j+p of a head moves to p*head_dim/2 + j, so that neox RoPE rotates the pairs interleaved
// RoPE rotated.
std::vector<float> hf_permute(const std::vector<float>& w, int heads, int head_dim, int in) {
  std::vector<float> out(w.size());
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h)
    for (int j = 0; j < half; ++j)
      for (int p = 0; p < 2; ++p) {
        const size_t from = static_cast<size_t>(h * head_dim + 2 * j + p) * in;
        const size_t to = static_cast<size_t>(h * head_dim + p * half + j) * in;
        std::memcpy(out.data() + to, w.data() + from, sizeof(float) * in);
      }
  return out;
}

// ---- The forward pass transcribed naively, in double: the spec the fp32 engine must meet.

std::vector<double> naive_rope_freqs(const LlamaConfig& c) {
  std::vector<double> f(c.head_dim / 2);
  for (int i = 0; i < c.head_dim / 2; ++i) {
    f[i] = std::pow(static_cast<double>(c.rope_theta), -2.0 * i / c.head_dim);
    if (c.rope_scaling.type != "llama3") continue;
    const auto& s = c.rope_scaling;
    const double wavelen = 2 * M_PI / f[i], ctx = s.original_context;
    if (wavelen < ctx / s.high_freq_factor) continue;
    if (wavelen > ctx / s.low_freq_factor) {
      f[i] /= s.factor;
    } else {
      const double smooth = (ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f[i] = (1 - smooth) * f[i] / s.factor + smooth * f[i];
    }
  }
  return f;
}

// Logits (vocab) of every position of tokens, computed position by position from scratch.
std::vector<std::vector<double>> naive_forward(const LlamaWeights& w, const std::vector<int>& tokens) {
  const LlamaConfig& c = w.config;
  const int D = c.dim, H = c.n_heads, KVH = c.n_kv_heads, HD = c.head_dim, F = c.ffn_dim, V = c.vocab_size;
  const auto freqs = naive_rope_freqs(c);
  auto matvec = [](const std::vector<float>& W, const std::vector<double>& x, int out) {
    std::vector<double> y(out, 0.0);
    const size_t in = x.size();
    for (int r = 0; r < out; ++r)
      for (size_t i = 0; i < in; ++i) y[r] += W[r * in + i] * x[i];
    return y;
  };
  auto rmsnorm = [&](const std::vector<double>& x, const std::vector<float>& g) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / x.size() + c.norm_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * g[i];
    return y;
  };
  auto rope = [&](std::vector<double>& v, int heads, int pos) {
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < HD / 2; ++i) {
        const int a = h * HD + (c.rope_layout == RopeLayout::neox ? i : 2 * i);
        const int b = h * HD + (c.rope_layout == RopeLayout::neox ? i + HD / 2 : 2 * i + 1);
        const double cs = std::cos(pos * freqs[i]), sn = std::sin(pos * freqs[i]);
        const double x0 = v[a], x1 = v[b];
        v[a] = x0 * cs - x1 * sn;
        v[b] = x0 * sn + x1 * cs;
      }
  };
  std::vector<std::vector<std::vector<double>>> K(c.n_layers), Vc(c.n_layers);  // [layer][pos][kv_dim]
  std::vector<std::vector<double>> logits;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    std::vector<double> x(w.token_embd.begin() + tokens[pos] * D, w.token_embd.begin() + (tokens[pos] + 1) * D);
    for (int l = 0; l < c.n_layers; ++l) {
      const auto& L = w.layers[l];
      auto xn = rmsnorm(x, L.attn_norm);
      auto q = matvec(L.wq, xn, H * HD), k = matvec(L.wk, xn, KVH * HD), v = matvec(L.wv, xn, KVH * HD);
      rope(q, H, static_cast<int>(pos));
      rope(k, KVH, static_cast<int>(pos));
      K[l].push_back(k);
      Vc[l].push_back(v);
      std::vector<double> att(H * HD, 0.0);
      for (int h = 0; h < H; ++h) {
        const int kvh = h / (H / KVH);  // GQA
        std::vector<double> s(pos + 1);
        double mx = -1e300;
        for (size_t p = 0; p <= pos; ++p) {
          double d = 0;
          for (int i = 0; i < HD; ++i) d += q[h * HD + i] * K[l][p][kvh * HD + i];
          s[p] = d / std::sqrt(static_cast<double>(HD));
          mx = std::max(mx, s[p]);
        }
        double sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (size_t p = 0; p <= pos; ++p)
          for (int i = 0; i < HD; ++i) att[h * HD + i] += s[p] / sum * Vc[l][p][kvh * HD + i];
      }
      const auto o = matvec(L.wo, att, D);
      for (int i = 0; i < D; ++i) x[i] += o[i];
      xn = rmsnorm(x, L.ffn_norm);
      auto g = matvec(L.w_gate, xn, F), u = matvec(L.w_up, xn, F);
      for (int i = 0; i < F; ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const auto dn = matvec(L.w_down, g, D);
      for (int i = 0; i < D; ++i) x[i] += dn[i];
    }
    const auto xn = rmsnorm(x, w.output_norm);
    const std::vector<float> cls(w.classifier(), w.classifier() + static_cast<size_t>(V) * D);
    logits.push_back(matvec(cls, xn, V));
  }
  return logits;
}

// Largest |a - b| / (1 + |b|) over the elements.
double max_rel_diff(const float* a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]) / (1 + std::abs(b[i])));
  return m;
}

std::vector<int> random_tokens(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> t(n);
  for (auto& x : t) x = static_cast<int>(rng() % vocab);
  return t;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<uint8_t>(s[i]);
    const size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// End to end on trained weights

TEST_CASE("stories260K: greedy output is llama2.c's published reference, byte for byte", "[model]") {
  test::TempDir dir;
  const std::string cllm = test::compress_stories(dir);
  const GenerateResult r = greedy(cllm, test::kStoriesReferenceTokens);
  CHECK(r.prompt == std::vector<int>{1});
  CHECK(r.generated.size() == static_cast<size_t>(test::kStoriesReferenceTokens));
  CHECK_FALSE(r.hit_eos);
  CHECK(r.text == std::string(test::kStoriesReference));
  // The thread count changes nothing, down to the last bit of the logits.
  CHECK(greedy(cllm, test::kStoriesReferenceTokens, "", 2).logits_hash == r.logits_hash);
}

TEST_CASE("stories260K from .bin, .gguf and a Hugging Face folder: the same greedy tokens", "[model]") {
  test::TempDir dir;
  const std::string tok512 = test::shared_model("tok512.model");
  const std::string from_bin = test::compress_stories(dir);
  const std::string from_gguf = compress_to(dir, "gguf.cllm", test::shared_model("stories260K-f32.gguf"));

  // The HF folder, written as convert_llama_weights_to_hf.py would: q and k rows permuted for
  // neox RoPE, tied embeddings, the SentencePiece model next to it.
  const std::string hf = dir.file("hf");
  REQUIRE(std::system(("mkdir -p '" + hf + "'").c_str()) == 0);
  {
    ImportOptions io;
    io.tokenizer_path = tok512;
    const SourceModel src = open_source_model(test::shared_model("stories260K.bin"), io);
    const LlamaConfig& c = src.config;
    std::vector<std::vector<float>> keep;  // permuted copies, alive until written
    std::vector<SafetensorsEntry> entries;
    auto add = [&](const std::string& name, const SourceTensor& t, const float* data) {
      entries.push_back({name, DType::F32, t.shape, data, t.size});
    };
    auto floats = [](const SourceTensor& t) {
      std::vector<float> v(t.size / 4);
      std::memcpy(v.data(), t.data, t.size);
      return v;
    };
    add("model.embed_tokens.weight", *src.find("token_embd.weight"),
        reinterpret_cast<const float*>(src.find("token_embd.weight")->data));
    add("model.norm.weight", *src.find("output_norm.weight"),
        reinterpret_cast<const float*>(src.find("output_norm.weight")->data));
    keep.reserve(2 * c.n_layers);
    for (int l = 0; l < c.n_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      auto t = [&](const char* part) -> const SourceTensor& { return *src.find(layer_tensor_name(l, part)); };
      auto raw = [&](const char* part) { return reinterpret_cast<const float*>(t(part).data); };
      keep.push_back(hf_permute(floats(t("attn_q")), c.n_heads, c.head_dim, c.dim));
      add(p + "self_attn.q_proj.weight", t("attn_q"), keep.back().data());
      keep.push_back(hf_permute(floats(t("attn_k")), c.n_kv_heads, c.head_dim, c.dim));
      add(p + "self_attn.k_proj.weight", t("attn_k"), keep.back().data());
      add(p + "self_attn.v_proj.weight", t("attn_v"), raw("attn_v"));
      add(p + "self_attn.o_proj.weight", t("attn_output"), raw("attn_output"));
      add(p + "mlp.gate_proj.weight", t("ffn_gate"), raw("ffn_gate"));
      add(p + "mlp.up_proj.weight", t("ffn_up"), raw("ffn_up"));
      add(p + "mlp.down_proj.weight", t("ffn_down"), raw("ffn_down"));
      add(p + "input_layernorm.weight", t("attn_norm"), raw("attn_norm"));
      add(p + "post_attention_layernorm.weight", t("ffn_norm"), raw("ffn_norm"));
    }
    write_safetensors(hf + "/model.safetensors", entries);
    nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}},
                          {"model_type", "llama"},
                          {"hidden_size", c.dim},
                          {"intermediate_size", c.ffn_dim},
                          {"num_hidden_layers", c.n_layers},
                          {"num_attention_heads", c.n_heads},
                          {"num_key_value_heads", c.n_kv_heads},
                          {"vocab_size", c.vocab_size},
                          {"max_position_embeddings", c.context_length},
                          {"rms_norm_eps", 1e-5},
                          {"rope_theta", 10000.0},
                          {"hidden_act", "silu"},
                          {"tie_word_embeddings", true},
                          {"bos_token_id", 1},
                          {"eos_token_id", 2},
                          {"torch_dtype", "float32"}};
    std::ofstream(hf + "/config.json") << cfg.dump(2);
    const auto spm = read_file(tok512);
    std::ofstream(hf + "/tokenizer.model", std::ios::binary)
        .write(reinterpret_cast<const char*>(spm.data()), static_cast<std::streamsize>(spm.size()));
  }
  const std::string from_hf = compress_to(dir, "hf.cllm", hf);
  CHECK(CllmFile::open(from_hf).metadata().at("llama.rope.layout") == "neox");
  CHECK(CllmFile::open(from_bin).metadata().at("llama.rope.layout") == "interleaved");

  const auto bin = greedy(from_bin, test::kStoriesReferenceTokens);
  const auto gguf = greedy(from_gguf, test::kStoriesReferenceTokens);
  const auto hf_run = greedy(from_hf, test::kStoriesReferenceTokens);
  CHECK(bin.text == std::string(test::kStoriesReference));
  CHECK(gguf.generated == bin.generated);
  CHECK(hf_run.generated == bin.generated);
  // The GGUF holds the very same bits in the same layout: identical logits. (The HF folder's
  // permuted q/k rows change the order of the q.k sums, so its logits differ in the last bits.)
  CHECK(gguf.logits_hash == bin.logits_hash);
}

TEST_CASE("loading names the file, the tensor and the tile of a broken tile", "[model]") {
  test::TempDir dir;
  const std::string cllm = test::compress_stories(dir);
  uint64_t offset = 0;
  {
    const CllmFile f = CllmFile::open(cllm);
    offset = f.get("blk.3.attn_q.weight").tiles.at(0).offset;
  }
  // Corrupt the tile header's element count (bytes 4..7): the codec must refuse the tile.
  {
    std::fstream io(cllm, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(static_cast<std::streamoff>(offset + 4));
    const uint32_t bogus = 12345;
    io.write(reinterpret_cast<const char*>(&bogus), 4);
  }
  CllmOpenOptions no_verify;
  no_verify.verify_checksums = false;
  const CllmFile f = CllmFile::open(cllm, no_verify);
  try {
    load_llama_weights(f, nullptr);
    FAIL("a corrupted tile was accepted");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Contains("loading '" + cllm + "': tensor 'blk.3.attn_q.weight' tile 0: "));
  }
}

TEST_CASE("a file without a tokenizer: a clear error", "[model]") {
  test::TempDir dir;
  const std::string cllm = compress_to(dir, "notok.cllm", test::shared_model("stories260K.bin"));
  const CllmFile f = CllmFile::open(cllm);
  REQUIRE(f.metadata().at("tokenizer.model") == "none");
  CHECK_THROWS_WITH(Tokenizer::from_cllm(f), Contains("has no tokenizer") && Contains("--tokenizer"));
}

// ---------------------------------------------------------------------------------------------
// The forward pass against the naive transcription

TEST_CASE("forward pass matches a naive double-precision transcription (GQA, both RoPE layouts, llama3)",
          "[model]") {
  LlamaConfig c = small_config();
  SECTION("interleaved RoPE") {}
  SECTION("neox RoPE") { c.rope_layout = RopeLayout::neox; }
  SECTION("llama3 scaling, untied classifier") {
    c.rope_theta = 500000.0f;
    // Wavelengths 2 pi 500000^(i/8): 6.3 (< 64/4: kept), 32 (blended), 167 and up (> 64: scaled).
    c.rope_scaling = {"llama3", 8.0f, 1.0f, 4.0f, 64, {}, {}, 1.0f};
    c.tie_embeddings = false;
  }
  SECTION("tied classifier") { c.tie_embeddings = true; }
  const LlamaWeights w = random_model(c, 7);
  const auto tokens = random_tokens(20, c.vocab_size, 3);
  const auto expected = naive_forward(w, tokens);
  CpuForward engine(w, {0, 1, 64});
  const float* got = engine.forward(tokens.data(), static_cast<int>(tokens.size()), 0, true);
  // fp32 against double over 2 layers of width <= 80: rounding errors of a few 1e-7 relative
  // per operation, grown through the softmax and the residual stream (unit-scale random
  // weights, logits up to ~30). Observed at most 1.7e-5; 1e-4 leaves a 6x margin.
  for (size_t t = 0; t < tokens.size(); ++t) {
    INFO("position " << t);
    CHECK(max_rel_diff(got + t * c.vocab_size, expected[t]) < 1e-4);
  }
}

TEST_CASE("attention_head with GQA matches a naive loop", "[model]") {
  // 6 query heads over 2 kv heads (3 per group), head_dim 12, 9 positions in the cache.
  const int H = 6, KVH = 2, HD = 12, P = 9, kvd = KVH * HD;
  std::mt19937_64 rng(11);
  const auto q = gaussian(H * HD, 0, 1, rng), k = gaussian(P * kvd, 0, 1, rng), v = gaussian(P * kvd, 0, 1, rng);
  std::vector<float> scores(P), out(HD);
  for (int h = 0; h < H; ++h) {
    const int kvh = h / (H / KVH);
    for (int n_pos = 1; n_pos <= P; n_pos += 4) {
      cpu::attention_head(out.data(), q.data() + h * HD, k.data() + kvh * HD, v.data() + kvh * HD, n_pos, kvd, HD,
                          scores.data());
      std::vector<double> s(n_pos), want(HD, 0.0);
      double mx = -1e300, sum = 0;
      for (int p = 0; p < n_pos; ++p) {
        double d = 0;
        for (int i = 0; i < HD; ++i) d += double(q[h * HD + i]) * k[p * kvd + kvh * HD + i];
        s[p] = d / std::sqrt(double(HD));
        mx = std::max(mx, s[p]);
      }
      for (auto& e : s) sum += (e = std::exp(e - mx));
      for (int p = 0; p < n_pos; ++p)
        for (int i = 0; i < HD; ++i) want[i] += s[p] / sum * v[p * kvd + kvh * HD + i];
      INFO("head " << h << ", " << n_pos << " positions");
      CHECK(max_rel_diff(out.data(), want) < 1e-6);  // fp32 sums of <= 12 terms: observed <= 8.1e-8
    }
  }
}

TEST_CASE("RoPE: neox on HF-permuted rows equals interleaved on the original rows", "[model]") {
  for (int head_dim : {8, 64, 128}) {
    const int heads = 3;
    std::mt19937_64 rng(head_dim);
    // One "row" per dimension with a single column: hf_permute moves the values as it moves rows.
    const auto x = gaussian(heads * head_dim, 0, 1, rng);
    const auto freqs = cpu::rope_frequencies(head_dim, 10000.0f, {});
    const auto table = cpu::rope_table(freqs, 600);
    for (int pos : {0, 1, 17, 599}) {
      std::vector<float> a = x;
      cpu::rope(a.data(), heads, head_dim, RopeLayout::interleaved, table.cos_at(pos), table.sin_at(pos));
      std::vector<float> b = hf_permute(x, heads, head_dim, 1);
      cpu::rope(b.data(), heads, head_dim, RopeLayout::neox, table.cos_at(pos), table.sin_at(pos));
      // The same pairs rotated by the same angles with the same arithmetic: bit-identical.
      CHECK(hf_permute(a, heads, head_dim, 1) == b);
    }
    // And the interleaved rotation is the textbook one: pair i turns by pos * theta^(-2i/d).
    std::vector<float> a = x;
    cpu::rope(a.data(), heads, head_dim, RopeLayout::interleaved, table.cos_at(5), table.sin_at(5));
    const int i = head_dim / 2 - 1;
    const double angle = 5.0 * std::pow(10000.0, -2.0 * i / head_dim);
    CHECK(a[2 * i] == Approx(x[2 * i] * std::cos(angle) - x[2 * i + 1] * std::sin(angle)).margin(1e-6));
    CHECK(a[2 * i + 1] == Approx(x[2 * i] * std::sin(angle) + x[2 * i + 1] * std::cos(angle)).margin(1e-6));
  }
  // Whole models: a neox model with HF-permuted q/k gives the interleaved model's logits (the
  // q.k dot products sum in another order, hence a tolerance of fp32 rounding).
  LlamaConfig c = small_config();
  LlamaWeights inter = random_model(c, 5);
  LlamaWeights neox = inter;
  neox.config.rope_layout = RopeLayout::neox;
  for (auto& L : neox.layers) {
    L.wq = hf_permute(L.wq, c.n_heads, c.head_dim, c.dim);
    L.wk = hf_permute(L.wk, c.n_kv_heads, c.head_dim, c.dim);
  }
  const auto tokens = random_tokens(16, c.vocab_size, 9);
  CpuForward a(inter, {0, 1, 64}), b(neox, {0, 1, 64});
  const float* la = a.forward(tokens.data(), 16, 0);
  const float* lb = b.forward(tokens.data(), 16, 0);
  CHECK(max_rel_diff(la, std::vector<double>(lb, lb + c.vocab_size)) < 1e-5);
}

TEST_CASE("llama3 RoPE scaling: frequencies as HF transformers computes them", "[model]") {
  // Llama-3.1: theta 500000, head_dim 128, factor 8, low 1, high 4, original context 8192.
  // Wavelengths below 8192/4 keep their frequency, above 8192/1 are divided by 8, and in
  // between blend: smooth = (8192/wavelen - 1) / 3, f' = (1 - smooth) f / 8 + smooth f.
  // Expected values computed by hand in double precision (python, math.pi).
  const RopeScaling s{"llama3", 8.0f, 1.0f, 4.0f, 8192, {}, {}, 1.0f};
  const auto f = cpu::rope_frequencies(128, 500000.0f, s);
  REQUIRE(f.size() == 64);
  const std::pair<int, double> expected[] = {
      {0, 1.0},                      // wavelength 2 pi: kept
      {20, 0.016560440080994446},    // wavelength 379: kept
      {29, 0.002166570763503359},    // wavelength 2402: smooth 0.8036
      {31, 0.0008567514129196321},   // smooth 0.4212
      {34, 0.00017850781276799638},  // smooth 0.0745
      {35, 9.556212353964683e-05},   // wavelength 8219 > 8192: divided by 8
      {63, 3.068925988914511e-07},   // divided by 8
  };
  for (const auto& [i, want] : expected) {
    INFO("frequency " << i);
    CHECK(f[i] == Approx(want).epsilon(2e-6));  // fp32 pow and arithmetic, as HF's float32 tensors
  }
  // Without scaling the plain frequencies come back.
  const auto plain = cpu::rope_frequencies(128, 500000.0f, {});
  CHECK(plain[35] == Approx(0.0007644969883171747).epsilon(2e-6));
  CHECK(plain[0] == 1.0f);
}

TEST_CASE("a batched prompt gives exactly the logits of feeding its tokens one by one", "[model]") {
  // Exact, not merely close: every logit is summed in the same order whatever the batch (the
  // matmul blocks over tokens and rows but each dot product keeps its fixed 8-lane order, and
  // attention for token t reads the same cache rows in the same order). No tolerance needed.
  const LlamaConfig c = small_config();
  const LlamaWeights w = random_model(c, 21);
  const auto tokens = random_tokens(37, c.vocab_size, 4);
  const int n = static_cast<int>(tokens.size());

  CpuForward batched(w, {0, 1, 16});  // batches of 16: 16 + 16 + 5
  const float* all = batched.forward(tokens.data(), n, 0, true);
  const std::vector<float> batch_logits(all, all + static_cast<size_t>(n) * c.vocab_size);

  CpuForward single(w, {0, 1, 16});
  for (int t = 0; t < n; ++t) {
    const float* l = single.forward(&tokens[t], 1, t);
    INFO("position " << t);
    REQUIRE(std::memcmp(l, batch_logits.data() + static_cast<size_t>(t) * c.vocab_size,
                        sizeof(float) * c.vocab_size) == 0);
  }
  // Continuing after a batched prompt equals continuing after single steps.
  const int next = 5;
  const float* a = batched.forward(&next, 1, n);
  const float* b = single.forward(&next, 1, n);
  CHECK(std::memcmp(a, b, sizeof(float) * c.vocab_size) == 0);
}

TEST_CASE("worker threads do not change a single bit of the logits", "[model]") {
  // Wide enough that every matmul (>= 128K multiply-adds even for one token: the k projection
  // is 256 x 512) and the batched attention run on the pool (cpu_ops.cpp's threshold).
  LlamaConfig c = small_config();
  c.dim = 512;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.head_dim = 64;
  c.ffn_dim = 1024;
  c.vocab_size = 1000;
  c.context_length = 128;
  const LlamaWeights w = random_model(c, 33);
  const auto tokens = random_tokens(70, c.vocab_size, 8);
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2, 3}) {
    CpuForward engine(w, {0, threads, 32});
    const float* l = engine.forward(tokens.data(), 70, 0, true);
    std::vector<float> r(l, l + 70 * c.vocab_size);
    for (int t = 0; t < 5; ++t) {  // then single-token steps
      const float* s = engine.forward(&tokens[t], 1, 70 + t);
      r.insert(r.end(), s, s + c.vocab_size);
    }
    results.push_back(std::move(r));
  }
  CHECK(results[1] == results[0]);
  CHECK(results[2] == results[0]);
}

TEST_CASE("forward refuses positions past the context and unknown token ids", "[model]") {
  const LlamaConfig c = small_config();
  const LlamaWeights w = random_model(c, 1);
  CpuForward engine(w, {8, 1, 64});
  CHECK(engine.context() == 8);
  const auto tokens = random_tokens(9, c.vocab_size, 1);
  CHECK_THROWS_WITH(engine.forward(tokens.data(), 9, 0), Contains("do not fit the context of 8"));
  const int bad = c.vocab_size;
  CHECK_THROWS_WITH(engine.forward(&bad, 1, 0), Contains("out of range"));
  CHECK_THROWS_WITH(CpuForward(w, {65, 1, 64}), Contains("larger than the model's context length 64"));
  CHECK(resolve_context(c, 0) == 64);
  LlamaConfig big = c;
  big.context_length = 131072;
  CHECK(resolve_context(big, 0) == 4096);
  // Weights that do not match their config are refused by name, not read out of bounds.
  LlamaWeights bad_w = w;
  bad_w.layers[1].wk.pop_back();
  CHECK_THROWS_WITH(CpuForward(bad_w, {0, 1, 64}), Contains("tensor 'blk.1.attn_k.weight' holds 1535 floats"));
}

// ---------------------------------------------------------------------------------------------
// Sampler

TEST_CASE("sampler: greedy is the argmax, lowest id on ties", "[model]") {
  const std::vector<float> logits = {0.1f, 3.0f, 3.0f, -1.0f, 2.9f};
  SamplerParams p;
  p.temp = 0;
  Sampler s(p);
  CHECK(s.sample(logits.data(), 5) == 1);
  CHECK(sampling::argmax(logits.data(), 5) == 1);
}

TEST_CASE("sampler: top-k 1 is greedy at any temperature and seed", "[model]") {
  std::mt19937_64 rng(2);
  for (int trial = 0; trial < 50; ++trial) {
    const auto logits = gaussian(300, 0, 2, rng);
    SamplerParams p;
    p.temp = 1.5f;
    p.top_k = 1;
    p.seed = trial;
    Sampler s(p);
    REQUIRE(s.sample(logits.data(), 300) == sampling::argmax(logits.data(), 300));
  }
}

TEST_CASE("sampler: a fixed seed reproduces the same draws", "[model]") {
  std::mt19937_64 rng(3);
  const auto logits = gaussian(500, 0, 1.5f, rng);
  auto draws = [&](int64_t seed) {
    SamplerParams p;
    p.seed = seed;
    p.top_k = 0;
    p.repeat_penalty = 1.1f;
    Sampler s(p);
    std::vector<int> out;
    for (int i = 0; i < 40; ++i) {
      out.push_back(s.sample(logits.data(), 500));
      s.accept(out.back());
    }
    return out;
  };
  CHECK(draws(42) == draws(42));
  CHECK(draws(42) != draws(43));
  SamplerParams p;
  p.seed = 1234;
  CHECK(Sampler(p).seed() == 1234u);
  CHECK_THROWS_WITH(Sampler(SamplerParams{0.8f, 40, 0.95f, 0.05f, 1.0f, 64, -2}), Contains("seed"));
}

TEST_CASE("sampler: top-p and min-p filter a hand-made distribution", "[model]") {
  // probabilities 0.5, 0.2, 0.15, 0.1, 0.05 (ids scrambled)
  const std::vector<sampling::Candidate> base = {
      {3, std::log(0.15f)}, {0, std::log(0.5f)}, {4, std::log(0.05f)}, {1, std::log(0.2f)}, {2, std::log(0.1f)}};
  auto ids = [](const std::vector<sampling::Candidate>& c) {
    std::vector<int> v;
    for (const auto& x : c) v.push_back(x.id);
    return v;
  };
  auto c = base;
  sampling::top_k(c, 0);  // sort only
  CHECK(ids(c) == std::vector<int>{0, 1, 3, 2, 4});
  auto p = sampling::probabilities(c, 1.0f);
  CHECK(p[0] == Approx(0.5f));
  CHECK(p[4] == Approx(0.05f));

  auto top_p = [&](float v) {
    auto x = c;
    sampling::top_p(x, v);
    return ids(x);
  };
  CHECK(top_p(0.45f) == std::vector<int>{0});           // 0.5 >= 0.45 at once
  CHECK(top_p(0.69f) == std::vector<int>{0, 1});        // 0.5 + 0.2
  CHECK(top_p(0.80f) == std::vector<int>{0, 1, 3});     // 0.85 is the first sum >= 0.8
  CHECK(top_p(0.97f) == std::vector<int>{0, 1, 3, 2, 4});
  CHECK(top_p(1.0f).size() == 5);

  auto min_p = [&](float v) {
    auto x = c;
    sampling::min_p(x, v);
    return ids(x);
  };
  CHECK(min_p(0.05f).size() == 5);                       // threshold 0.025
  CHECK(min_p(0.25f) == std::vector<int>{0, 1, 3});     // threshold 0.125: 0.15 stays, 0.1 goes
  CHECK(min_p(0.35f) == std::vector<int>{0, 1});        // threshold 0.175
  CHECK(min_p(1.0f) == std::vector<int>{0});

  auto k2 = base;
  sampling::top_k(k2, 2);
  CHECK(ids(k2) == std::vector<int>{0, 1});

  // The draw follows the distribution left: 0.7 / 0.2 / 0.1 at temperature 1.
  const std::vector<float> logits = {std::log(0.7f), std::log(0.2f), std::log(0.1f)};
  SamplerParams sp;
  sp.temp = 1.0f;
  sp.top_k = 0;
  sp.top_p = 1.0f;
  sp.min_p = 0.0f;
  sp.seed = 5;
  Sampler s(sp);
  int counts[3] = {};
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s.sample(logits.data(), 3)];
  CHECK(counts[0] / double(n) == Approx(0.7).margin(0.02));  // 0.02 is > 6 standard deviations
  CHECK(counts[1] / double(n) == Approx(0.2).margin(0.02));
  CHECK(counts[2] / double(n) == Approx(0.1).margin(0.02));
}

TEST_CASE("sampler: repeat penalty is llama.cpp's (divide positive logits, multiply negative)", "[model]") {
  std::vector<float> logits = {2.0f, -2.0f, 1.0f, 0.5f, 0.0f};
  sampling::apply_repeat_penalty(logits.data(), 5, {0, 1, 1, 4}, 2.0f);  // repeats count once
  CHECK(logits == std::vector<float>{1.0f, -4.0f, 1.0f, 0.5f, 0.0f});
  // In the sampler: only the last repeat_last_n tokens count. Token 0 leads until penalised.
  const std::vector<float> l2 = {1.0f, 0.9f, 0.1f};
  SamplerParams p;
  p.temp = 0;
  p.repeat_penalty = 1.5f;
  p.repeat_last_n = 2;
  Sampler s(p);
  CHECK(s.sample(l2.data(), 3) == 0);
  s.accept(0);
  CHECK(s.sample(l2.data(), 3) == 1);  // 1.0 / 1.5 < 0.9
  s.accept(2);
  s.accept(2);  // token 0 has left the 2-token window
  CHECK(s.sample(l2.data(), 3) == 0);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

TEST_CASE("tokenizer: ids equal SentencePiece's own, with BOS per the flag", "[model]") {
  const std::string path = test::shared_model("tokenizer.model");
  const Tokenizer tok = Tokenizer::from_file(path);
  sentencepiece::SentencePieceProcessor sp;
  REQUIRE(sp.Load(path).ok());
  CHECK(tok.n_vocab() == 32000);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.encode("Hello world", true) == std::vector<int>{1, 15043, 3186});
  CHECK(tok.encode("Hello world", false) == std::vector<int>{15043, 3186});
  CHECK(tok.encode("", true) == std::vector<int>{1});
  for (const std::string text : {"  two leading spaces", "naïve café 日本語 🦙", "a\n\nb\tc", "x  =  42.5e-3 "}) {
    std::vector<int> want{1};
    for (int id : sp.EncodeAsIds(text)) want.push_back(id);
    CHECK(tok.encode(text, true) == want);
  }
  CHECK(tok.display(15043) == " Hello");
  CHECK(tok.display(1) == "<s>");
  CHECK(tok.display(13) == "<0x0A>");
  CHECK_THROWS_WITH(Tokenizer::from_file(test::shared_model("stories260K.bin")), Contains("not a valid SentencePiece"));
}

TEST_CASE("tokenizer: streaming detokenization keeps UTF-8 whole across byte pieces", "[model]") {
  const Tokenizer tok = Tokenizer::from_file(test::shared_model("tokenizer.model"));
  // The llama and the rocket are not in the vocabulary: they come out as 4 byte pieces each.
  const std::string text = "Hello 🦙 wörld\n日本語 🚀!";
  const auto ids = tok.encode(text, true);
  int byte_pieces = 0;
  for (int id : ids) byte_pieces += tok.is_byte(id);
  REQUIRE(byte_pieces >= 8);
  TokenDecoder dec(tok);
  std::string out;
  for (int id : ids) {
    const std::string piece = dec.push(id);
    INFO("token " << id << " gave '" << piece << "'");
    CHECK(valid_utf8(piece));  // never half a character on the terminal
    out += piece;
  }
  out += dec.flush();
  CHECK(out == text);  // the leading space of "▁Hello" after BOS prints as nothing

  // Without BOS the first word's space stays (llama.cpp strips it only right after BOS).
  TokenDecoder no_bos(tok);
  std::string out2;
  for (int id : tok.encode("Hello", false)) out2 += no_bos.push(id);
  CHECK(out2 == " Hello");

  // A broken sequence (lead byte, then a normal piece) becomes U+FFFD, then the text.
  TokenDecoder broken(tok);
  const int lead = 3 + 0xF0;  // <0xF0> is id 3 + 0xF0 in Llama-2's vocabulary
  REQUIRE(tok.piece(lead) == "<0xF0>");
  CHECK(broken.push(lead).empty());
  CHECK(broken.push(15043) == "\xEF\xBF\xBD Hello");
  CHECK(broken.push(2).empty());  // EOS prints nothing
}
