#include "model/architecture.h"

#include "model/llama_config.h"

namespace cllm {

uint64_t extent_size(Extent e, const LlamaConfig& c) {
  switch (e) {
    case Extent::none: return 1;
    case Extent::dim: return static_cast<uint64_t>(c.dim);
    case Extent::q_dim: return static_cast<uint64_t>(c.q_dim());
    case Extent::kv_dim: return static_cast<uint64_t>(c.kv_dim());
    case Extent::ffn: return static_cast<uint64_t>(c.ffn_dim);
  }
  return 0;
}

const Architecture& llama_architecture() {
  static const Architecture arch{
      "llama",
      {
          {kAttnNorm, "attn_norm", Extent::dim, Extent::none},
          {kAttnQ, "attn_q", Extent::q_dim, Extent::dim},
          {kAttnK, "attn_k", Extent::kv_dim, Extent::dim},
          {kAttnV, "attn_v", Extent::kv_dim, Extent::dim},
          {kAttnOutput, "attn_output", Extent::dim, Extent::q_dim},
          {kFfnNorm, "ffn_norm", Extent::dim, Extent::none},
          {kFfnGate, "ffn_gate", Extent::ffn, Extent::dim},
          {kFfnUp, "ffn_up", Extent::ffn, Extent::dim},
          {kFfnDown, "ffn_down", Extent::dim, Extent::ffn},
      },
      NormKind::rms,
      FfnKind::swiglu,
  };
  return arch;
}

const Architecture& architecture_of(const LlamaConfig&) { return llama_architecture(); }

}  // namespace cllm
