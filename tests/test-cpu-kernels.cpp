// Specification of the CPU kernels on 16-bit weights (src/model/cpu_kernels_bf16.h) and of one
// layer's CPU forward pass on them (src/model/cpu_layer.h):
// - every instruction set this CPU has gives cpu::matmul's bits on the weights widened to fp32
//   and the inputs rounded to the weights' dtype (avx512-bf16: within a stated fp32 bound),
//   for odd sizes, tails and strides, whatever the thread count or the batching;
// - rounding and attention_head_f16 on an f16 cache are the scalar definitions' bits;
// - a 16-bit layer's bits depend neither on the thread count nor on batching; its ISAs agree
//   within a bound (cpu_attention.h rounds differently on each, tests/test-cpu-attention.cpp);
// - a layer with f32 weights and cache is CpuForward's layer, bit for bit; with stories260K's
//   weights rounded to bf16 (or f16) on both sides it stays within the GPU engine's documented
//   bf16 tolerance of CpuForward over 200 greedy positions and picks the same tokens wherever
//   the choice is not a tie at that precision.
// Instruction sets this CPU lacks cannot be tested here; the first test says which.
#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "common/dtype.h"
#include "common/error.h"
#include "common/file_io.h"
#include "convert/compress.h"
#include "convert/source_model.h"
#include "format/cllm_reader.h"
#include "model/cpu_kernels_bf16.h"
#include "model/cpu_layer.h"
#include "model/cpu_ops.h"
#include "model/forward_cpu.h"
#include "model/llama_weights.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Contains;
using cpu::Isa;

namespace {

const Isa kIsas[] = {Isa::scalar, Isa::avx2, Isa::avx512, Isa::avx512_bf16};

std::vector<Isa> available_isas() {
  std::vector<Isa> v;
  for (Isa isa : kIsas)
    if (cpu::isa_available(isa)) v.push_back(isa);
  return v;
}

// Whether this ISA's products are the scalar path's bits (all but vdpbf16ps on bf16 weights).
bool exact_isa(Isa isa, DType wt) { return !(isa == Isa::avx512_bf16 && wt == DType::BF16); }

using test::gaussian;
using test::small_config;

uint16_t to16(DType t, float f) { return t == DType::BF16 ? f32_to_bf16(f) : f32_to_f16(f); }
float from16(DType t, uint16_t h) { return t == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h); }
float round16(DType t, float f) { return from16(t, to16(t, f)); }

std::vector<uint16_t> to16(DType t, const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = to16(t, v[i]);
  return h;
}
std::vector<float> widen(DType t, const std::vector<uint16_t>& h) {
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = from16(t, h[i]);
  return v;
}
void round_in_place(DType t, std::vector<float>& v) {
  for (auto& x : v) x = round16(t, x);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

// The first index where a and b differ in bits, as text for failure messages.
std::string first_difference(const float* a, const float* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (std::memcmp(a + i, b + i, sizeof(float)) != 0) return cat("element ", i, ": ", a[i], " vs ", b[i]);
  return "none";
}

std::vector<int> random_tokens(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> t(n);
  for (auto& x : t) x = static_cast<int>(rng() % vocab);
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Instruction sets

TEST_CASE("the instruction sets reported available are the ones /proc/cpuinfo lists", "[cpu-kernels]") {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      for (std::string w; words >> w;) flags.insert(w);
      break;
    }
  if (flags.empty()) {
    std::fprintf(stderr, "test-cpu-kernels: no /proc/cpuinfo flags; ISA detection not cross-checked\n");
    return;
  }
  const auto has = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (!flags.count(n)) return false;
    return true;
  };
  const bool avx2 = has({"avx2", "fma", "f16c"});
  const bool avx512 = avx2 && has({"avx512f", "avx512bw", "avx512vl"});
  CHECK(cpu::isa_available(Isa::scalar));
  CHECK(cpu::isa_available(Isa::avx2) == avx2);
  CHECK(cpu::isa_available(Isa::avx512) == avx512);
  CHECK(cpu::isa_available(Isa::avx512_bf16) == (avx512 && has({"avx512_bf16"})));
  CHECK(cpu::isa_available(cpu::isa_best()));

  std::string here, missing;
  for (Isa isa : kIsas) (cpu::isa_available(isa) ? here : missing) += cat(" ", cpu::isa_name(isa));
  std::fprintf(stderr, "test-cpu-kernels: tested here:%s; not on this CPU (untested here):%s\n", here.c_str(),
               missing.empty() ? " none" : missing.c_str());
}

