// Stand-ins for builds without nvcc (CLLM_CUDA=OFF): no device is ever available.
#include "cuda/device_info.h"

namespace cllm::cuda {

bool compiled_with_cuda() { return false; }
int device_count() { return 0; }
std::string why_unavailable() { return "this codecllm was built without CUDA (CLLM_CUDA=OFF)"; }
std::vector<DeviceInfo> list_devices() { return {}; }

}  // namespace cllm::cuda

// Without CUDA there is nothing to measure; callers check device_count() first.
#include "common/error.h"
#include "cuda/benchmarks.h"

namespace cllm::cuda {

Ceilings measure_ceilings(size_t, int) { fail("GPU ceilings: this codecllm was built without CUDA"); }
double measure_gemm_tflops(int, int, int, int) { fail("GPU ceilings: this codecllm was built without CUDA"); }

std::vector<double> time_decode(const uint8_t*, size_t, const std::vector<TileTask>&, const std::vector<BlockTask>&,
                                size_t, int, int*, std::vector<uint8_t>*) {
  fail("GPU decoder: this codecllm was built without CUDA");
}

}  // namespace cllm::cuda
