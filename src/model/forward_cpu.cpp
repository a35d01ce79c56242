#include "model/forward_cpu.h"

#include <algorithm>
#include <cmath>
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
    : w_(weights), arch_(architecture_of(weights.config)), context_(resolve_context(weights.config, opt.context)),
      sequences_(opt.sequences), pool_(std::max(1, opt.threads)) {
  const LlamaConfig& c = w_.config;
  w_.check();
  if (opt.max_batch < 1) fail("max_batch must be >= 1, found ", opt.max_batch);
  if (opt.sequences < 1) fail("sequences must be >= 1, found ", opt.sequences);
  // The score buffer is (batch, n_heads, context): cap the batch so it stays under 256 MiB
  // at long contexts; smaller batches change speed, never results.
  const size_t score_rows_cap = (size_t{64} << 20) / (static_cast<size_t>(c.n_heads) * context_);
  s_.batch = static_cast<int>(std::clamp<size_t>(score_rows_cap, 1, static_cast<size_t>(opt.max_batch)));

  const size_t B = s_.batch, dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim();
  s_.x.resize(B * dim);
  s_.xb.resize(B * std::max(dim, qd));
  s_.xb2.resize(B * dim);
  s_.q.resize(B * qd);
  s_.k.resize(B * kvd);
  s_.v.resize(B * kvd);
  s_.hb.resize(B * c.ffn_dim);
  s_.hb2.resize(B * c.ffn_dim);
  s_.key_cache.resize(static_cast<size_t>(c.n_layers) * sequences_ * context_ * kvd);
  s_.value_cache.resize(s_.key_cache.size());
  rope_ = cpu::model_rope_table(c, context_);
  if (c.rope_local_theta > 0) rope_local_ = cpu::model_rope_table(c, context_, true);
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
    const BatchSegment seg{0, pos + b, nb};
    run_batch(tokens + b, &seg, 1, out, all_logits);
  }
  return s_.logits.data();
}

const float* CpuForward::forward_batch(const int* tokens, const BatchSegment* segs, int n_segs) {
  check_batch(tokens, segs, n_segs, sequences_, context_, s_.batch, w_.config.vocab_size);
  s_.logits.resize(static_cast<size_t>(n_segs) * w_.config.vocab_size);
  run_batch(tokens, segs, n_segs, s_.logits.data(), false);
  return s_.logits.data();
}

void CpuForward::norm(float* out, const float* x, const float* w, int n, int width) const {
  // out (n, width) = norm(x) * w (or * (1 + w)), row by row; width 0: dim
  const LlamaConfig& c = w_.config;
  const size_t d = width > 0 ? width : c.dim;
  for (int t = 0; t < n; ++t) {
    switch (arch_.norm) {
      case NormKind::rms: cpu::rmsnorm(out + t * d, x + t * d, w, static_cast<int>(d), c.norm_eps); break;
      case NormKind::rms_unit_offset:
        cpu::rmsnorm_unit_offset(out + t * d, x + t * d, w, static_cast<int>(d), c.norm_eps);
        break;
    }
  }
}

void CpuForward::add_residual(const float* y, float* post, const float* post_norm_w, int n) {
  // x += y, or x += norm(y) * post_norm_w where the architecture norms a block's output (Gemma)
  const size_t count = static_cast<size_t>(n) * w_.config.dim;
  if (post_norm_w) {
    norm(post, y, post_norm_w, n);
    y = post;
  }
  float* x = s_.x.data();
  for (size_t i = 0; i < count; ++i) x[i] += y[i];
}

void CpuForward::run_batch(const int* tokens, const BatchSegment* segs, int n_segs, float* logits, bool all_rows) {
  const LlamaConfig& c = w_.config;
  const int dim = c.dim;
  float* x = s_.x.data();
  float* xb = s_.xb.data();
  int n = 0;  // the batch's rows: the segments' tokens in order
  for (int i = 0; i < n_segs; ++i) n += segs[i].n;

  // x[t] = token_embd[token t]
  for (int t = 0; t < n; ++t)
    std::memcpy(x + static_cast<size_t>(t) * dim, w_.token_embd.data() + static_cast<size_t>(tokens[t]) * dim,
                sizeof(float) * dim);
  if (arch_.scale_embeddings) {  // Gemma: times sqrt(dim), in fp32 as transformers computing in fp32
    const float scale = std::sqrt(static_cast<float>(dim));
    for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x[i] *= scale;
  }
  for (int l = 0; l < c.n_layers; ++l) {
    attention_block(l, segs, n_segs, n);
    ffn_block(l, n);
  }
  if (!logits) return;

  // final norm and the classifier, for every row or each segment's last row (row by row:
  // a row's norm and products do not depend on the others)
  int rows = n;
  if (all_rows) {
    norm(xb, x, w_.output_norm.data(), n);
  } else {
    rows = n_segs;
    for (int i = 0, end = 0; i < n_segs; ++i) {
      end += segs[i].n;
      norm(xb + static_cast<size_t>(i) * dim, x + static_cast<size_t>(end - 1) * dim, w_.output_norm.data(), 1);
    }
  }
  cpu::matmul(logits, c.vocab_size, xb, w_.classifier(), rows, dim, c.vocab_size, &pool_);
  if (c.final_softcap > 0) cpu::softcap(logits, static_cast<size_t>(rows) * c.vocab_size, c.final_softcap);
}