TEST_CASE("ISA names round-trip, unknown names are refused", "[cpu-kernels]") {
  for (Isa isa : kIsas) {
    Isa back = Isa::scalar;
    REQUIRE(cpu::isa_from_name(cpu::isa_name(isa), &back));
    CHECK(back == isa);
  }
  Isa out;
  CHECK_FALSE(cpu::isa_from_name("sse9", &out));
}

// ---------------------------------------------------------------------------------------------
// Rounding the inputs

TEST_CASE("inputs are rounded to bf16 and f16 exactly as common/dtype.h rounds, on every ISA", "[cpu-kernels]") {
  // Random bit patterns cover every exponent (subnormals, Inf, NaN); ties to even are added
  // explicitly: 1 + 2^-8 (a bf16 tie), 1 + 2^-11 (an f16 tie), 65520 (f16 rounds it to Inf),
  // half the smallest f16 subnormal (rounds to 0). 1003 values: the vector loops and a tail.
  std::mt19937_64 rng(1);
  std::vector<float> x(1003);
  for (auto& v : x) v = f32_from_bits(static_cast<uint32_t>(rng()));
  const float special[] = {0.0f, -0.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-11f, 65504.0f, 65520.0f,
                           0x1p-25f, 0x1p-24f, 1e-30f, -3.0e38f, INFINITY, -INFINITY, NAN};
  std::copy(std::begin(special), std::end(special), x.begin());
  for (DType t : {DType::BF16, DType::F16}) {
    std::vector<float> want(x.size());
    for (size_t i = 0; i < x.size(); ++i) want[i] = round16(t, x[i]);
    for (Isa isa : available_isas()) {
      std::vector<float> got(x.size());
      cpu::round_to_dtype(t, x.data(), got.data(), x.size(), isa);
      INFO(dtype_name(t) << " on " << cpu::isa_name(isa) << ", first difference: "
                         << first_difference(got.data(), want.data(), x.size()));
      CHECK(same_bits(got, want));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Matrix products

TEST_CASE("matmul16 on every ISA is cpu::matmul on widened weights and rounded inputs", "[cpu-kernels]") {
  // (d, k, n): k covers no full 8-block, exact blocks, tails of every length mod 8 and mod 32;
  // n covers each token-group tail of the kernels (groups of 4); d covers row-block tails.
  struct Case { int d, k, n; };
  const Case cases[] = {{1, 1, 1},    {3, 7, 1},    {5, 8, 2},     {17, 9, 3},   {33, 31, 4},
                        {9, 33, 5},   {16, 64, 7},  {24, 100, 16}, {13, 257, 17}, {40, 1000, 3},
                        {7, 4100, 2}};
  std::mt19937_64 rng(2);
  for (DType wt : {DType::BF16, DType::F16}) {
    for (const Case& cs : cases) {
      const int d = cs.d, k = cs.k, n = cs.n, ldy = d + 3;  // ldy > d: the gap must stay untouched
      const std::vector<uint16_t> w = to16(wt, gaussian(static_cast<size_t>(d) * k, 0, 0.5f, rng));
      const std::vector<float> wf = widen(wt, w);
      const std::vector<float> x = gaussian(static_cast<size_t>(n) * k, 0, 1.5f, rng);
      std::vector<float> xr = x;
      round_in_place(wt, xr);
      const std::vector<float> y0 = gaussian(static_cast<size_t>(n) * ldy, 0, 1, rng);

      std::vector<float> dots(static_cast<size_t>(n) * ldy);
      cpu::matmul(dots.data(), ldy, xr.data(), wf.data(), n, k, d, nullptr);
      for (bool accumulate : {false, true}) {
        std::vector<float> want = y0;
        for (int t = 0; t < n; ++t)
          for (int r = 0; r < d; ++r) {
            const size_t i = static_cast<size_t>(t) * ldy + r;
            want[i] = accumulate ? y0[i] + dots[i] : dots[i];
          }
        for (Isa isa : available_isas()) {
          std::vector<float> got = y0;
          cpu::matmul16(got.data(), ldy, x.data(), w.data(), wt, n, k, d, nullptr, accumulate, isa);
          INFO(dtype_name(wt) << " weights (" << d << ", " << k << "), " << n << " tokens, "
                              << (accumulate ? "y += " : "y = ") << "on " << cpu::isa_name(isa));
          if (exact_isa(isa, wt)) {
            INFO("first difference: " << first_difference(got.data(), want.data(), got.size()));
            REQUIRE(same_bits(got, want));
            continue;
          }
          // vdpbf16ps: the same exact products summed in another order with the CPU's own
          // rounding. Each sum is within (additions on the longest path) * u * sum |x_i w_i|
          // of the exact dot (u = 2^-24): ceil(k/8) + 3 for cpu::dot's 8 lanes and tree,
          // 2 * ceil(k/32) + 4 for 16 lanes of pairs and their tree; doubled in case the
          // CPU rounds less well than to nearest; plus one rounding of y0 + dot.
          const double u = std::ldexp(1.0, -24);
          const double adds = (k + 7) / 8 + 3 + 2 * ((k + 31) / 32) + 4;
          for (int t = 0; t < n; ++t)
            for (int r = 0; r < ldy; ++r) {
              const size_t i = static_cast<size_t>(t) * ldy + r;
              if (r >= d) {
                REQUIRE(std::memcmp(&got[i], &y0[i], 4) == 0);
                continue;
              }
              double mag = 0;
              for (int e = 0; e < k; ++e)
                mag += std::abs(static_cast<double>(xr[static_cast<size_t>(t) * k + e]) * wf[static_cast<size_t>(r) * k + e]);
              const double bound = 2 * adds * u * mag + (accumulate ? 2 * u * std::abs(double(want[i])) : 0.0);
              INFO("token " << t << ", row " << r << ": " << got[i] << " vs " << want[i]);
              REQUIRE(std::abs(double(got[i]) - want[i]) <= bound);
            }
        }
      }
    }
  }
}

TEST_CASE("matmul16: the bits do not depend on the thread count, the batching or the other products",
          "[cpu-kernels]") {
  // Large enough (300 x 515 x 16 multiply-adds) for the pool to be used.
  const int d = 300, k = 515, n = 16;
  std::mt19937_64 rng(3);
  for (DType wt : {DType::BF16, DType::F16}) {
    const std::vector<uint16_t> w = to16(wt, gaussian(static_cast<size_t>(d) * k, 0, 0.1f, rng));
    const std::vector<uint16_t> w2 = to16(wt, gaussian(static_cast<size_t>(70) * k, 0, 0.1f, rng));
    const std::vector<float> x = gaussian(static_cast<size_t>(n) * k, 0, 1, rng);
    for (Isa isa : available_isas()) {
      INFO(dtype_name(wt) << " on " << cpu::isa_name(isa));
      std::vector<float> one(static_cast<size_t>(n) * d);
      cpu::matmul16(one.data(), d, x.data(), w.data(), wt, n, k, d, nullptr, false, isa);
      for (int threads : {2, 3}) {
        ThreadPool pool(threads);
        std::vector<float> got(one.size());
        cpu::matmul16(got.data(), d, x.data(), w.data(), wt, n, k, d, &pool, false, isa);
        INFO(threads << " threads");
        CHECK(same_bits(got, one));
      }
      std::vector<float> single(one.size());
      for (int t = 0; t < n; ++t)
        cpu::matmul16(single.data() + static_cast<size_t>(t) * d, d, x.data() + static_cast<size_t>(t) * k, w.data(),
                      wt, 1, k, d, nullptr, false, isa);
      CHECK(same_bits(single, one));
      // In one call with a second product of the same input (q/k/v style).
      std::vector<float> a(one.size()), b(static_cast<size_t>(n) * 70);
      cpu::Product16 p[2];
      p[0] = {w.data(), d, a.data(), d, false};
      p[1] = {w2.data(), 70, b.data(), 70, false};
      ThreadPool pool(3);
      cpu::matmul16_multi(p, 2, x.data(), wt, n, k, &pool, isa);
      CHECK(same_bits(a, one));
      std::vector<float> b_alone(b.size());
      cpu::matmul16(b_alone.data(), 70, x.data(), w2.data(), wt, n, k, 70, nullptr, false, isa);
      CHECK(same_bits(b, b_alone));
    }
  }
}

TEST_CASE("matmul16 refuses what it cannot compute, naming it", "[cpu-kernels]") {
  std::vector<uint16_t> w(64, 0);
  std::vector<float> x(8, 1.0f), y(8);
  CHECK_THROWS_WITH(cpu::matmul16(y.data(), 8, x.data(), w.data(), DType::F32, 1, 8, 8, nullptr),
                    Contains("weights are f32, expected bf16 or f16"));
  CHECK_THROWS_WITH(cpu::matmul16(y.data(), 4, x.data(), w.data(), DType::BF16, 1, 8, 8, nullptr),
                    Contains("d = 8, ldy = 4"));
  CHECK_THROWS_WITH(cpu::matmul16(y.data(), 8, x.data(), w.data(), DType::BF16, 0, 8, 8, nullptr),
                    Contains("0 tokens"));
  for (Isa isa : kIsas)
    if (!cpu::isa_available(isa))
      CHECK_THROWS_WITH(cpu::matmul16(y.data(), 8, x.data(), w.data(), DType::BF16, 1, 8, 8, nullptr, false, isa),
                        Contains(cpu::isa_name(isa)) && Contains("not available"));
}

// ---------------------------------------------------------------------------------------------
// Attention on an f16 cache

TEST_CASE("attention over an f16 cache is cpu::attention_head on the widened cache, bit for bit", "[cpu-kernels]") {
  // 6 query heads over 2 kv heads; head_dim 8 (stories260K), 12 (a tail), 64 and 128.
  for (int hd : {8, 12, 64, 128}) {
    const int H = 6, KVH = 2, P = 37, kvd = KVH * hd;
    std::mt19937_64 rng(hd);
    const auto q = gaussian(static_cast<size_t>(H) * hd, 0, 1, rng);
    const auto k16 = to16(DType::F16, gaussian(static_cast<size_t>(P) * kvd, 0, 1, rng));
    const auto v16 = to16(DType::F16, gaussian(static_cast<size_t>(P) * kvd, 0, 1, rng));
    const auto kf = widen(DType::F16, k16), vf = widen(DType::F16, v16);
    std::vector<float> scores(P), want(hd), got(hd);
    for (int h = 0; h < H; ++h) {
      const int kvh = h / (H / KVH);
      for (int n_pos : {1, 2, 9, P}) {
        cpu::attention_head(want.data(), q.data() + h * hd, kf.data() + kvh * hd, vf.data() + kvh * hd, n_pos, kvd,
                            hd, scores.data());
        for (Isa isa : available_isas()) {
          cpu::attention_head_f16(got.data(), q.data() + h * hd, k16.data() + kvh * hd, v16.data() + kvh * hd, n_pos,
                                  kvd, hd, scores.data(), isa);
          INFO("head_dim " << hd << ", head " << h << ", " << n_pos << " positions, " << cpu::isa_name(isa) << ": "
                           << first_difference(got.data(), want.data(), hd));
          REQUIRE(same_bits(got, want));
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// One layer

namespace {

// A model run layer by layer through CpuLayerForward: token_embd rows in, then every layer,
// then the final norm and the classifier in fp32 (as CpuForward). Every token's logits.
struct LayerModel {
  const LlamaWeights& w;
  std::vector<CpuLayerWeights> layers;
  CpuKvCache kv;
  CpuLayerForward fwd;

  LayerModel(const LlamaWeights& weights, std::vector<CpuLayerWeights> l, DType kv_dtype, CpuLayerOptions opt,
             ThreadPool* pool)
      : w(weights), layers(std::move(l)), kv(weights.config.n_layers, opt.context, weights.config.kv_dim(), kv_dtype),
        fwd(weights.config, opt, pool) {}

  std::vector<float> forward(const int* tokens, int n, int pos) {
    // (Gemma: embeddings times sqrt(dim), a (1 + w) final norm, soft-capped logits)
    const LlamaConfig& c = w.config;
    const Architecture& arch = architecture_of(c);
    std::vector<float> x(static_cast<size_t>(n) * c.dim), xn(x.size()), logits(static_cast<size_t>(n) * c.vocab_size);
    for (int t = 0; t < n; ++t)
      std::memcpy(&x[static_cast<size_t>(t) * c.dim], &w.token_embd[static_cast<size_t>(tokens[t]) * c.dim],
                  sizeof(float) * c.dim);
    if (arch.scale_embeddings)
      for (float& v : x) v *= std::sqrt(static_cast<float>(c.dim));
    for (int l = 0; l < c.n_layers; ++l) fwd.forward(l, layers[l], kv.layer(l), x.data(), n, pos);
    const auto norm = arch.norm == NormKind::rms ? cpu::rmsnorm : cpu::rmsnorm_unit_offset;
    for (int t = 0; t < n; ++t)
      norm(&xn[static_cast<size_t>(t) * c.dim], &x[static_cast<size_t>(t) * c.dim], w.output_norm.data(), c.dim,
           c.norm_eps);
    cpu::matmul(logits.data(), c.vocab_size, xn.data(), w.classifier(), n, c.dim, c.vocab_size, nullptr);
    if (c.final_softcap > 0) cpu::softcap(logits.data(), logits.size(), c.final_softcap);
    return logits;
  }
};

std::vector<CpuLayerWeights> f32_layers(const LlamaWeights& w) {
  std::vector<CpuLayerWeights> v;
  for (const auto& L : w.layers) v.push_back(cpu_layer_weights_f32(L));
  return v;
}

// A layer's tensors as dtype t in one buffer laid out like a GPU layer slot: in LayerTensor
// order, each at a 256-byte aligned offset (runtime/weight_schedule.h); roles without data
// (biases a Llama lacks) absent.
struct Slot {
  std::vector<uint8_t> bytes;
  CpuSlotLayout layout;
  CpuLayerWeights weights() const { return cpu_layer_weights_in_slot(bytes.data(), layout); }
};

Slot make_slot(const LlamaLayerWeights& L, DType t) {
  Slot s;
  uint64_t at = 0;
  for (int i = 0; i < kLayerTensors; ++i) {
    const size_t n = layer_vector(L, LayerTensor(i)).size();
    s.layout.present[i] = n > 0;
    s.layout.offset[i] = at;
    s.layout.dtype[i] = t;
    at = (at + n * 2 + 255) / 256 * 256;
  }
  s.bytes.assign(at, 0xFF);  // padding garbage that must never be read as weights
  for (int i = 0; i < kLayerTensors; ++i) {
    const auto h = to16(t, layer_vector(L, LayerTensor(i)));
    if (h.empty()) continue;  // a tensor this family lacks (biases, q/k norms): memcpy needs a real pointer
    std::memcpy(s.bytes.data() + s.layout.offset[i], h.data(), h.size() * 2);
  }
  return s;
}

void round_weights(LlamaWeights& w, DType t) {
  round_in_place(t, w.token_embd);
  round_in_place(t, w.output_norm);
  round_in_place(t, w.output);
  for (auto& L : w.layers)
    for (auto* v : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_norm, &L.w_gate, &L.w_up, &L.w_down})
      round_in_place(t, *v);
}

// Unit-scale outputs: weights of std 1/sqrt(dim) (2x for q and k).
LlamaWeights random_model(const LlamaConfig& c, uint64_t seed) {
  const float s = 1.0f / std::sqrt(static_cast<float>(c.dim));
  return test::random_model(c, seed, 2 * s, s);
}

LlamaWeights load_stories() {
  test::TempDir dir("cllm-cpu-kernels");
  const CllmFile f = CllmFile::open(test::compress_stories(dir, false));
  return load_llama_weights(f, nullptr);
}

}  // namespace

TEST_CASE("a layer with f32 weights and an f32 cache is CpuForward's layer, bit for bit", "[cpu-kernels]") {
  LlamaConfig c = small_config();
  SECTION("interleaved RoPE") {}
  SECTION("neox RoPE, llama3 scaling") {
    c.rope_layout = RopeLayout::neox;
    c.rope_theta = 500000.0f;
    c.rope_scaling = {"llama3", 8.0f, 1.0f, 4.0f, 64, {}, {}, 1.0f};
  }
  SECTION("Mistral's sliding window, shorter than the prompt") {
    c.architecture = "mistral";
    c.sliding_window = 6;
  }
  SECTION("Qwen2's q, k and v biases") { c.architecture = "qwen2"; }
  SECTION("SmolLM3's layers without RoPE") {
    c.architecture = "smollm3";
    c.no_rope_layers = {1};
  }
  SECTION("Qwen3's per-head q and k norms, head_dim not dim / heads") {
    c.architecture = "qwen3";
    c.head_dim *= 2;
  }
  SECTION("Gemma 2: (1 + w) norms, post norms, GeGLU, query scale, softcaps, a window on layer 0 only") {
    c.architecture = "gemma2";
    c.rope_layout = RopeLayout::neox;
    c.sliding_window = 6;
    c.full_attention_layers = {1};
    c.query_pre_attn_scalar = 24;
    c.attn_softcap = 2.0f;
    c.final_softcap = 3.0f;
  }
  SECTION("Gemma 3: q and k norms, the sliding layer's own RoPE base, linear scaling") {
    c.architecture = "gemma3";
    c.rope_layout = RopeLayout::neox;
    c.head_dim *= 2;
    c.sliding_window = 6;
    c.full_attention_layers = {1};
    c.rope_local_theta = 100.0f;
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = 2.0f;
  }
  const LlamaWeights w = random_model(c, 7);
  const auto tokens = random_tokens(23, c.vocab_size, 3);
  CpuForward ref(w, {0, 1, 64});
  const float* want = ref.forward(tokens.data(), 20, 0, true);
  const std::vector<float> want_prompt(want, want + 20 * c.vocab_size);

  // Batches of 8 inside the layer (8 + 8 + 4), then three single tokens.
  LayerModel m(w, f32_layers(w), DType::F32, {c.context_length, 8, cpu::isa_best()}, nullptr);
  const std::vector<float> got = m.forward(tokens.data(), 20, 0);
  INFO(first_difference(got.data(), want_prompt.data(), got.size()));
  CHECK(same_bits(got, want_prompt));
  for (int t = 20; t < 23; ++t) {
    const float* l = ref.forward(&tokens[t], 1, t);
    const std::vector<float> g = m.forward(&tokens[t], 1, t);
    INFO("position " << t);
    CHECK(std::memcmp(g.data(), l, sizeof(float) * c.vocab_size) == 0);
  }
}

TEST_CASE("stories260K rounded to bf16 and f16: the 16-bit layers follow CpuForward", "[cpu-kernels]") {
  // The same rounded weights on both sides; what differs is the GPU engine's numerics on the
  // CPU side: every linear layer's input rounded to the weights' dtype (a relative error of
  // up to 2^-9 per element in bf16, 2^-12 in f16) and keys and values stored in f16. The
  // GPU engine holds a bf16 model's logits to a relative L2 error of 3e-2 against the CPU
  // reference (docs/architecture.md); these layers must meet that. Both run CpuForward's
  // greedy sequence (teacher forcing, so one near-tie cannot derail the rest), and must pick
  // the same token wherever the reference's best two logits are further apart than the
  // largest logit difference between the two (a closer pair is a tie at this precision).
  LlamaWeights w = load_stories();
  const LlamaConfig& c = w.config;
  for (DType t : {DType::BF16, DType::F16}) {
    LlamaWeights wr = w;
    round_weights(wr, t);
    std::vector<Slot> slots;
    std::vector<CpuLayerWeights> layers;
    for (const auto& L : wr.layers) slots.push_back(make_slot(L, t));
    for (const auto& s : slots) layers.push_back(s.weights());
    REQUIRE(layers[0].linear_dtype() == t);
    REQUIRE(cpu_kv_dtype(t) == DType::F16);

    const int n = 200;
    CpuForward ref(wr, {0, 1, 64});
    LayerModel m(wr, layers, cpu_kv_dtype(t), {resolve_context(c, 0), 16, cpu::isa_best()}, nullptr);
    int tok = 1;  // BOS
    double worst = 0;
    int worst_pos = 0, ties = 0;
    for (int pos = 0; pos < n; ++pos) {
      const float* lr = ref.forward(&tok, 1, pos);
      const std::vector<float> lc = m.forward(&tok, 1, pos);
      const double err = test::rel_error(lc.data(), lr, c.vocab_size);
      if (err > worst) worst = err, worst_pos = pos;
      INFO(dtype_name(t) << " position " << pos << ": relative L2 error of the logits " << err);
      REQUIRE(err < 3e-2);
      const int best = test::argmax(lr, c.vocab_size);
      float second = -INFINITY, max_diff = 0;
      for (int i = 0; i < c.vocab_size; ++i) {
        if (i != best) second = std::max(second, lr[i]);
        max_diff = std::max(max_diff, std::abs(lc[i] - lr[i]));
      }
      if (lr[best] - second > 2 * max_diff) REQUIRE(test::argmax(lc.data(), c.vocab_size) == best);
      else ++ties;
      tok = best;
    }
    std::fprintf(stderr,
                 "test-cpu-kernels: stories260K %s on %s, %d positions: logits rel. L2 error <= %.2e (position %d), "
                 "%d near-ties\n",
                 dtype_name(t), cpu::isa_name(cpu::isa_best()), n, worst, worst_pos, ties);
  }
}

TEST_CASE("the bf16 Mistral, Qwen2, Qwen3, SmolLM3, Phi-3 and Gemma fixtures: 16-bit layers give transformers' "
          "greedy tokens", "[cpu-kernels]") {
  // The layers the hybrid GPU runtime runs on the CPU, with the GPU engine's numerics (inputs
  // of the products rounded to bf16, f16 keys and values), read from slots laid out as the
  // GPU's: a sliding window (Mistral), q, k, v biases in bf16 (Qwen2), q and k norms (Qwen3), a
  // layer without RoPE (SmolLM3), partial rotary and LongRoPE (Phi-3), Gemma 2's (1 + w) and post
  // norms, GeGLU and softcaps, Gemma 3's local RoPE base. Logits within the
  // GPU's 3e-2 of the fp32 reference, and transformers' greedy tokens (its fp32 run).
  test::TempDir dir("cllm-cpu-kernels");
  for (const char* name : {"hf-mistral-bf16-swa-tied", "hf-qwen2-bf16-tied", "hf-qwen3-bf16-tied",
                           "hf-smollm3-bf16-nope-tied", "hf-phi3-bf16-longrope-gqa", "hf-gemma2-bf16-softcap-tied",
                           "hf-gemma3-bf16-gqa"}) {
    INFO("fixture " << name);
    const auto expected = nlohmann::json::parse(read_text_file(test::fixture_dir(name) + "/expected.json"));
    const std::string path = dir.file(std::string(name) + ".cllm");
    compress_model(open_source_model(test::fixture_dir(name)), path, CompressOptions{});
    const LlamaWeights w = load_llama_weights(CllmFile::open(path), nullptr);  // bf16 values, widened
    std::vector<Slot> slots;
    std::vector<CpuLayerWeights> layers;
    for (const auto& L : w.layers) slots.push_back(make_slot(L, DType::BF16));
    for (const auto& sl : slots) layers.push_back(sl.weights());
    REQUIRE(layers[0].has_qkv_bias() == (std::string(name) == "hf-qwen2-bf16-tied"));
    REQUIRE(layers[0].has_qk_norm() == (std::string(name) == "hf-qwen3-bf16-tied" || std::string(name) == "hf-gemma3-bf16-gqa"));
    REQUIRE(layers[0].has_post_norms() == (std::string(name).compare(0, 8, "hf-gemma") == 0));
    const int vocab = w.config.vocab_size;
    for (size_t k = 0; k < expected.at("prompts").size(); ++k) {
      INFO("prompt " << k);
      const auto prompt = expected["prompts"][k].get<std::vector<int>>();
      const auto want = expected["greedy"][k].get<std::vector<int>>();
      CpuForward ref(w, {64, 1, 64});
      LayerModel m(w, layers, DType::F16, {64, 5, cpu::isa_best()}, nullptr);  // batches of 5 in the layer
      std::vector<float> got = m.forward(prompt.data(), static_cast<int>(prompt.size()), 0);
      got.erase(got.begin(), got.end() - vocab);  // the last token's row
      const float* lr = ref.forward(prompt.data(), static_cast<int>(prompt.size()), 0);
      std::vector<int> tokens;
      int pos = static_cast<int>(prompt.size());
      while (tokens.size() < want.size()) {
        CHECK(test::rel_error(got.data(), lr, vocab) < 3e-2);
        tokens.push_back(test::argmax(got.data(), vocab));
        got = m.forward(&tokens.back(), 1, pos);
        lr = ref.forward(&tokens.back(), 1, pos++);
      }
      CHECK(tokens == want);
    }
  }
}

TEST_CASE("a 16-bit layer: the same bits for any thread count and batching, ISAs within a bound", "[cpu-kernels]") {
  // Wide enough for the pool to run the products and the attention (cpu_ops.cpp's threshold).
  LlamaConfig c = small_config();
  c.dim = 512;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.head_dim = 64;
  c.ffn_dim = 1024;
  c.vocab_size = 300;
  c.context_length = 64;
  c.rope_layout = RopeLayout::neox;
  const LlamaWeights w0 = random_model(c, 33);
  for (DType t : {DType::BF16, DType::F16}) {
    LlamaWeights w = w0;
    round_weights(w, t);
    std::vector<Slot> slots;
    for (const auto& L : w.layers) slots.push_back(make_slot(L, t));
    std::vector<CpuLayerWeights> layers;
    for (const auto& s : slots) layers.push_back(s.weights());
    const auto tokens = random_tokens(40, c.vocab_size, 8);

    const auto run = [&](Isa isa, int threads, int batch, bool one_by_one) {
      ThreadPool pool(threads);
      LayerModel m(w, layers, DType::F16, {c.context_length, batch, isa}, &pool);
      std::vector<float> out;
      if (one_by_one) {
        for (int i = 0; i < 40; ++i) {
          const auto l = m.forward(&tokens[i], 1, i);
          out.insert(out.end(), l.begin(), l.end());
        }
      } else {
        out = m.forward(tokens.data(), 36, 0);  // a prompt, then single tokens
        for (int i = 36; i < 40; ++i) {
          const auto l = m.forward(&tokens[i], 1, i);
          out.insert(out.end(), l.begin(), l.end());
        }
      }
      return out;
    };
    const std::vector<float> base = run(Isa::scalar, 1, 16, false);
    for (Isa isa : available_isas()) {
      INFO(dtype_name(t) << " on " << cpu::isa_name(isa));
      const std::vector<float> a = run(isa, 1, 16, false);
      CHECK(same_bits(run(isa, 3, 16, false), a));
      CHECK(same_bits(run(isa, 2, 5, false), a));
      CHECK(same_bits(run(isa, 2, 16, true), a));
      if (isa == Isa::scalar) {
        CHECK(same_bits(a, base));
      } else {
        // Attention (cpu_attention.h) rounds differently on each ISA (FMA, 8 or 16 lanes, a
        // polynomial exp; within 5e-6 of max |v| of the scalar oracle, test-cpu-attention),
        // and so does vdpbf16ps for bf16 products. Each difference is an fp32 rounding, but the
        // next product rounds its input to bf16 (or f16), and a difference that moves an input
        // across a rounding boundary changes it by one ulp of that type (2^-8 in bf16).
        // Measured: 7.4e-4 over 40 tokens with vdpbf16ps (H200 host); here, see the warning.
        const double e = test::rel_error(a.data(), base.data(), a.size());
        WARN(dtype_name(t) << " on " << cpu::isa_name(isa) << ": relative L2 error " << e << " against scalar");
        CHECK(e < 4e-3);
      }
    }
  }
}

TEST_CASE("the CPU layer refuses bad positions, caches and weights with a message", "[cpu-kernels]") {
  const LlamaConfig c = small_config();
  LlamaWeights w = random_model(c, 5);
  round_weights(w, DType::BF16);
  const Slot s = make_slot(w.layers[0], DType::BF16);
  CpuLayerForward fwd(c, {16, 4, cpu::isa_best()}, nullptr);
  CpuKvCache kv(1, 16, c.kv_dim(), DType::F16);
  std::vector<float> x(static_cast<size_t>(4) * c.dim, 0.5f);

  CHECK_THROWS_WITH(fwd.forward(0, s.weights(), kv.layer(0), x.data(), 2, 15),
                    Contains("positions 15..16 do not fit the context of 16 tokens"));
  CpuKvCache small(1, 8, c.kv_dim(), DType::F16);
  CHECK_THROWS_WITH(fwd.forward(0, s.weights(), small.layer(0), x.data(), 2, 7),
                    Contains("do not fit the KV cache of 8 positions"));
  CHECK_THROWS_WITH(kv.layer(1), Contains("layer 1 of 1"));
  CHECK_THROWS_WITH(CpuKvCache(1, 8, c.kv_dim(), DType::BF16), Contains("dtype bf16, expected f16 or f32"));

  CpuLayerWeights missing = s.weights();
  missing.w_up.data = nullptr;
  CHECK_THROWS_WITH(fwd.forward(0, missing, kv.layer(0), x.data(), 1, 0), Contains("tensor 'ffn_up' has no data"));
  CpuLayerWeights mixed = s.weights();
  mixed.wo.dtype = DType::F16;
  CHECK_THROWS_WITH(fwd.forward(0, mixed, kv.layer(0), x.data(), 1, 0),
                    Contains("tensor 'attn_output' is f16 but 'attn_q' is bf16"));
  CpuLayerWeights bytes = s.weights();
  bytes.ffn_norm.dtype = DType::U8;
  CHECK_THROWS_WITH(fwd.forward(0, bytes, kv.layer(0), x.data(), 1, 0),
                    Contains("tensor 'ffn_norm' is u8, expected f32, f16 or bf16"));
}
