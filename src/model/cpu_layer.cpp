#include "model/cpu_layer.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/host_memory.h"

namespace cllm {

namespace {

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// Elementwise work in chunks, so that SwiGLU's exponentials spread over the pool.
constexpr size_t kElemsPerItem = 4096;

}  // namespace

CpuLayerMemory allocate_cpu_layer_memory(uint64_t bytes) {
  CpuLayerMemory p = allocate_huge_page_memory(bytes);
  if (!p) fail("could not allocate ", bytes, " bytes of host memory for a CPU layer");
  return p;
}

void CpuLayerWeights::check() const {
  const std::pair<const char*, const CpuTensor*> tensors[] = {
      {"attn_norm", &attn_norm}, {"attn_q", &wq},        {"attn_k", &wk},      {"attn_v", &wv},
      {"attn_output", &wo},      {"ffn_norm", &ffn_norm}, {"ffn_gate", &w_gate}, {"ffn_up", &w_up},
      {"ffn_down", &w_down}};
  if ((bq.data != nullptr) != (bk.data != nullptr) || (bq.data != nullptr) != (bv.data != nullptr))
    fail("CPU layer: the q, k and v biases come together (found q ", bq.data ? "with" : "without", ", k ",
         bk.data ? "with" : "without", ", v ", bv.data ? "with" : "without", ")");
  if ((q_norm.data != nullptr) != (k_norm.data != nullptr))
    fail("CPU layer: the q and k norms come together (found ", q_norm.data ? "q's only" : "k's only", ")");
  if ((attn_post_norm.data != nullptr) != (ffn_post_norm.data != nullptr))
    fail("CPU layer: the post norms come together (found ", attn_post_norm.data ? "attention's only" : "FFN's only",
         ")");
  for (const auto& [name, b] : {std::pair{"attn_q.bias", &bq}, {"attn_k.bias", &bk}, {"attn_v.bias", &bv},
                                {"attn_q_norm", &q_norm}, {"attn_k_norm", &k_norm},
                                {"post_attention_norm", &attn_post_norm}, {"post_ffw_norm", &ffn_post_norm}})
    if (b->data && !is_float(b->dtype)) fail("CPU layer: tensor '", name, "' is ", dtype_name(b->dtype), ", expected f32, f16 or bf16");
  for (const auto& [name, t] : tensors) {
    if (!t->data) fail("CPU layer: tensor '", name, "' has no data");
    if (!is_float(t->dtype)) fail("CPU layer: tensor '", name, "' is ", dtype_name(t->dtype), ", expected f32, f16 or bf16");
    const bool norm = t == &attn_norm || t == &ffn_norm;
    if (!norm && t->dtype != wq.dtype)
      fail("CPU layer: tensor '", name, "' is ", dtype_name(t->dtype), " but 'attn_q' is ", dtype_name(wq.dtype),
           ": all linear layers must share one dtype");
  }
}

CpuLayerWeights cpu_layer_weights_by_role(const std::array<CpuTensor, kLayerTensors>& t) {
  CpuLayerWeights w;
  w.attn_norm = t[kAttnNorm];
  w.wq = t[kAttnQ];
  w.wk = t[kAttnK];
  w.wv = t[kAttnV];
  w.wo = t[kAttnOutput];
  w.ffn_norm = t[kFfnNorm];
  w.w_gate = t[kFfnGate];
  w.w_up = t[kFfnUp];
  w.w_down = t[kFfnDown];
  w.bq = t[kAttnQBias];
  w.bk = t[kAttnKBias];
  w.bv = t[kAttnVBias];
  w.q_norm = t[kAttnQNorm];
  w.k_norm = t[kAttnKNorm];
  w.attn_post_norm = t[kAttnPostNorm];
  w.ffn_post_norm = t[kFfnPostNorm];
  return w;
}

CpuLayerWeights cpu_layer_weights_in_slot(const void* slot, const CpuSlotLayout& layout) {
  const auto* base = static_cast<const uint8_t*>(slot);
  std::array<CpuTensor, kLayerTensors> t;
  for (int r = 0; r < kLayerTensors; ++r)
    t[r] = layout.present[r] ? CpuTensor{base + layout.offset[r], layout.dtype[r]} : CpuTensor{nullptr, DType::F32};
  return cpu_layer_weights_by_role(t);
}

CpuLayerWeights cpu_layer_weights_f32(const LlamaLayerWeights& L) {
  const auto f = [](const std::vector<float>& v) { return CpuTensor{v.data(), DType::F32}; };
  CpuLayerWeights w;
  w.attn_norm = f(L.attn_norm);
  w.wq = f(L.wq);
  w.wk = f(L.wk);
  w.wv = f(L.wv);
  w.wo = f(L.wo);
  w.ffn_norm = f(L.ffn_norm);
  w.w_gate = f(L.w_gate);
  w.w_up = f(L.w_up);
  w.w_down = f(L.w_down);
  if (!L.bq.empty()) {
    w.bq = f(L.bq);
    w.bk = f(L.bk);
    w.bv = f(L.bv);
  }
  if (!L.q_norm.empty()) {
    w.q_norm = f(L.q_norm);
    w.k_norm = f(L.k_norm);
  }
  if (!L.attn_post_norm.empty()) {
    w.attn_post_norm = f(L.attn_post_norm);
    w.ffn_post_norm = f(L.ffn_post_norm);
  }
  return w;
}

DType cpu_kv_dtype(DType linear_dtype) { return linear_dtype == DType::F32 ? DType::F32 : DType::F16; }

CpuKvCache::CpuKvCache(int n_layers, int context, int kv_dim, DType dtype)
    : n_layers_(n_layers), context_(context), dtype_(dtype) {
  CLLM_CHECK(dtype == DType::F16 || dtype == DType::F32, "CPU KV cache: dtype ", dtype_name(dtype),
             ", expected f16 or f32");
  CLLM_CHECK(n_layers >= 0 && context >= 1 && kv_dim >= 1, "CPU KV cache: ", n_layers, " layers, context ", context,
             ", kv_dim ", kv_dim, " (context and kv_dim must be >= 1)");
  array_bytes_ = static_cast<size_t>(context) * kv_dim * dtype_size(dtype);
  data_.resize(2 * array_bytes_ * n_layers);
}

CpuKvLayer CpuKvCache::layer(int i) {
  CLLM_CHECK(i >= 0 && i < n_layers_, "CPU KV cache: layer ", i, " of ", n_layers_);
  uint8_t* k = data_.data() + 2 * array_bytes_ * i;
  return {k, k + array_bytes_, dtype_, context_};
}

CpuLayerForward::CpuLayerForward(const LlamaConfig& c, const CpuLayerOptions& opt, ThreadPool* pool)
    : c_(c), arch_(architecture_of(c)), opt_(opt), pool_(pool) {
  c_.validate();
  CLLM_CHECK(opt.context >= 1, "CPU layer: context ", opt.context, " must be >= 1");
  CLLM_CHECK(opt.max_batch >= 1, "CPU layer: max_batch ", opt.max_batch, " must be >= 1");
  CLLM_CHECK(cpu::isa_available(opt.isa), "CPU layer: ", cpu::isa_name(opt.isa), " is not available on this CPU");
  const size_t B = opt.max_batch, dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim();
  xb_.resize(B * std::max(dim, qd));
  q_.resize(B * qd);
  k_.resize(B * kvd);
  v_.resize(B * kvd);
  hb_.resize(B * c.ffn_dim);
  hb2_.resize(B * c.ffn_dim);
  tmp_.resize(B * dim);
  norm_.resize(dim);
  bias_.resize(qd);  // a bias, or a head norm's weights (head_dim <= q_dim)
  rope_ = cpu::model_rope_table(c, opt.context);
  if (c.rope_local_theta > 0) rope_local_ = cpu::model_rope_table(c, opt.context, true);
}

void CpuLayerForward::check_segment(const CpuLayerSegment& s, int i) const {
  const std::string seg = i < 0 ? std::string() : cat("segment ", i, ": ");
  const CpuKvLayer& kv = s.kv;
  CLLM_CHECK(s.n >= 1, "CPU layer: ", seg, "no tokens");
  CLLM_CHECK(s.pos >= 0 && s.pos + s.n <= opt_.context, "CPU layer: ", seg, "positions ", s.pos, "..", s.pos + s.n - 1,
             " do not fit the context of ", opt_.context, " tokens");
  CLLM_CHECK(kv.k && kv.v && (kv.dtype == DType::F16 || kv.dtype == DType::F32), "CPU layer: ", seg,
             "the KV cache is ", (kv.k && kv.v ? dtype_name(kv.dtype) : "missing"), ", expected f16 or f32 arrays");
  CLLM_CHECK(kv.context >= s.pos + s.n, "CPU layer: ", seg, "positions ", s.pos, "..", s.pos + s.n - 1,
             " do not fit the KV cache of ", kv.context, " positions");
}

void CpuLayerForward::forward(int layer, const CpuLayerWeights& w, const CpuKvLayer& kv, float* x, int n, int pos) {
  w.check();
  CLLM_CHECK(layer >= 0 && layer < c_.n_layers, "CPU layer: layer ", layer, " of ", c_.n_layers);
  check_segment({kv, n, pos}, -1);
  for (int b = 0; b < n; b += opt_.max_batch) {
    const CpuLayerSegment seg{kv, std::min(opt_.max_batch, n - b), pos + b};
    forward_rows(layer, w, &seg, 1, x + static_cast<size_t>(b) * c_.dim, seg.n);
  }
}

void CpuLayerForward::forward_segments(int layer, const CpuLayerWeights& w, const CpuLayerSegment* segs, int n_segs,
                                       float* x) {
  w.check();
  CLLM_CHECK(layer >= 0 && layer < c_.n_layers, "CPU layer: layer ", layer, " of ", c_.n_layers);
  CLLM_CHECK(n_segs >= 1, "CPU layer: no segments");
  int n = 0;
  for (int i = 0; i < n_segs; ++i) {
    check_segment(segs[i], i);
    n += segs[i].n;
  }
  CLLM_CHECK(n <= opt_.max_batch, "CPU layer: ", n, " rows in ", n_segs, " segments, more than the batch of ",
             opt_.max_batch);
  forward_rows(layer, w, segs, n_segs, x, n);
}

void CpuLayerForward::linear(const CpuTensor* w, float* const* y, const int* d, int count, const float* x, int n,
                             int k, bool accumulate) {
  const DType dt = w[0].dtype;
  if (dt == DType::F32) {
    // CpuForward's arithmetic: cpu::matmul, then the residual added as a separate step.
    for (int i = 0; i < count; ++i) {
      const auto* wf = static_cast<const float*>(w[i].data);
      if (!accumulate) {
        cpu::matmul(y[i], d[i], x, wf, n, k, d[i], pool_);
        continue;
      }
      cpu::matmul(tmp_.data(), d[i], x, wf, n, k, d[i], pool_);
      const size_t m = static_cast<size_t>(n) * d[i];
      for (size_t j = 0; j < m; ++j) y[i][j] += tmp_[j];
    }
    return;
  }
  cpu::Product16 p[3];
  CLLM_CHECK(count <= 3, "CPU layer: ", count, " products of one input");
  for (int i = 0; i < count; ++i) {
    p[i].w = w[i].data;
    p[i].d = d[i];
    p[i].y = y[i];
    p[i].ldy = d[i];
    p[i].accumulate = accumulate;
  }
  cpu::matmul16_multi(p, count, x, dt, n, k, pool_, opt_.isa);
}

void CpuLayerForward::forward_rows(int layer, const CpuLayerWeights& w, const CpuLayerSegment* segs, int n_segs,
                                   float* x, int n) {
  attention_block(layer, w, segs, n_segs, x, n);
  ffn_block(w, x, n);
}

void CpuLayerForward::norm(const CpuTensor& w, const float* x, int n) {
  // xb (n, dim) = norm(x) * w
  to_f32(w.dtype, w.data, norm_.data(), c_.dim);
  norm_rows(xb_.data(), x, norm_.data(), n, c_.dim);
}

void CpuLayerForward::norm_rows(float* out, const float* x, const float* w, int rows, int width) const {
  // out (rows, width) = norm(x) * w, or * (1 + w) (CpuForward::norm); out may be x
  for (int t = 0; t < rows; ++t) {
    const size_t at = static_cast<size_t>(t) * width;
    switch (arch_.norm) {
      case NormKind::rms: cpu::rmsnorm(out + at, x + at, w, width, c_.norm_eps); break;
      case NormKind::rms_unit_offset: cpu::rmsnorm_unit_offset(out + at, x + at, w, width, c_.norm_eps); break;
    }
  }
}

void CpuLayerForward::add_output(const CpuTensor& w, const CpuTensor& post_norm, const float* in, float* x, int n,
                                 int k) {
  // x (n, dim) += w in, or (Gemma) += norm(w in) * post_norm: the product into tmp_, normed
  // into xb_ (free again: in is hb_ or xb_, read by the product), then added (CpuForward's order)
  const int dim = c_.dim;
  if (!post_norm.data) {
    float* const ys[] = {x};
    linear(&w, ys, &dim, 1, in, n, k, true);
    return;
  }
  float* const ys[] = {tmp_.data()};
  linear(&w, ys, &dim, 1, in, n, k, false);
  norm(post_norm, tmp_.data(), n);
  const size_t m = static_cast<size_t>(n) * dim;
  for (size_t i = 0; i < m; ++i) x[i] += xb_[i];
}

void CpuLayerForward::store_kv(const CpuKvLayer& kv, int row, int n, int pos) {
  // keys and values of rows row .. row + n - 1 into the cache at pos (f16: rounded to nearest even)
  const size_t kvd = c_.kv_dim(), row0 = static_cast<size_t>(pos) * kvd, m = static_cast<size_t>(n) * kvd;
  const float* k = k_.data() + static_cast<size_t>(row) * kvd;
  const float* v = v_.data() + static_cast<size_t>(row) * kvd;
  if (kv.dtype == DType::F32) {
    std::memcpy(static_cast<float*>(kv.k) + row0, k, sizeof(float) * m);
    std::memcpy(static_cast<float*>(kv.v) + row0, v, sizeof(float) * m);
    return;
  }
  uint16_t* kc = static_cast<uint16_t*>(kv.k) + row0;
  uint16_t* vc = static_cast<uint16_t*>(kv.v) + row0;
  for (size_t i = 0; i < m; ++i) {
    kc[i] = f32_to_f16(k[i]);
    vc[i] = f32_to_f16(v[i]);
  }
}

void CpuLayerForward::add_bias(const CpuTensor& b, float* y, int d, int n) {
  // y (n, d) += b, in fp32 after the product (CpuForward's order)
  to_f32(b.dtype, b.data, bias_.data(), d);
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < d; ++i) y[static_cast<size_t>(t) * d + i] += bias_[i];
}

