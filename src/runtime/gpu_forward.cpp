// The layers' kernels in the order of src/model/forward_cpu.cpp. The kernels, shapes,
// alignments and order of operations are the same whichever store the weights come from, so
// every mode gives the same logits bit for bit.
#include "runtime/gpu_forward.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "model/cpu_ops.h"
#include "model/tensor_data.h"

namespace cllm {

GpuForward::GpuForward(const CllmFile& file, const LlamaConfig& c, const WeightSchedule& s,
                       const GpuForwardShape& shape, GpuWeights& weights, GpuCpuLayers& cpu, cudaStream_t compute)
    : c_(c), arch_(architecture_of(c)), s_(s), shape_(shape), weights_(weights), cpu_(cpu), compute_(compute), act_(s.linear_dtype),
      kv_(kv_cache_dtype(s.linear_dtype)) {
  const ActivationSizes a = activation_sizes(c_, act_, shape_.batch);
  workspace_.resize(kBlasWorkspaceBytes);
  blas_ = std::make_unique<cuda::Blas>(compute_, workspace_.data(), workspace_.size());
  blas_->overlap_single_token_products(weights_.fixed());
  x_.resize(a.x / 4);
  xn_.resize(a.xn);
  q_.resize(a.q / 4);
  k_.resize(a.kv / 4);
  v_.resize(a.kv / 4);
  gate_.resize(a.ffn / 4);
  up_.resize(a.ffn / 4);
  h_.resize(a.h);
  logits_.resize(a.logits / 4);
  rows_.resize(a.tokens);
  attention_ws_.resize(attention_workspace(c_, shape_.context));
  // The KV cache as memory_plan.h counts it: a device layer per GPU layer, and one that the
  // CPU layers' prompt batches share (their keys and values live in host RAM).
  CLLM_CHECK(shape_.sequences >= 1 && (shape_.sequences == 1 || cpu_.empty()), "sequences ", shape_.sequences,
             " with CPU layers in the plan: the CPU layers' caches hold one sequence");
  kv_region_bytes_ = kv_layer_bytes(c_, act_, shape_.context);
  const uint64_t layer_kv = kv_region_bytes_ * shape_.sequences;
  const uint64_t kv_layers = plan_memory(s_, c_, shape_.placements, shape_.context, shape_.batch).kv_layers;
  k_cache_.resize(layer_kv * kv_layers);
  v_cache_.resize(layer_kv * kv_layers);
  for (int l = 0, next = 0; l < c_.n_layers; ++l) {
    const uint64_t at = (cpu_.is_cpu(l) ? kv_layers - 1 : next++) * layer_kv;
    kv_layers_.push_back({k_cache_.data() + at, v_cache_.data() + at});
  }
  // RoPE angles exactly as the CPU reference computes them (and the sliding layers' own, Gemma 3)
  const cpu::RopeTable rope = cpu::model_rope_table(c_, shape_.context);
  rope_cos_.upload(rope.cos, compute_);
  rope_sin_.upload(rope.sin, compute_);
  if (c_.rope_local_theta > 0) {
    const cpu::RopeTable local = cpu::model_rope_table(c_, shape_.context, true);
    rope_local_cos_.upload(local.cos, compute_);
    rope_local_sin_.upload(local.sin, compute_);
  }
  std::vector<uint8_t> norm(s_.output_norm->raw_bytes());
  decode_tensor(file, *s_.output_norm, norm.data(), nullptr);
  output_norm_.upload(norm, compute_);
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));  // the host copies are temporaries
  use_graph_ = weights_.fixed() && !std::getenv("CLLM_NO_GRAPHS");
  d_pos_.resize(1);
  if (shape_.sequences > 1) {
    d_rows_.resize(2 * static_cast<size_t>(shape_.batch));
    d_singles_.resize(3 * static_cast<size_t>(shape_.batch));
  }
  const char* no_batched = std::getenv("CLLM_NO_BATCHED_ATTENTION");
  batched_attention_ = !(no_batched && *no_batched && std::string(no_batched) != "0");
}

