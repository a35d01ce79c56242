#include "model/llama_weights.h"

#include "common/error.h"
#include "model/tensor_data.h"

namespace cllm {

std::vector<float>& layer_vector(LlamaLayerWeights& L, LayerTensor r) {
  switch (r) {
    case kAttnNorm: return L.attn_norm;
    case kAttnQ: return L.wq;
    case kAttnK: return L.wk;
    case kAttnV: return L.wv;
    case kAttnOutput: return L.wo;
    case kFfnNorm: return L.ffn_norm;
    case kFfnGate: return L.w_gate;
    case kFfnUp: return L.w_up;
    case kFfnDown: return L.w_down;
    case kAttnQBias: return L.bq;
    case kAttnKBias: return L.bk;
    case kAttnVBias: return L.bv;
    case kAttnQNorm: return L.q_norm;
    case kAttnKNorm: return L.k_norm;
    case kAttnPostNorm: return L.attn_post_norm;
    case kFfnPostNorm: return L.ffn_post_norm;
    case kLayerTensors: break;
  }
  fail("internal: no layer tensor of role ", static_cast<int>(r));
}

const std::vector<float>& layer_vector(const LlamaLayerWeights& L, LayerTensor r) {
  return layer_vector(const_cast<LlamaLayerWeights&>(L), r);
}

size_t LlamaWeights::n_params() const {
  size_t n = token_embd.size() + output_norm.size() + output.size();
  for (const auto& l : layers)
    for (int r = 0; r < kLayerTensors; ++r) n += layer_vector(l, LayerTensor(r)).size();
  return n;
}

namespace {

// The vector holding each expected tensor name.
template <class Weights>
auto slot_for(Weights& w, const std::string& name) -> decltype(&w.token_embd) {
  if (name == "token_embd.weight") return &w.token_embd;
  if (name == "output_norm.weight") return &w.output_norm;
  if (name == "output.weight") return &w.output;
  const Architecture& arch = architecture_of(w.config);
  for (int l = 0; l < static_cast<int>(w.layers.size()); ++l)
    for (const LayerTensorDesc& d : arch.layer)
      if (name == layer_tensor_name(l, d)) return &layer_vector(w.layers[l], d.role);
  return nullptr;
}

}  // namespace

void LlamaWeights::check() const {
  config.validate();
  if (static_cast<int>(layers.size()) != config.n_layers)
    fail("weights: ", layers.size(), " layers, the config says ", config.n_layers);
  for (const auto& spec : expected_tensors(config)) {
    uint64_t n = 1;
    for (auto d : spec.shape) n *= d;
    const auto* v = slot_for(*this, spec.name);
    if (!v || v->size() != n)
      fail("weights: tensor '", spec.name, "' holds ", v ? v->size() : 0, " floats, shape ", shape_to_string(spec.shape),
           " needs ", n);
  }
}

LlamaWeights load_llama_weights(const CllmFile& f, ThreadPool* pool) {
  return with_context(cat("loading '", f.path(), "'"), [&] {
    LlamaWeights w;
    w.config = config_from_metadata(f.metadata());
    w.layers.resize(w.config.n_layers);
    std::vector<TileJob> jobs;
    for (const auto& spec : expected_tensors(w.config)) {
      const TensorInfo* t = f.find(spec.name);
      if (!t) fail("missing tensor '", spec.name, "' (shape ", shape_to_string(spec.shape), ")");
      if (t->shape != spec.shape)
        fail("tensor '", spec.name, "': shape ", shape_to_string(t->shape), ", the config implies ",
             shape_to_string(spec.shape));
      std::vector<float>* dst = slot_for(w, spec.name);
      if (!dst) fail("internal: no slot for tensor '", spec.name, "'");
      dst->resize(t->n_elems());
      auto tj = tile_jobs(*t, dst->data(), true);
      jobs.insert(jobs.end(), tj.begin(), tj.end());
    }
    run_tile_jobs(f, jobs, pool);
    w.check();
    return w;
  });
}

}  // namespace cllm
