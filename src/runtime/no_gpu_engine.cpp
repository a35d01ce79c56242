// Without CUDA there is no GPU engine; the CLI reports it like a missing device.
#include "common/error.h"
#include "cuda/device_info.h"
#include "runtime/gpu_engine.h"

namespace cllm {

std::unique_ptr<GpuEngine> GpuEngine::open(const CllmFile&, const GpuOptions&) {
  fail_with({Remedy::cpu_device, ""}, "no CUDA device (", cuda::why_unavailable(), ")");
}

}  // namespace cllm