void CpuForward::attention_block(int l, const BatchSegment* segs, int n_segs, int n) {
  // x += wo . attention(rope(wq xb + bq), rope(wk xb + bk), wv xb + bv),  xb = norm(x) * attn_norm
  // (biases, and per-head norms of q and k before RoPE, only where the architecture has them).
  // The products, biases and norms run over the batch's n rows; RoPE, the cache writes and
  // attention per segment, at its positions in its sequence's region.
  const LlamaConfig& c = w_.config;
  const LlamaLayerWeights& L = w_.layers[l];
  const int dim = c.dim, hd = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim();
  const size_t region = static_cast<size_t>(context_) * kvd;  // one sequence's rows of a layer
  ThreadPool* pool = &pool_;
  float* x = s_.x.data();
  float* xb = s_.xb.data();
  float* xb2 = s_.xb2.data();
  float* q = s_.q.data();
  float* k = s_.k.data();
  float* v = s_.v.data();

  norm(xb, x, L.attn_norm.data(), n);
  cpu::matmul(q, qd, xb, L.wq.data(), n, dim, qd, pool);
  cpu::matmul(k, kvd, xb, L.wk.data(), n, dim, kvd, pool);
  cpu::matmul(v, kvd, xb, L.wv.data(), n, dim, kvd, pool);
  if (arch_.has(kAttnQBias)) {
    add_bias(q, L.bq, n);
    add_bias(k, L.bk, n);
    add_bias(v, L.bv, n);
  }
  if (arch_.has(kAttnQNorm)) {  // each head of q and k normed over its head_dim values
    norm(q, q, L.q_norm.data(), n * c.n_heads, hd);
    norm(k, k, L.k_norm.data(), n * c.n_kv_heads, hd);
  }
  const cpu::RopeTable& rope = c.uses_local_rope(l) ? rope_local_ : rope_;
  for (int i = 0, at = 0; i < n_segs; at += segs[i].n, ++i) {
    const BatchSegment& sg = segs[i];
    float* k_layer = s_.key_cache.data() + (static_cast<size_t>(l) * sequences_ + sg.seq) * region;  // (context, kv_dim)
    float* v_layer = s_.value_cache.data() + (static_cast<size_t>(l) * sequences_ + sg.seq) * region;
    float* qs = q + static_cast<size_t>(at) * qd;
    float* ks = k + static_cast<size_t>(at) * kvd;
    // RoPE: rotate q and k by each token's position (not in the config's no_rope_layers), with
    // the windowed layers' own table where the model has one (Gemma 3)
    if (c.uses_rope(l)) cpu::rope_tokens(qs, ks, sg.n, sg.pos, c, rope);
    // the segment's keys and values into its region at its positions
    std::memcpy(k_layer + static_cast<size_t>(sg.pos) * kvd, ks, sizeof(float) * sg.n * kvd);
    std::memcpy(v_layer + static_cast<size_t>(sg.pos) * kvd, v + static_cast<size_t>(at) * kvd,
                sizeof(float) * sg.n * kvd);
    // causal attention: token t sees positions 0 .. pos+t of its sequence; query head h reads
    // kv head h / (n_heads / n_kv_heads) (GQA)
    cpu::attention(cpu::layer_attention_args(c, l, xb + static_cast<size_t>(at) * qd, qs, k_layer, v_layer,
                                             DType::F32, sg.n, sg.pos),
                   pool);
  }
  // output projection, then the residual
  cpu::matmul(xb2, dim, xb, L.wo.data(), n, qd, dim, pool);
  add_residual(xb2, xb, arch_.has(kAttnPostNorm) ? L.attn_post_norm.data() : nullptr, n);
}

void CpuForward::ffn_block(int l, int n) {
  // x += w_down (act(w_gate xb) * (w_up xb)),  xb = norm(x) * ffn_norm; act silu (SwiGLU) or
  // gelu (GeGLU); Gemma norms the sum before the residual
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
  cpu::matmul(hb, ffn, xb, L.w_gate.data(), n, dim, ffn, pool);
  cpu::matmul(hb2, ffn, xb, L.w_up.data(), n, dim, ffn, pool);
  switch (arch_.ffn) {
    case FfnKind::swiglu: cpu::swiglu(hb, hb2, static_cast<size_t>(n) * ffn); break;
    case FfnKind::geglu_tanh: cpu::geglu_tanh(hb, hb2, static_cast<size_t>(n) * ffn); break;
  }
  cpu::matmul(xb2, dim, hb, L.w_down.data(), n, ffn, dim, pool);
  add_residual(xb2, xb, arch_.has(kFfnPostNorm) ? L.ffn_post_norm.data() : nullptr, n);
}

}  // namespace cllm
