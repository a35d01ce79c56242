// config.json of a Hugging Face model folder -> LlamaConfig, for every architecture of
// model/architecture.h: which one (architectures / model_type), the shapes, RoPE (theta,
// llama3 or longrope scaling, partial rotary), and each family's extras (Mistral's and Phi-3's
// sliding window, SmolLM3's layers without RoPE, Gemma's layer types, softcaps and query scale).
// Errors name the file and the field.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "model/llama_config.h"

namespace cllm {

void read_hf_config(const nlohmann::json& cfg, const std::string& file, LlamaConfig& c);

// Internal to read_hf_config (convert/hf_config_gemma.cpp): Gemma 2 and 3's extras, read after
// the common fields and RoPE: sliding and full layers, the sliding layers' RoPE base (Gemma 3),
// query_pre_attn_scalar, softcaps, with transformers' defaults for absent keys.
bool is_gemma(const std::string& architecture);
// Gemma3ForConditionalGeneration's text_config, or null for any other config.json.
const nlohmann::json* gemma3_text_config(const nlohmann::json& cfg, const std::string& file);
// cfg over transformers' Gemma2Config / Gemma3TextConfig defaults (hub configs of Gemma 3's
// vision models leave most text fields to them).
nlohmann::json with_gemma_defaults(const nlohmann::json& cfg, const std::string& architecture);
void read_gemma_config(const nlohmann::json& cfg, const std::string& file, LlamaConfig& c);

}  // namespace cllm
