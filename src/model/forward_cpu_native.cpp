#include "model/forward_cpu_native.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "model/cpu_ops.h"
#include "model/forward_cpu.h"
#include "model/tensor_data.h"

namespace cllm {

namespace {

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

constexpr LayerTensor kLinear[] = {kAttnQ, kAttnK, kAttnV, kAttnOutput, kFfnGate, kFfnUp, kFfnDown};

}  // namespace

DType native_linear_dtype(const CllmFile& f) {
  const LlamaConfig c = config_from_metadata(f.metadata());
  const Architecture& arch = architecture_of(c);
  DType common = DType::F32;
  for (int l = 0; l < c.n_layers; ++l)
    for (LayerTensor r : kLinear) {
      const TensorInfo* t = f.find(layer_tensor_name(l, arch.tensor(r)));
      if (!t) return DType::F32;  // the engine's loader names what is missing
      if (l == 0 && r == kAttnQ) common = t->dtype;
      if (t->dtype != common) return DType::F32;
    }
  return common == DType::BF16 || common == DType::F16 ? common : DType::F32;
}

CpuNativeForward::CpuNativeForward(const CllmFile& f, const CpuForwardOptions& opt)
    : c_(config_from_metadata(f.metadata())),
      arch_(architecture_of(c_)),
      context_(resolve_context(c_, opt.context)),
      sequences_(opt.sequences),
      max_batch_(opt.max_batch),
      pool_(std::max(1, opt.threads)),
      layer_(c_, CpuLayerOptions{context_, std::max(1, opt.max_batch)}, &pool_) {
  CLLM_CHECK(opt.max_batch >= 1, "max_batch must be >= 1, found ", opt.max_batch);
  CLLM_CHECK(opt.sequences >= 1, "sequences must be >= 1, found ", opt.sequences);
  with_context(cat("loading '", f.path(), "'"), [&] {
    const DType linear = native_linear_dtype(f);
    CLLM_CHECK(linear != DType::F32, "the native CPU engine needs bf16 or f16 linear layers, all of one dtype");
    layer_tensors_.assign(c_.n_layers, std::vector<Tensor>(kLayerTensors));
    std::vector<TileJob> jobs;
    for (const TensorSpec& spec : expected_tensors(c_)) {
      const TensorInfo* t = f.find(spec.name);
      if (!t) fail("missing tensor '", spec.name, "' (shape ", shape_to_string(spec.shape), ")");
      if (t->shape != spec.shape)
        fail("tensor '", spec.name, "': shape ", shape_to_string(t->shape), ", the config implies ",
             shape_to_string(spec.shape));
      if (!is_float(t->dtype))
        fail("tensor '", spec.name, "' is ", dtype_name(t->dtype), ", expected f32, f16 or bf16");
      Tensor* dst = nullptr;
      if (spec.name == "token_embd.weight") dst = &token_embd_;
      else if (spec.name == "output_norm.weight") dst = &output_norm_;
      else if (spec.name == "output.weight") dst = &output_;
      for (int l = 0; l < c_.n_layers && !dst; ++l)
        for (const LayerTensorDesc& d : arch_.layer)
          if (spec.name == layer_tensor_name(l, d)) dst = &layer_tensors_[l][d.role];
      if (!dst) fail("internal: no place for tensor '", spec.name, "'");
      dst->dtype = t->dtype;
      dst->bytes.resize(t->n_elems() * dtype_size(t->dtype));
      auto tj = tile_jobs(*t, dst->bytes.data(), false);
      jobs.insert(jobs.end(), tj.begin(), tj.end());
    }
    run_tile_jobs(f, jobs, &pool_);
  });
  for (int l = 0; l < c_.n_layers; ++l) {
    std::array<CpuTensor, kLayerTensors> by_role;
    for (int r = 0; r < kLayerTensors; ++r) {
      const Tensor& t = layer_tensors_[l][r];
      by_role[r] = t.bytes.empty() ? CpuTensor{nullptr, DType::F32} : t.view();
    }
    const CpuLayerWeights w = cpu_layer_weights_by_role(by_role);
    w.check();
    layers_.push_back(w);
  }
  const DType kv_dtype = cpu_kv_dtype(layers_.front().linear_dtype());
  for (int s = 0; s < sequences_; ++s) kv_.emplace_back(c_.n_layers, context_, c_.kv_dim(), kv_dtype);
  x_.resize(static_cast<size_t>(max_batch_) * c_.dim);
  xn_.resize(x_.size());
  norm_.resize(c_.dim);
  to_f32(output_norm_.dtype, output_norm_.bytes.data(), norm_.data(), c_.dim);
}

const char* CpuNativeForward::arithmetic() const {
  return layers_.front().linear_dtype() == DType::BF16 ? "bf16 weights" : "f16 weights";
}

const float* CpuNativeForward::forward(const int* tokens, int n, int pos) {
  CLLM_CHECK(n >= 1, "forward: no tokens");
  CLLM_CHECK(pos >= 0 && pos + n <= context_, "forward: positions ", pos, "..", pos + n - 1,
             " do not fit the context of ", context_, " tokens");
  for (int i = 0; i < n; ++i)
    CLLM_CHECK(tokens[i] >= 0 && tokens[i] < c_.vocab_size, "forward: token id ", tokens[i],
               " out of range (vocabulary of ", c_.vocab_size, ")");
  for (int b = 0; b < n; b += max_batch_) {
    const BatchSegment seg{0, pos + b, std::min(max_batch_, n - b)};
    run_rows(tokens + b, &seg, 1, b + seg.n == n);  // logits after the last batch only
  }
  return logits_.data();
}

const float* CpuNativeForward::forward_batch(const int* tokens, const BatchSegment* segs, int n_segs) {
  check_batch(tokens, segs, n_segs, sequences_, context_, max_batch_, c_.vocab_size);
  run_rows(tokens, segs, n_segs, true);
  return logits_.data();
}

void CpuNativeForward::run_rows(const int* tokens, const BatchSegment* segs, int n_segs, bool logits) {
  const int dim = c_.dim;
  int n = 0;
  for (int i = 0; i < n_segs; ++i) n += segs[i].n;
  // x[t] = token_embd[token t], widened exactly (Gemma: times sqrt(dim) in fp32, as CpuForward)
  const size_t row_bytes = static_cast<size_t>(dim) * dtype_size(token_embd_.dtype);
  for (int t = 0; t < n; ++t)
    to_f32(token_embd_.dtype, token_embd_.bytes.data() + static_cast<size_t>(tokens[t]) * row_bytes,
           x_.data() + static_cast<size_t>(t) * dim, dim);
  if (arch_.scale_embeddings) {
    const float scale = std::sqrt(static_cast<float>(dim));
    for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x_[i] *= scale;
  }
  segs_.resize(n_segs);
  for (int l = 0; l < c_.n_layers; ++l) {
    for (int i = 0; i < n_segs; ++i) segs_[i] = {kv_[segs[i].seq].layer(l), segs[i].n, segs[i].pos};
    layer_.forward_segments(l, layers_[l], segs_.data(), n_segs, x_.data());
  }
  if (!logits) return;
  // the final norm of each segment's last row, then the classifier
  for (int i = 0, end = 0; i < n_segs; ++i) {
    end += segs[i].n;
    const float* row = x_.data() + static_cast<size_t>(end - 1) * dim;
    float* out = xn_.data() + static_cast<size_t>(i) * dim;
    switch (arch_.norm) {
      case NormKind::rms: cpu::rmsnorm(out, row, norm_.data(), dim, c_.norm_eps); break;
      case NormKind::rms_unit_offset: cpu::rmsnorm_unit_offset(out, row, norm_.data(), dim, c_.norm_eps); break;
    }
  }
  classify(n_segs);
}

void CpuNativeForward::classify(int rows) {
  const Tensor& w = c_.tie_embeddings ? token_embd_ : output_;
  const int dim = c_.dim, vocab = c_.vocab_size;
  logits_.resize(static_cast<size_t>(rows) * vocab);
  if (w.dtype == DType::F32) {
    cpu::matmul(logits_.data(), vocab, xn_.data(), reinterpret_cast<const float*>(w.bytes.data()), rows, dim, vocab,
                &pool_);
  } else {
    cpu::Product16 p;
    p.w = w.bytes.data();
    p.d = vocab;
    p.y = logits_.data();
    p.ldy = vocab;
    cpu::matmul16_multi(&p, 1, xn_.data(), w.dtype, rows, dim, &pool_);
  }
  if (c_.final_softcap > 0) cpu::softcap(logits_.data(), static_cast<size_t>(rows) * vocab, c_.final_softcap);
}

}  // namespace cllm
