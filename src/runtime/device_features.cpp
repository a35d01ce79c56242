// (Not gpu_*.cpp: those are built only with CUDA, and this is what a CPU-only build consults.)
#include "runtime/device_features.h"

#include "model/architecture.h"

namespace cllm {

std::string gpu_missing_features(const LlamaConfig& c) {
  const Architecture& a = architecture_of(c);
  std::string missing;
  const auto add = [&](bool lacks, const char* feature) {
    if (lacks) missing += (missing.empty() ? "" : ", ") + std::string(feature);
  };
  add(a.norm != NormKind::rms, "(1 + w) RMSNorm");
  add(a.has(kAttnPostNorm) || a.has(kFfnPostNorm), "norms after attention and the feed-forward");
  add(a.ffn != FfnKind::swiglu, "GeGLU feed-forward");
  add(a.scale_embeddings, "embeddings scaled by sqrt(hidden)");
  add(c.query_pre_attn_scalar > 0 && c.query_pre_attn_scalar != static_cast<float>(c.head_dim),
      "a query scale of 1/sqrt(query_pre_attn_scalar)");
  add(c.attn_softcap > 0, "attention soft-capping");
  add(c.final_softcap > 0, "final logit soft-capping");
  add(!c.full_attention_layers.empty(), "a sliding window on some layers only");
  add(c.rope_local_theta > 0, "a RoPE base of its own for sliding layers");
  return missing;
}

}  // namespace cllm