GpuForward::~GpuForward() {
  CLLM_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(compute_));
  drop_graph();
}

void GpuForward::drop_graph() {
  if (token_graph_) cudaGraphExecDestroy(token_graph_);
  token_graph_ = nullptr;
}

void GpuForward::norm(const float* x, const void* w, DType w_dt, int n) {
  // xn (n, dim) in act = norm(x) * w, or * (1 + w) (Gemma)
  cuda::rmsnorm(x, w, w_dt, xn_.data(), act_, n, c_.dim, c_.norm_eps, compute_, unit_offset());
}

const cuda::FusedWeights* GpuForward::fused_matrix(const StepWeights& w, LayerTensor t, int n, int d, int k) const {
  const cuda::FusedWeights* m = w.matrix(t);
  if (m)
    CLLM_CHECK(n == 1 && m->rows == d && m->cols == k && act_ == DType::BF16, "fused product of ",
               w.step->tensor[t]->name, ": ", n, " tokens of ", dtype_name(act_), " and a ", m->rows, " x ", m->cols,
               " fused matrix, expected 1 bf16 token and ", d, " x ", k);
  return m;
}

void GpuForward::linear(const StepWeights& w, LayerTensor t, const void* in, float* y, int ldy, int n, int k, int d,
                        bool accumulate) {
  // The fused product follows matvec's order, so it has the bits of Blas::linear at one
  // token over the decoded weights. Like full mode's products it may start loading its weights
  // while the previous kernel runs where nothing rewrites them (fixed(): the fused store).
  if (const cuda::FusedWeights* m = fused_matrix(w, t, n, d, k))
    cuda::fused_matvec(*m, in, 1, y, ldy, accumulate, compute_, weights_.fixed());
  else
    blas_->linear(w.at(t), act_, in, y, ldy, n, k, d, accumulate);
}

void GpuForward::output_projection(const StepWeights& w, LayerTensor proj, LayerTensor post_norm, const void* in,
                                   int n, int k) {
  // x (n, dim) += proj in; Gemma: x += norm(proj in) * post_norm, the product in fp32 in gate_
  // (free between the blocks' uses; (batch, max(ffn, dim)) floats)
  const int dim = c_.dim;
  if (!arch_.has(post_norm)) {
    linear(w, proj, in, x_.data(), dim, n, k, dim, true);
    return;
  }
  linear(w, proj, in, gate_.data(), dim, n, k, dim, false);
  cuda::add_rmsnorm(x_.data(), gate_.data(), w.at(post_norm), w.step->tensor[post_norm]->dtype, n, dim, c_.norm_eps,
                    unit_offset(), compute_);
}

void GpuForward::qkv_one_token(const StepWeights& w) {
  // q, k and v of one token in one launch, over the decoded weights or the fused planes (the
  // same bits: each row's sum is matvec's either way)
  const int dim = c_.dim, qd = c_.q_dim(), kvd = c_.kv_dim();
  const cuda::FusedWeights* q = fused_matrix(w, kAttnQ, 1, qd, dim);
  const cuda::FusedWeights* k = fused_matrix(w, kAttnK, 1, kvd, dim);
  const cuda::FusedWeights* v = fused_matrix(w, kAttnV, 1, kvd, dim);
  if (q && k && v) {
    cuda::FusedJobs jobs;
    jobs.job[0] = {*q, q_.data(), false};
    jobs.job[1] = {*k, k_.data(), false};
    jobs.job[2] = {*v, v_.data(), false};
    jobs.count = 3;
    jobs.overlap_previous = weights_.fixed();
    cuda::fused_matvec(jobs, xn_.data(), compute_);
    return;
  }
  if (q || k || v) {  // some fused, some not: one product each
    linear(w, kAttnQ, xn_.data(), q_.data(), qd, 1, dim, qd, false);
    linear(w, kAttnK, xn_.data(), k_.data(), kvd, 1, dim, kvd, false);
    linear(w, kAttnV, xn_.data(), v_.data(), kvd, 1, dim, kvd, false);
    return;
  }
  cuda::MatVecJobs qkv;
  qkv.job[0] = {w.at(kAttnQ), q_.data(), qd, false};
  qkv.job[1] = {w.at(kAttnK), k_.data(), kvd, false};
  qkv.job[2] = {w.at(kAttnV), v_.data(), kvd, false};
  qkv.count = 3;
  qkv.overlap_previous = weights_.fixed();
  cuda::matvec(qkv, act_, xn_.data(), dim, compute_);
}

