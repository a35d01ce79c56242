#include "runtime/model_engine.h"

#include "common/error.h"
#include "common/thread_pool.h"

namespace cllm {

ModelEngine::ModelEngine(const CllmFile& file, Device device, const GpuOptions& gpu_opt) {
  load(file, device, gpu_opt);
  ThreadPool pool(gpu_opt.threads);
  tok = std::make_unique<Tokenizer>(Tokenizer::from_cllm(file, &pool));
}

void ModelEngine::unload() {
  gpu.reset();
  cpu.reset();
}

void ModelEngine::load(const CllmFile& file, Device device, const GpuOptions& gpu_opt) {
  unload();
  if (device == Device::cuda) {
    gpu = GpuEngine::open(file, gpu_opt);
  } else {
    CpuForwardOptions fw_opt;
    fw_opt.context = gpu_opt.context;
    fw_opt.threads = gpu_opt.threads;
    fw_opt.sequences = gpu_opt.sequences;
    cpu = make_cpu_engine(file, fw_opt);
  }
}

ForwardFn ModelEngine::forward() {
  return [this](const int* tokens, int n, int pos) {
    if (!loaded()) fail("the model's engine is unloaded");
    return gpu ? gpu->forward(tokens, n, pos) : cpu->forward(tokens, n, pos);
  };
}

BatchForwardFn ModelEngine::forward_batch() {
  return [this](const int* tokens, const BatchSegment* segs, int n_segs) {
    if (!loaded()) fail("the model's engine is unloaded");
    return gpu ? gpu->forward_batch(tokens, segs, n_segs) : cpu->forward_batch(tokens, segs, n_segs);
  };
}

}  // namespace cllm
