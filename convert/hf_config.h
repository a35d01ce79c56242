// config.json of a Hugging Face model folder -> LlamaConfig, for every architecture of
// model/architecture.h: which one (architectures / model_type), the shapes, RoPE (theta,
// llama3 or longrope scaling, partial rotary), and each family's extras (Mistral's and Phi-3's
// sliding window, SmolLM3's layers without RoPE). Errors name the file and the field.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "model/llama_config.h"

namespace cllm {

void read_hf_config(const nlohmann::json& cfg, const std::string& file, LlamaConfig& c);

}  // namespace cllm
