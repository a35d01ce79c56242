#include "runtime/gpu_calibration.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "common/timer.h"
#include "cuda/cuda_check.h"
#include "cuda/decode_tiles.h"
#include "cuda/device_buffer.h"
#include "cuda/kernels.h"
#include "runtime/gpu_host_memory.h"
#include "runtime/gpu_ring.h"

namespace cllm {

namespace {
void CUDART_CB nothing(void*) {}
}  // namespace

void measure_paths(const CllmFile& file, const WeightSchedule& s, const LlamaConfig& c, int threads, cudaStream_t stream,
                   PathSpeeds& out) {
  const int dim = c.dim;
  const WeightStep& step = s.layers.front();
  PinnedBuffer host;
  if (!host.allocate(step.src_bytes)) fail("could not allocate pinned host memory to calibrate the PCIe link");
  std::memcpy(host.data(), file.file_data() + step.src_offset, step.src_bytes);
  cuda::DeviceBuffer<uint8_t> src(step.src_bytes), dst(step.slot_bytes), copy(step.slot_bytes);
  cudaEvent_t start, stop;
  CLLM_CUDA_CHECK(cudaEventCreate(&start));
  CLLM_CUDA_CHECK(cudaEventCreate(&stop));
  // Best of three after a warm-up, in ms, of work enqueued on `stream` by fn.
  const auto best_ms = [&](auto&& fn) {
    float best = 1e30f;
    for (int rep = 0; rep < 4; ++rep) {
      CLLM_CUDA_CHECK(cudaEventRecord(start, stream));
      fn();
      CLLM_CUDA_CHECK(cudaEventRecord(stop, stream));
      CLLM_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      CLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (rep > 0) best = std::min(best, ms);
    }
    return static_cast<double>(best);
  };
  const double h2d_ms = best_ms([&] {
    CLLM_CUDA_CHECK(cudaMemcpyAsync(src.data(), host.data(), step.src_bytes, cudaMemcpyHostToDevice, stream));
  });
  decode_on_device(src.data(), dst.data(), step.tiles, step.blocks, stream, file.path());  // checks the data once
  cuda::DeviceBuffer<cuda::TileTask> tiles;
  cuda::DeviceBuffer<cuda::BlockTask> blocks;
  cuda::DeviceBuffer<int> flag(1);
  tiles.upload(step.tiles, stream);
  blocks.upload(step.blocks, stream);
  CLLM_CUDA_CHECK(cudaMemsetAsync(flag.data(), 0, sizeof(int), stream));
  const double decode_ms = best_ms([&] {
    cuda::decode_tiles(src.data(), dst.data(), tiles.data(), blocks.data(), static_cast<uint32_t>(step.blocks.size()),
                       flag.data(), stream);
  });
  const double copy_ms = best_ms([&] {
    CLLM_CUDA_CHECK(cudaMemcpyAsync(copy.data(), dst.data(), step.slot_bytes, cudaMemcpyDeviceToDevice, stream));
  });
  out.pcie_gbs = step.src_bytes / (h2d_ms * 1e6);
  out.decode_gbs = step.slot_bytes / (decode_ms * 1e6);
  out.gpu_gbs = 0.6 * 2.0 * step.slot_bytes / (copy_ms * 1e6);  // a copy reads and writes the bytes
  // Hand-over: one token's residual stream down, a host function, and back up (as the
  // engine's enqueue_cpu_run does it); median of 21.
  PinnedBuffer x;
  if (!x.allocate(sizeof(float) * dim)) fail("could not allocate pinned host memory to calibrate the hand-over");
  std::vector<double> times;
  for (int rep = 0; rep < 21; ++rep) {
    Timer t;
    float* x_dev = reinterpret_cast<float*>(src.data());
    cuda::copy_f32(reinterpret_cast<float*>(x.device_data()), x_dev, dim, stream);
    CLLM_CUDA_CHECK(cudaLaunchHostFunc(stream, nothing, nullptr));
    cuda::copy_f32(x_dev, reinterpret_cast<const float*>(x.device_data()), dim, stream);
    CLLM_CUDA_CHECK(cudaStreamSynchronize(stream));
    times.push_back(t.ms());
  }
  std::nth_element(times.begin(), times.begin() + 10, times.end());
  out.handover_ms = times[10];
  // The CPU layer while PCIe copies run, as in a hybrid pass: each timing runs its passes for
  // as long as about 0.15 s of copies last, and the copies' rate meanwhile is PCIe's beside the
  // CPU layers (the first timing's: one token, the route of generation).
  const int copies = std::clamp(static_cast<int>(150.0 / std::max(h2d_ms, 0.001)), 4, 1000);
  double busy_ms = 0;
  BackgroundLoad load;
  load.start = [&] {
    CLLM_CUDA_CHECK(cudaEventRecord(start, stream));
    for (int i = 0; i < copies; ++i)
      CLLM_CUDA_CHECK(cudaMemcpyAsync(src.data(), host.data(), step.src_bytes, cudaMemcpyHostToDevice, stream));
    CLLM_CUDA_CHECK(cudaEventRecord(stop, stream));
  };
  load.running = [&] { return cudaEventQuery(stop) == cudaErrorNotReady; };
  load.finish = [&] {
    CLLM_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (busy_ms == 0) busy_ms = ms;
  };
  measure_cpu_layer(s, c, threads, out, &load);
  out.pcie_busy_gbs = static_cast<double>(copies) * step.src_bytes / (busy_ms * 1e6);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

PathSpeeds gpu_path_speeds(const CllmFile& file, const WeightSchedule& s, const LlamaConfig& c, int threads,
                           const std::string& device_name, bool& cached) {
  PathSpeeds speeds;
  const std::string key = path_speeds_key(device_name, s, c, threads);
  cached = load_path_speeds(key, speeds);
  if (cached) return speeds;
  Timer t;
  cudaStream_t stream = nullptr;
  CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  try {
    measure_paths(file, s, c, threads, stream, speeds);
  } catch (...) {
    cudaStreamDestroy(stream);
    throw;
  }
  CLLM_CUDA_CHECK(cudaStreamDestroy(stream));
  save_path_speeds(key, speeds);
  log_info("calibrated the weight paths in ", static_cast<int>(t.ms()), " ms: ", speeds.describe());
  return speeds;
}

}  // namespace cllm