DeviceKvLayer GpuForward::kv_region(int layer, int seq) const {
  const uint64_t at = static_cast<uint64_t>(seq) * kv_region_bytes_;
  return {kv_layers_[layer].k + at, kv_layers_[layer].v + at};
}

void GpuForward::attention_block(const StepWeights& w, int n, const int* d_pos) {
  // x += wo . attention(rope(wq xn + bq), rope(wk xn + bk), wv xn + bv),  xn = rmsnorm(x) * attn_norm
  // (biases, and per-head norms of q and k before RoPE, where the architecture has them)
  const int dim = c_.dim, qd = c_.q_dim(), kvd = c_.kv_dim();
  const WeightStep& step = *w.step;
  const auto W = [&](LayerTensor t) { return w.at(t); };
  norm(x_.data(), W(kAttnNorm), step.tensor[kAttnNorm]->dtype, n);
  if (n == 1) {
    qkv_one_token(w);
  } else {
    blas_->linear(W(kAttnQ), act_, xn_.data(), q_.data(), qd, n, dim, qd, false);
    blas_->linear(W(kAttnK), act_, xn_.data(), k_.data(), kvd, n, dim, kvd, false);
    blas_->linear(W(kAttnV), act_, xn_.data(), v_.data(), kvd, n, dim, kvd, false);
  }
  if (arch_.has(kAttnQBias)) {
    const auto bias = [&](LayerTensor t, float* y, int d) { cuda::add_bias(y, W(t), step.tensor[t]->dtype, n, d, compute_); };
    bias(kAttnQBias, q_.data(), qd);
    bias(kAttnKBias, k_.data(), kvd);
    bias(kAttnVBias, v_.data(), kvd);
  }
  if (arch_.has(kAttnQNorm)) {  // each head of q and k normed in place, (n * heads, head_dim) rows
    cuda::rmsnorm(q_.data(), W(kAttnQNorm), step.tensor[kAttnQNorm]->dtype, q_.data(), DType::F32, n * c_.n_heads,
                  c_.head_dim, c_.norm_eps, compute_, unit_offset());
    cuda::rmsnorm(k_.data(), W(kAttnKNorm), step.tensor[kAttnKNorm]->dtype, k_.data(), DType::F32, n * c_.n_kv_heads,
                  c_.head_dim, c_.norm_eps, compute_, unit_offset());
  }
  const int l = step.layer;
  const bool local = c_.uses_local_rope(l);  // Gemma 3's sliding layers: their own table
  const cuda::RopeArgs rope{c_.n_heads, c_.n_kv_heads, c_.head_dim, c_.rope_layout == RopeLayout::neox,
                            (local ? rope_local_cos_ : rope_cos_).data(), (local ? rope_local_sin_ : rope_sin_).data(),
                            c_.uses_rope(l), c_.rotary_dim()};
  if (batch_rows_ && batched_attention_) {  // several sequences: every row's RoPE and cache write in one launch
    const cuda::BatchRows rows{d_rows_.data(), d_rows_.data() + shape_.batch, shape_.context};
    cuda::rope_store_kv(q_.data(), k_.data(), v_.data(), kv_layers_[l].k, kv_layers_[l].v, kv_, n, 0, nullptr, rope,
                        compute_, &rows);
    attention_segments(l);
    output_projection(w, kAttnOutput, kAttnPostNorm, xn_.data(), n, qd);
    return;
  }
  // per segment: its rows of q, k and v, its sequence's region, its positions (one launch
  // each per segment; the workspace is reused in stream order)
  for (size_t i = 0, at = 0; i < segs_.size(); at += segs_[i].n, ++i) {
    const BatchSegment& sg = segs_[i];
    const DeviceKvLayer kv = kv_region(l, sg.seq);
    float* q = q_.data() + at * qd;
    cuda::rope_store_kv(q, k_.data() + at * kvd, v_.data() + at * kvd, kv.k, kv.v, kv_, sg.n, sg.pos, d_pos, rope,
                        compute_);
    cuda::attention(q, kv.k, kv.v, kv_, xn_.data() + at * qd * dtype_size(act_), act_, sg.n, sg.pos, d_pos, c_.n_heads,
                    c_.n_kv_heads, c_.head_dim, shape_.context, reinterpret_cast<float*>(attention_ws_.data()),
                    attention_ws_.size(), compute_, c_.window_of(l), {c_.attention_scale(), c_.attn_softcap});
  }
  output_projection(w, kAttnOutput, kAttnPostNorm, xn_.data(), n, qd);
}