void CpuLayerForward::head_norm(const CpuTensor& w, float* y, int rows) {
  // y (rows, head_dim): each row normed in place (CpuForward's norm of the heads)
  to_f32(w.dtype, w.data, bias_.data(), c_.head_dim);
  norm_rows(y, y, bias_.data(), rows, c_.head_dim);
}

void CpuLayerForward::attention_block(int layer, const CpuLayerWeights& w, const CpuLayerSegment* segs, int n_segs,
                                      float* x, int n) {
  // x += wo . attention(rope(wq xb), rope(wk xb), wv xb),  xb = norm(x) * attn_norm
  const int dim = c_.dim, qd = c_.q_dim(), kvd = c_.kv_dim();
  float* xb = xb_.data();
  float* q = q_.data();
  float* k = k_.data();
  norm(w.attn_norm, x, n);
  {  // q, k, v projections (one pass over the input), then RoPE on q and k
    const CpuTensor ws[] = {w.wq, w.wk, w.wv};
    float* const ys[] = {q, k, v_.data()};
    const int ds[] = {qd, kvd, kvd};
    linear(ws, ys, ds, 3, xb, n, dim, false);
  }
  if (w.has_qkv_bias()) {
    add_bias(w.bq, q, qd, n);
    add_bias(w.bk, k, kvd, n);
    add_bias(w.bv, v_.data(), kvd, n);
  }
  if (w.has_qk_norm()) {
    head_norm(w.q_norm, q, n * c_.n_heads);
    head_norm(w.k_norm, k, n * c_.n_kv_heads);
  }
  const cpu::RopeTable& rope = c_.uses_local_rope(layer) ? rope_local_ : rope_;
  for (int i = 0, at = 0; i < n_segs; at += segs[i].n, ++i) {  // per segment, at its rows and positions
    const CpuLayerSegment& sg = segs[i];
    float* qs = q + static_cast<size_t>(at) * qd;
    float* ks = k + static_cast<size_t>(at) * kvd;
    if (c_.uses_rope(layer)) cpu::rope_tokens(qs, ks, sg.n, sg.pos, c_, rope);
    store_kv(sg.kv, at, sg.n, sg.pos);
    // causal attention: token t sees positions 0 .. pos+t; query head h reads kv head
    // h / (n_heads / n_kv_heads) (GQA); the output goes to xb (n, q_dim)
    cpu::attention(cpu::layer_attention_args(c_, layer, xb + static_cast<size_t>(at) * qd, qs, sg.kv.k, sg.kv.v,
                                             sg.kv.dtype, sg.n, sg.pos),
                   pool_, opt_.isa);
  }
  add_output(w.wo, w.attn_post_norm, xb, x, n, qd);  // output projection, added to the residual
}

