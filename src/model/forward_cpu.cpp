#include "model/forward_cpu.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "model/cpu_attention.h"

namespace cllm {

namespace {

// y (n, d) += b (d), row by row: a projection's bias (Qwen2's q, k and v).
void add_bias(float* y, const std::vector<float>& b, int n) {
  const size_t d = b.size();
  for (int t = 0; t < n; ++t)
    for (size_t i = 0; i < d; ++i) y[t * d + i] += b[i];
}

}  // namespace

int resolve_context(const LlamaConfig& c, int requested) {
  if (requested < 0) fail("context size ", requested, " must be positive");
  if (requested == 0) return std::min(c.context_length, 4096);
  if (requested > c.context_length)
    fail_with({Remedy::context_at_most, std::to_string(c.context_length)}, "context size ", requested,
              " is larger than the model's context length ", c.context_length);
  return requested;
}

CpuForward::CpuForward(const LlamaWeights& weights, const CpuForwardOptions& opt)
    : w_(weights), arch_(architecture_of(weights.config)), context_(resolve_context(weights.config, opt.context)), pool_(std::max(1, opt.threads)) {
  const LlamaConfig& c = w_.config;
  w_.check();
  if (opt.max_batch < 1) fail("max_batch must be >= 1, found ", opt.max_batch);
  // The score buffer is (batch, n_heads, context): cap the batch so it stays under 256 MiB
  // at long contexts; smaller batches change speed, never results.
  const size_t score_rows_cap = (size_t{64} << 20) / (static_cast<size_t>(c.n_heads) * context_);
  s_.batch = static_cast<int>(std::clamp<size_t>(score_rows_cap, 1, static_cast<size_t>(opt.max_batch)));

  const size_t B = s_.batch, dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim();
  s_.x.resize(B * dim);
  s_.xb.resize(B * std::max(dim, qd));
  s_.xb2.resize(B * dim);
  s_.q.resize(B * qd);
  s_.hb.resize(B * c.ffn_dim);
  s_.hb2.resize(B * c.ffn_dim);
  s_.key_cache.resize(static_cast<size_t>(c.n_layers) * context_ * kvd);
  s_.value_cache.resize(s_.key_cache.size());
  rope_ = cpu::model_rope_table(c, context_);
}

const float* CpuForward::forward(const int* tokens, int n, int pos, bool all_logits) {
  const LlamaConfig& c = w_.config;
  if (n < 1) fail("forward: no tokens");
  if (pos < 0 || pos + n > context_)
    fail("forward: positions ", pos, "..", pos + n - 1, " do not fit the context of ", context_, " tokens");
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      fail("forward: token id ", tokens[i], " out of range (vocabulary of ", c.vocab_size, ")");
  s_.logits.resize(static_cast<size_t>(all_logits ? n : 1) * c.vocab_size);
  for (int b = 0; b < n; b += s_.batch) {
    const int nb = std::min(s_.batch, n - b);
    float* out = nullptr;  // logits only where asked: every batch's, or the last batch's last row
    if (all_logits) out = s_.logits.data() + static_cast<size_t>(b) * c.vocab_size;
    else if (b + nb == n) out = s_.logits.data();
    forward_batch(tokens + b, nb, pos + b, out, all_logits);
  }
  return s_.logits.data();
}

void CpuForward::norm(float* out, const float* x, const float* w, int n) const {
  // out (n, dim) = norm(x) * w, row by row
  const LlamaConfig& c = w_.config;
  switch (arch_.norm) {
    case NormKind::rms:
      for (int t = 0; t < n; ++t)
        cpu::rmsnorm(out + static_cast<size_t>(t) * c.dim, x + static_cast<size_t>(t) * c.dim, w, c.dim, c.norm_eps);
      return;
  }
}

void CpuForward::forward_batch(const int* tokens, int n, int pos, float* logits, bool all_rows) {
  const LlamaConfig& c = w_.config;
  const int dim = c.dim;
  float* x = s_.x.data();
  float* xb = s_.xb.data();

  // x[t] = token_embd[token t]
  for (int t = 0; t < n; ++t)
    std::memcpy(x + static_cast<size_t>(t) * dim, w_.token_embd.data() + static_cast<size_t>(tokens[t]) * dim,
                sizeof(float) * dim);
  for (int l = 0; l < c.n_layers; ++l) {
    attention_block(l, n, pos);
    ffn_block(l, n);
  }
  if (!logits) return;

  // final norm and the classifier, for every token or only the last
  const int first = all_rows ? 0 : n - 1;
  const int rows = n - first;
  norm(xb, x + static_cast<size_t>(first) * dim, w_.output_norm.data(), rows);
  cpu::matmul(logits, c.vocab_size, xb, w_.classifier(), rows, dim, c.vocab_size, &pool_);
}

void CpuForward::attention_block(int l, int n, int pos) {
  // x += wo . attention(rope(wq xb + bq), rope(wk xb + bk), wv xb + bv),  xb = norm(x) * attn_norm
  // (biases, and per-head norms of q and k before RoPE, only where the architecture has them)
  const LlamaConfig& c = w_.config;
  const LlamaLayerWeights& L = w_.layers[l];
  const int dim = c.dim, hd = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim();
  const size_t ctx = context_;
  ThreadPool* pool = &pool_;
  float* x = s_.x.data();
  float* xb = s_.xb.data();
  float* xb2 = s_.xb2.data();
  float* q = s_.q.data();
  float* k_layer = s_.key_cache.data() + l * ctx * kvd;    // (context, kv_dim)
  float* v_layer = s_.value_cache.data() + l * ctx * kvd;
  float* k_new = k_layer + static_cast<size_t>(pos) * kvd;  // rows of this batch's positions
  float* v_new = v_layer + static_cast<size_t>(pos) * kvd;

  norm(xb, x, L.attn_norm.data(), n);
  // q, k, v projections; k and v land directly in the KV cache
  cpu::matmul(q, qd, xb, L.wq.data(), n, dim, qd, pool);
  cpu::matmul(k_new, kvd, xb, L.wk.data(), n, dim, kvd, pool);
  cpu::matmul(v_new, kvd, xb, L.wv.data(), n, dim, kvd, pool);
  if (arch_.has(kAttnQBias)) {
    add_bias(q, L.bq, n);
    add_bias(k_new, L.bk, n);
    add_bias(v_new, L.bv, n);
  }
  if (arch_.has(kAttnQNorm)) {  // each head of q and k normed over its head_dim values
    for (int i = 0; i < n * c.n_heads; ++i) cpu::rmsnorm(q + i * hd, q + i * hd, L.q_norm.data(), hd, c.norm_eps);
    for (int i = 0; i < n * c.n_kv_heads; ++i)
      cpu::rmsnorm(k_new + i * hd, k_new + i * hd, L.k_norm.data(), hd, c.norm_eps);
  }
  // RoPE: rotate q and k by each token's position (not in the config's no_rope_layers)
  for (int t = 0; t < n && c.uses_rope(l); ++t) {
    const float* cs = rope_.cos_at(pos + t);
    const float* sn = rope_.sin_at(pos + t);
    cpu::rope(q + t * qd, c.n_heads, hd, c.rope_layout, cs, sn, c.rotary_dim());
    cpu::rope(k_new + t * kvd, c.n_kv_heads, hd, c.rope_layout, cs, sn, c.rotary_dim());
  }
  // causal attention: token t sees positions 0 .. pos+t; query head h reads kv head
  // h / (n_heads / n_kv_heads) (GQA)
  cpu::attention(cpu::layer_attention_args(c, xb, q, k_layer, v_layer, DType::F32, n, pos), pool);
  // output projection, then the residual
  cpu::matmul(xb2, dim, xb, L.wo.data(), n, qd, dim, pool);
  for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x[i] += xb2[i];
}

void CpuForward::ffn_block(int l, int n) {
  // x += w_down (silu(w_gate xb) * (w_up xb)),  xb = norm(x) * ffn_norm
  const LlamaConfig& c = w_.config;
  const LlamaLayerWeights& L = w_.layers[l];
  const int dim = c.dim, ffn = c.ffn_dim;
  ThreadPool* pool = &pool_;
  float* x = s_.x.data();
  float* xb = s_.xb.data();
  float* xb2 = s_.xb2.data();
  float* hb = s_.hb.data();
  float* hb2 = s_.hb2.data();
  norm(xb, x, L.ffn_norm.data(), n);
  CLLM_CHECK(arch_.ffn == FfnKind::swiglu, "the CPU engine has no code for this feed-forward");
  cpu::matmul(hb, ffn, xb, L.w_gate.data(), n, dim, ffn, pool);
  cpu::matmul(hb2, ffn, xb, L.w_up.data(), n, dim, ffn, pool);
  cpu::swiglu(hb, hb2, static_cast<size_t>(n) * ffn);
  cpu::matmul(xb2, dim, hb, L.w_down.data(), n, ffn, dim, pool);
  for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x[i] += xb2[i];
}

}  // namespace cllm
