// One loaded model, whichever engine runs it: the GPU engine, or a CPU engine (model/cpu_engine.h:
// bf16 and f16 models on their own weights, others on the fp32 reference); and the model's
// tokenizer. `run` and `serve` build their models
// through it, so both load a .cllm the same way and see one ForwardFn.
#pragma once

#include <memory>

#include "format/cllm_reader.h"
#include "model/batch.h"
#include "model/cpu_engine.h"
#include "model/generate.h"
#include "runtime/device_select.h"
#include "runtime/gpu_engine.h"
#include "text/tokenizer.h"

namespace cllm {

// Not movable (the forward functions point at it).
struct ModelEngine {
  std::unique_ptr<CpuEngine> cpu;    // set on Device::cpu
  std::unique_ptr<GpuEngine> gpu;    // set on Device::cuda
  std::unique_ptr<Tokenizer> tok;

  // gpu: the GPU engine's options (context, sequences and threads included); the CPU engine
  // takes its context, sequences and thread count from them too.
  ModelEngine(const CllmFile& file, Device device, const GpuOptions& gpu_opt);
  ModelEngine(const ModelEngine&) = delete;
  ModelEngine& operator=(const ModelEngine&) = delete;

  // serve's idle models: unload() gives the engine's memory back (VRAM, or the CPU's decoded
  // weights) and keeps the tokenizer; load() builds the engine again from the file (the caches
  // start empty). forward()'s and forward_batch()'s functions stay valid across both, and throw
  // while unloaded.
  void unload();
  void load(const CllmFile& file, Device device, const GpuOptions& gpu_opt);
  bool loaded() const { return gpu || cpu; }

  const LlamaConfig& config() const { return gpu ? gpu->config() : cpu->config(); }
  int context() const { return gpu ? gpu->context() : cpu->context(); }
  int sequences() const { return gpu ? gpu->sequences() : cpu->sequences(); }
  // The most tokens one forward_batch call may hold (the engine's max_batch).
  int batch_capacity() const { return gpu ? gpu->batch_capacity() : cpu->batch_capacity(); }
  // The engine's forward pass over sequence 0's cache; valid while this object lives.
  ForwardFn forward();
  // Several sequences' segments in one pass (model/batch.h); the engine holds sequences()
  // KV cache regions (GpuOptions::sequences). Valid while this object lives.
  BatchForwardFn forward_batch();
};

}  // namespace cllm