void CpuLayerForward::ffn_block(const CpuLayerWeights& w, float* x, int n) {
  // x += w_down (act(w_gate xb) * (w_up xb)),  xb = norm(x) * ffn_norm; act silu or gelu
  const int dim = c_.dim, ffn = c_.ffn_dim;
  float* hb = hb_.data();
  float* hb2 = hb2_.data();
  norm(w.ffn_norm, x, n);
  {
    const CpuTensor ws[] = {w.w_gate, w.w_up};
    float* const ys[] = {hb, hb2};
    const int ds[] = {ffn, ffn};
    linear(ws, ys, ds, 2, xb_.data(), n, dim, false);
  }
  const size_t elems = static_cast<size_t>(n) * ffn;
  cpu::parallel_for(pool_, (elems + kElemsPerItem - 1) / kElemsPerItem, 20.0 * kElemsPerItem, [&](size_t i) {
    const size_t b = i * kElemsPerItem;
    const size_t count = std::min(kElemsPerItem, elems - b);
    switch (arch_.ffn) {
      case FfnKind::swiglu: cpu::swiglu(hb + b, hb2 + b, count); break;
      case FfnKind::geglu_tanh: cpu::geglu_tanh(hb + b, hb2 + b, count); break;
    }
  });
  add_output(w.w_down, w.ffn_post_norm, hb, x, n, ffn);
}

}  // namespace cllm
