#include "convert/synth_tensors.h"

#include <algorithm>
#include <cmath>

#include "common/dtype.h"
#include "convert/synth.h"

namespace cllm {

uint64_t SynthTensor::elems() const {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::vector<SynthTensor> synth_tensors(const nlohmann::json& c) {
  const uint64_t dim = c.at("hidden_size"), ffn = c.at("intermediate_size"), vocab = c.at("vocab_size");
  const uint64_t heads = c.at("num_attention_heads"), kv = c.value("num_key_value_heads", heads);
  const uint64_t head_dim = c.value("head_dim", dim / heads);
  const int layers = c.at("num_hidden_layers");
  std::vector<SynthTensor> t;
  t.push_back({"model.embed_tokens.weight", {vocab, dim}, false});
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {dim}, true});
    t.push_back({p + "self_attn.q_proj.weight", {heads * head_dim, dim}, false});
    t.push_back({p + "self_attn.k_proj.weight", {kv * head_dim, dim}, false});
    t.push_back({p + "self_attn.v_proj.weight", {kv * head_dim, dim}, false});
    t.push_back({p + "self_attn.o_proj.weight", {dim, heads * head_dim}, false});
    t.push_back({p + "post_attention_layernorm.weight", {dim}, true});
    t.push_back({p + "mlp.gate_proj.weight", {ffn, dim}, false});
    t.push_back({p + "mlp.up_proj.weight", {ffn, dim}, false});
    t.push_back({p + "mlp.down_proj.weight", {dim, ffn}, false});
  }
  t.push_back({"model.norm.weight", {dim}, true});
  if (!c.value("tie_word_embeddings", false)) t.push_back({"lm_head.weight", {vocab, dim}, false});
  return t;
}

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;  // splitmix64's increment

// splitmix64: its state advances by kGolden a call, so the k-th draw of a stream is reachable
// without drawing the ones before it.
uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += kGolden);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Elements [first, first + n) of the Box-Muller sequence fill_gaussian_bf16 writes from seed:
// pair p (elements 2p, 2p + 1) uses the stream's draws 2p and 2p + 1.
void fill_gaussian_bf16_range(uint16_t* out, uint64_t first, uint64_t n, double mean, double stddev, uint64_t seed) {
  uint64_t s = seed + (first / 2) * 2 * kGolden;
  for (uint64_t e = first - first % 2; e < first + n; e += 2) {
    const double u1 = (static_cast<double>(splitmix64(s) >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(splitmix64(s) >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1)) * stddev;
    if (e >= first) out[e - first] = f32_to_bf16(static_cast<float>(mean + r * std::cos(2.0 * M_PI * u2)));
    if (e + 1 < first + n) out[e + 1 - first] = f32_to_bf16(static_cast<float>(mean + r * std::sin(2.0 * M_PI * u2)));
  }
}

// The stream of tensor `index`'s block `block`.
uint64_t block_seed(uint64_t seed, size_t index, uint64_t block) {
  uint64_t s = seed * 0x100000001B3ull + index;
  return splitmix64(s) + block;
}

}  // namespace

void fill_gaussian_bf16(uint16_t* out, size_t n, double mean, double stddev, uint64_t seed) {
  fill_gaussian_bf16_range(out, 0, n, mean, stddev, seed);
}

void fill_synth_values(const SynthTensor& t, size_t index, uint64_t seed, double weight_std, uint64_t first,
                       uint64_t n, uint16_t* out) {
  const double mean = t.norm ? 1.0 : 0.0, stddev = t.norm ? 0.05 : weight_std;
  for (uint64_t e = first; e < first + n;) {
    const uint64_t block = e / kSynthBlockElems, in_block = e % kSynthBlockElems;
    const uint64_t len = std::min(kSynthBlockElems - in_block, first + n - e);
    fill_gaussian_bf16_range(out + (e - first), in_block, len, mean, stddev, block_seed(seed, index, block));
    e += len;
  }
}

}  // namespace cllm
