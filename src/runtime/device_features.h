// What of a model the GPU engine has kernels for. Gemma's layer (the (1 + w) norms, the norms
// after attention and the FFN, GeGLU, scaled embeddings, the query scale, softcaps, a window on
// some layers only, a second RoPE base) runs on the CPU only for now: GpuEngine::open refuses
// such a model naming what is missing, and --device auto picks the CPU for it.
#pragma once

#include <string>

#include "model/llama_config.h"

namespace cllm {

// "" when the GPU engine runs every part of the model; else the missing features, comma
// separated ("(1 + w) RMSNorm, GeGLU feed-forward, ...").
std::string gpu_missing_features(const LlamaConfig& c);

}  // namespace cllm