void GpuForward::ffn_block(const StepWeights& w, int n) {
  // x += w_down (act(w_gate xn) * (w_up xn)),  xn = rmsnorm(x) * ffn_norm; act silu, or gelu
  // (GeGLU, Gemma, whose post norm then norms the sum before the residual)
  const int dim = c_.dim, ffn = c_.ffn_dim;
  const WeightStep& step = *w.step;
  const auto W = [&](LayerTensor t) { return w.at(t); };
  const bool gelu = arch_.ffn == FfnKind::geglu_tanh;
  norm(x_.data(), W(kFfnNorm), step.tensor[kFfnNorm]->dtype, n);
  const cuda::FusedWeights* gate = n == 1 ? fused_matrix(w, kFfnGate, 1, ffn, dim) : nullptr;
  const cuda::FusedWeights* up = n == 1 ? fused_matrix(w, kFfnUp, 1, ffn, dim) : nullptr;
  if (gate && up) {  // one token over the fused planes: matvec_swiglu's bits
    cuda::fused_matvec_swiglu(*gate, *up, xn_.data(), h_.data(), compute_, gelu, weights_.fixed());
  } else if (n == 1 && (gate || up)) {  // one fused, one not: two products and the SwiGLU
    linear(w, kFfnGate, xn_.data(), gate_.data(), ffn, 1, dim, ffn, false);
    linear(w, kFfnUp, xn_.data(), up_.data(), ffn, 1, dim, ffn, false);
    cuda::swiglu(gate_.data(), up_.data(), h_.data(), act_, ffn, compute_, gelu);
  } else if (n == 1) {  // one token: both products and the SwiGLU in one launch
    cuda::matvec_swiglu(W(kFfnGate), W(kFfnUp), act_, xn_.data(), h_.data(), ffn, dim, compute_, weights_.fixed(),
                        gelu);
  } else {
    blas_->linear(W(kFfnGate), act_, xn_.data(), gate_.data(), ffn, n, dim, ffn, false);
    blas_->linear(W(kFfnUp), act_, xn_.data(), up_.data(), ffn, n, dim, ffn, false);
    cuda::swiglu(gate_.data(), up_.data(), h_.data(), act_, static_cast<size_t>(n) * ffn, compute_, gelu);
  }
  output_projection(w, kFfnDown, kFfnPostNorm, h_.data(), n, ffn);
}

