#include "model/llama_weights.h"

#include "common/error.h"
#include "model/tensor_data.h"

namespace cllm {

size_t LlamaWeights::n_params() const {
  size_t n = token_embd.size() + output_norm.size() + output.size();
  for (const auto& l : layers)
    n += l.attn_norm.size() + l.wq.size() + l.wk.size() + l.wv.size() + l.wo.size() +
         l.ffn_norm.size() + l.w_gate.size() + l.w_up.size() + l.w_down.size();
  return n;
}

namespace {

// The vector holding each expected tensor name.
template <class Weights>
auto slot_for(Weights& w, const std::string& name) -> decltype(&w.token_embd) {
  if (name == "token_embd.weight") return &w.token_embd;
  if (name == "output_norm.weight") return &w.output_norm;
  if (name == "output.weight") return &w.output;
  for (int l = 0; l < static_cast<int>(w.layers.size()); ++l) {
    auto& L = w.layers[l];
    const std::pair<const char*, decltype(&w.token_embd)> parts[] = {
        {"attn_norm", &L.attn_norm}, {"attn_q", &L.wq},         {"attn_k", &L.wk},
        {"attn_v", &L.wv},           {"attn_output", &L.wo},    {"ffn_norm", &L.ffn_norm},
        {"ffn_gate", &L.w_gate},     {"ffn_up", &L.w_up},       {"ffn_down", &L.w_down}};
    for (const auto& [part, vec] : parts)
      if (name == layer_tensor_name(l, part)) return vec;
  }
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
