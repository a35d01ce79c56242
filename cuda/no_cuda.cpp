// Stand-ins for builds without nvcc (CLLM_CUDA=OFF): no device is ever available.
#include "cuda/device_info.h"

namespace cllm::cuda {

bool compiled_with_cuda() { return false; }
int device_count() { return 0; }
std::string why_unavailable() { return "this codecllm was built without CUDA (CLLM_CUDA=OFF)"; }
std::vector<DeviceInfo> list_devices() { return {}; }

}  // namespace cllm::cuda