void GpuForward::attention_segments(int l) {
  // The segments' attention after their RoPE and cache writes: the single-token ones
  // kMaxDecodeTokens at a time in one launch where the decode kernel applies (each gets the bits
  // of its own launch), the others one launch each. The workspace is reused in stream order.
  const int qd = c_.q_dim();
  const cuda::AttentionScores scores{c_.attention_scale(), c_.attn_softcap};
  const bool rows = cuda::attention_decode_rows_supported(kv_, c_.head_dim, scores);
  float* ws = reinterpret_cast<float*>(attention_ws_.data());
  const int B = shape_.batch;
  for (int g = 0; rows && g < n_singles_; g += cuda::kMaxDecodeTokens) {
    const int count = std::min(cuda::kMaxDecodeTokens, n_singles_ - g);
    cuda::attention_decode_f16_rows(q_.data(), kv_layers_[l].k, kv_layers_[l].v, shape_.context, xn_.data(), act_, count,
                                    d_singles_.data() + g, d_singles_.data() + B + g, d_singles_.data() + 2 * B + g,
                                    singles_max_pos_[g / cuda::kMaxDecodeTokens], c_.n_heads, c_.n_kv_heads,
                                    c_.head_dim, shape_.context, ws, attention_ws_.size(), compute_, c_.window_of(l));
  }
  for (size_t i = 0, at = 0; i < segs_.size(); at += segs_[i].n, ++i) {
    const BatchSegment& sg = segs_[i];
    if (rows && sg.n == 1) continue;
    const DeviceKvLayer kv = kv_region(l, sg.seq);
    cuda::attention(q_.data() + at * qd, kv.k, kv.v, kv_, xn_.data() + at * qd * dtype_size(act_), act_, sg.n, sg.pos,
                    nullptr, c_.n_heads, c_.n_kv_heads, c_.head_dim, shape_.context, ws, attention_ws_.size(), compute_,
                    c_.window_of(l), scores);
  }
}

void GpuForward::upload_batch_rows() {
  const int B = shape_.batch;
  host_rows_.assign(2 * static_cast<size_t>(B), 0);
  host_singles_.assign(3 * static_cast<size_t>(B), 0);
  n_singles_ = 0;
  singles_max_pos_.clear();
  for (size_t i = 0, at = 0; i < segs_.size(); at += segs_[i].n, ++i) {
    const BatchSegment& sg = segs_[i];
    for (int t = 0; t < sg.n; ++t) {
      host_rows_[at + t] = sg.pos + t;
      host_rows_[B + at + t] = sg.seq;
    }
    if (sg.n != 1) continue;
    const int k = n_singles_++;
    host_singles_[k] = sg.pos;
    host_singles_[B + k] = sg.seq;
    host_singles_[2 * B + k] = static_cast<int>(at);
    if (k % cuda::kMaxDecodeTokens == 0) singles_max_pos_.push_back(sg.pos);
    singles_max_pos_.back() = std::max(singles_max_pos_.back(), sg.pos);
  }
  // pageable host memory: the copies are staged before these calls return, so the vectors may change after
  CLLM_CUDA_CHECK(cudaMemcpyAsync(d_rows_.data(), host_rows_.data(), sizeof(int) * host_rows_.size(),
                                  cudaMemcpyHostToDevice, compute_));
  CLLM_CUDA_CHECK(cudaMemcpyAsync(d_singles_.data(), host_singles_.data(), sizeof(int) * host_singles_.size(),
                                  cudaMemcpyHostToDevice, compute_));
  batch_rows_ = true;
}

void GpuForward::run_layer(const StepWeights& w, int n, const int* d_pos) {
  attention_block(w, n, d_pos);
  ffn_block(w, n);
}

void GpuForward::run_step(size_t l, int n, const int* d_pos) {
  const WeightStep& step = s_.layers[l];
  if (const FusedStepView* fused = n == 1 ? weights_.fused(l) : nullptr) {
    run_layer({&step, nullptr, fused}, n, d_pos);
    return;
  }
  run_layer({&step, weights_.acquire(l), nullptr}, n, d_pos);
  weights_.release(l);
}

