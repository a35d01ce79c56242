// One loaded model, whichever engine runs it: the GPU engine, or the CPU weights decoded to
// fp32 and their forward pass; and the model's tokenizer. `run` and `serve` build their models
// through it, so both load a .cllm the same way and see one ForwardFn.
#pragma once

#include <memory>

#include "format/cllm_reader.h"
#include "model/forward_cpu.h"
#include "model/generate.h"
#include "model/llama_weights.h"
#include "runtime/device_select.h"
#include "runtime/gpu_engine.h"
#include "text/tokenizer.h"

namespace cllm {

// Not movable: the CPU forward pass holds a reference to `weights`.
struct ModelEngine {
  LlamaWeights weights;              // CPU engine only
  std::unique_ptr<CpuForward> cpu;   // set on Device::cpu
  std::unique_ptr<GpuEngine> gpu;    // set on Device::cuda
  std::unique_ptr<Tokenizer> tok;

  // gpu: the GPU engine's options (context and threads included); the CPU engine takes its
  // context and thread count from them too.
  ModelEngine(const CllmFile& file, Device device, const GpuOptions& gpu_opt);
  ModelEngine(const ModelEngine&) = delete;
  ModelEngine& operator=(const ModelEngine&) = delete;

  const LlamaConfig& config() const { return gpu ? gpu->config() : cpu->config(); }
  int context() const { return gpu ? gpu->context() : cpu->context(); }
  // The engine's forward pass; valid while this object lives. One sequence at a time: the
  // engine has one KV cache.
  ForwardFn forward();
};

}  // namespace cllm
