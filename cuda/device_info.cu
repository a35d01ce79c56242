#include <cuda_runtime.h>

#include "cuda/device_info.h"

namespace cllm::cuda {

bool compiled_with_cuda() { return true; }

namespace {
// cudaGetDeviceCount fails without a driver; remember why.
int probe(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = std::string("CUDA runtime: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device found";
  return n;
}
}  // namespace

int device_count() { return probe(nullptr); }

std::string why_unavailable() {
  std::string why;
  return probe(&why) > 0 ? std::string() : why;
}

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
  const int n = probe(nullptr);
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    DeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.multiprocessors = p.multiProcessorCount;
    d.total_bytes = p.totalGlobalMem;
    if (cudaSetDevice(i) == cudaSuccess) cudaMemGetInfo(&d.free_bytes, &d.total_bytes);
    out.push_back(d);
  }
  return out;
}

}  // namespace cllm::cuda