void GpuForward::run_layers(int n, int pos, bool cpu_route) {
  // Small batches compute the CPU layers on the CPU (a run of them at a time); larger ones
  // stream them through the ring like any other step.
  const int n_layers = static_cast<int>(s_.layers.size());
  for (int l = 0; l < n_layers; ++l) {
    if (cpu_route && cpu_.is_cpu(l)) {
      int last = l + 1;
      while (last < n_layers && cpu_.is_cpu(last)) ++last;
      cpu_.enqueue_run(l, last, n, pos, x_.data(), compute_);
      l = last - 1;
      continue;
    }
    if (cpu_.is_cpu(l)) cpu_.kv_up(l, pos, kv_layers_[l], compute_);  // a prompt batch through a CPU layer
    run_step(l, n);
    if (cpu_.is_cpu(l)) cpu_.kv_down(l, pos, n, kv_layers_[l], compute_);
  }
}

void GpuForward::run_classifier(int first_row, int rows) {
  // logits (rows, vocab) = classifier . rmsnorm(x[first_row ..]), a slice of rows at a time,
  // soft-capped where the model caps them (Gemma)
  norm(x_.data() + static_cast<size_t>(first_row) * c_.dim, output_norm_.data(), s_.output_norm->dtype, rows);
  for (size_t k = 0; k < s_.classifier.size(); ++k) {
    const WeightStep& slice = s_.classifier[k];
    const size_t step = s_.layers.size() + k;
    float* y = logits_.data() + slice.row_begin;
    const FusedStepView* fused = weights_.fused(step);
    if (rows == 1 && fused && fused->slice) {  // matvec's bits over the slice's rows, as below
      cuda::fused_matvec(*fused->slice, xn_.data(), 1, y, c_.vocab_size, false, compute_, weights_.fixed());
      continue;
    }
    blas_->linear(weights_.acquire(step), act_, xn_.data(), y, c_.vocab_size, rows, c_.dim,
                  slice.row_end - slice.row_begin, false);
    weights_.release(step);
  }
  if (c_.final_softcap > 0)
    cuda::softcap_f32(logits_.data(), static_cast<size_t>(rows) * c_.vocab_size, c_.final_softcap, compute_);
}

void GpuForward::scale_embeddings(int n) {
  // Gemma: x (n, dim) times sqrt(dim), in fp32 (CpuForward's)
  if (arch_.scale_embeddings)
    cuda::scale_f32(x_.data(), static_cast<size_t>(n) * c_.dim, std::sqrt(static_cast<float>(c_.dim)), compute_);
}

const float* GpuForward::forward_one_graph(int token, int pos) {
  if (!token_graph_) {
    // The same kernels with the same arguments as the uncaptured path, except that RoPE and
    // attention read the position from device memory.
    cudaGraph_t graph = nullptr;
    CLLM_CUDA_CHECK(cudaStreamBeginCapture(compute_, cudaStreamCaptureModeThreadLocal));
    weights_.embed_from_device(reinterpret_cast<const int*>(rows_.data()), 1, x_.data());
    scale_embeddings(1);
    segs_.assign(1, BatchSegment{0, 0, 1});  // the position comes from d_pos_
    for (size_t l = 0; l < s_.layers.size(); ++l) run_step(l, 1, d_pos_.data());
    run_classifier(0, 1);
    CLLM_CUDA_CHECK(cudaStreamEndCapture(compute_, &graph));
    const cudaError_t err = cudaGraphInstantiate(&token_graph_, graph, 0);
    cudaGraphDestroy(graph);
    CLLM_CUDA_CHECK(err);
  }
  const int args[2] = {token, pos};
  CLLM_CUDA_CHECK(cudaMemcpyAsync(rows_.data(), &args[0], sizeof(int), cudaMemcpyHostToDevice, compute_));
  CLLM_CUDA_CHECK(cudaMemcpyAsync(d_pos_.data(), &args[1], sizeof(int), cudaMemcpyHostToDevice, compute_));
  CLLM_CUDA_CHECK(cudaGraphLaunch(token_graph_, compute_));
  logits_host_.resize(c_.vocab_size);
  CLLM_CUDA_CHECK(cudaMemcpyAsync(logits_host_.data(), logits_.data(), sizeof(float) * c_.vocab_size,
                                  cudaMemcpyDeviceToHost, compute_));
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));
  return logits_host_.data();
}

