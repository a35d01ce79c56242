// Which CUDA devices this process can use. Works in every build: without CUDA, or on a
// machine with no driver or no GPU, device_count() is 0 and why_unavailable() says why.
#pragma once

#include <string>
#include <vector>

namespace cllm::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  size_t total_bytes = 0, free_bytes = 0;
  int multiprocessors = 0;
};

bool compiled_with_cuda();
int device_count();                  // 0 when unavailable
std::string why_unavailable();       // "" when device_count() > 0
std::vector<DeviceInfo> list_devices();

}  // namespace cllm::cuda