const float* GpuForward::forward(const int* tokens, int n, int pos, bool all_logits) {
  const int vocab = c_.vocab_size;
  if (n < 1) fail("forward: no tokens");
  if (pos < 0 || pos + n > shape_.context)
    fail("forward: positions ", pos, "..", pos + n - 1, " do not fit the context of ", shape_.context, " tokens");
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail("forward: token id ", tokens[i], " out of range (vocabulary of ", vocab, ")");
  batch_rows_ = false;  // one sequence: positions by value (a failed batched pass may have left it set)
  if (n == 1 && !all_logits && use_graph_) return forward_one_graph(tokens[0], pos);
  logits_host_.resize(static_cast<size_t>(all_logits ? n : 1) * vocab);
  if (all_logits) ensure_logit_rows(shape_.batch);
  const bool cpu_route = n <= shape_.cpu_max_batch;
  for (int b = 0; b < n; b += shape_.batch) {
    const int nb = std::min(shape_.batch, n - b);
    weights_.embed(tokens + b, nb, rows_.data(), x_.data());
    scale_embeddings(nb);
    segs_.assign(1, BatchSegment{0, pos + b, nb});
    run_layers(nb, pos + b, cpu_route);
    if (!all_logits && b + nb < n) continue;  // logits only where asked
    const int first = all_logits ? 0 : nb - 1, rows = nb - first;
    run_classifier(first, rows);
    float* dst = logits_host_.data() + (all_logits ? static_cast<size_t>(b) * vocab : 0);
    CLLM_CUDA_CHECK(
        cudaMemcpyAsync(dst, logits_.data(), sizeof(float) * rows * vocab, cudaMemcpyDeviceToHost, compute_));
  }
  cpu_.finish(cpu_route, compute_);
  return logits_host_.data();
}

void GpuForward::ensure_logit_rows(int rows) {
  // more rows than one: a larger buffer, on demand (the captured graph wrote into the old one)
  if (logit_rows_ >= rows) return;
  drop_graph();
  logits_.resize(static_cast<size_t>(shape_.batch) * c_.vocab_size);
  logit_rows_ = shape_.batch;
}

const float* GpuForward::forward_batch(const int* tokens, const BatchSegment* segs, int n_segs) {
  // One pass: the rows of every segment through the layers, then each segment's last row
  // moved up to row i (x_ rows, in order: row end_i - 1 >= i, and no later source is
  // overwritten) so that the classifier runs over n_segs contiguous rows.
  const int vocab = c_.vocab_size, dim = c_.dim;
  segs_.assign(segs, segs + n_segs);
  int n = 0;
  for (const BatchSegment& sg : segs_) n += sg.n;
  weights_.embed(tokens, n, rows_.data(), x_.data());
  scale_embeddings(n);
  if (shape_.sequences > 1) upload_batch_rows();
  run_layers(n, segs_[0].pos, false);
  batch_rows_ = false;
  for (int i = 0, end = 0; i < n_segs; ++i) {
    end += segs_[i].n;
    if (end - 1 != i)
      CLLM_CUDA_CHECK(cudaMemcpyAsync(x_.data() + static_cast<size_t>(i) * dim, x_.data() + static_cast<size_t>(end - 1) * dim,
                                      sizeof(float) * dim, cudaMemcpyDeviceToDevice, compute_));
  }
  ensure_logit_rows(n_segs);
  run_classifier(0, n_segs);
  logits_host_.resize(static_cast<size_t>(n_segs) * vocab);
  CLLM_CUDA_CHECK(cudaMemcpyAsync(logits_host_.data(), logits_.data(), sizeof(float) * n_segs * vocab,
                                  cudaMemcpyDeviceToHost, compute_));
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));
  return logits_host_.data();
}

}  // namespace cllm
