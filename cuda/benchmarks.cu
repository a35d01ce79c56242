#include <algorithm>

#include <cublas_v2.h>

#include "cuda/benchmarks.h"
#include "cuda/cuda_check.h"
#include "cuda/decode_tiles.h"
#include "cuda/device_buffer.h"

namespace cllm::cuda {

namespace {

// Milliseconds of fn() on the default stream, timed with events.
template <class Fn>
double time_ms(Fn&& fn) {
  cudaEvent_t start, stop;
  CLLM_CUDA_CHECK(cudaEventCreate(&start));
  CLLM_CUDA_CHECK(cudaEventCreate(&stop));
  CLLM_CUDA_CHECK(cudaEventRecord(start));
  fn();
  CLLM_CUDA_CHECK(cudaEventRecord(stop));
  CLLM_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  CLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// GB/s of `bytes` moved per run, median over reps after one warm-up.
template <class Fn>
double gbps(double bytes, int reps, Fn&& fn) {
  fn();
  CLLM_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) ms.push_back(time_ms(fn));
  return bytes / (median(ms) * 1e-3) / 1e9;
}

}  // namespace

double measure_gemm_tflops(int m, int n, int k, int reps) {
  DeviceBuffer<uint16_t> a(static_cast<size_t>(m) * k), b(static_cast<size_t>(k) * n);
  DeviceBuffer<float> c(static_cast<size_t>(m) * n);
  a.fill_bytes(0x3c);  // small normal bf16 values, not zeros (zeros run faster)
  b.fill_bytes(0x3b);
  cublasHandle_t h = nullptr;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) fail("cuBLAS: cublasCreate failed");
  const float alpha = 1.0f, beta = 0.0f;
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  const double flops = 2.0 * m * n * k;
  const double tflops = gbps(flops, reps, [&] {
    st = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a.data(), CUDA_R_16BF, k, b.data(), CUDA_R_16BF,
                      k, &beta, c.data(), CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  }) / 1e3;
  cublasDestroy(h);
  if (st != CUBLAS_STATUS_SUCCESS) fail("cuBLAS: cublasGemmEx failed: ", cublasGetStatusString(st));
  return tflops;
}

Ceilings measure_ceilings(size_t bytes, int reps) {
  Ceilings c;
  DeviceBuffer<uint8_t> a(bytes), b(bytes);
  a.fill_bytes(1);
  c.copy_gbps = gbps(2.0 * bytes, reps, [&] {
    CLLM_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice));
  });
  uint8_t* pinned = nullptr;
  CLLM_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&pinned), bytes));
  std::fill(pinned, pinned + bytes, uint8_t{3});
  c.h2d_pinned_gbps = gbps(static_cast<double>(bytes), reps, [&] {
    CLLM_CUDA_CHECK(cudaMemcpyAsync(a.data(), pinned, bytes, cudaMemcpyHostToDevice));
  });
  CLLM_CUDA_CHECK(cudaFreeHost(pinned));
  std::vector<uint8_t> pageable(bytes, 5);
  c.h2d_pageable_gbps = gbps(static_cast<double>(bytes), reps, [&] {
    CLLM_CUDA_CHECK(cudaMemcpy(a.data(), pageable.data(), bytes, cudaMemcpyHostToDevice));
  });
  return c;
}

std::vector<double> time_decode(const uint8_t* src, size_t src_bytes, const std::vector<TileTask>& tiles,
                                const std::vector<BlockTask>& blocks, size_t dst_bytes, int reps,
                                int* error, std::vector<uint8_t>* out) {
  DeviceBuffer<uint8_t> d_src, d_dst(dst_bytes);
  DeviceBuffer<TileTask> d_tiles;
  DeviceBuffer<BlockTask> d_blocks;
  DeviceBuffer<int> d_error(1);
  d_src.upload(src, src_bytes);
  d_tiles.upload(tiles);
  d_blocks.upload(blocks);
  d_error.fill_bytes(0);
  auto run = [&] {
    decode_tiles(d_src.data(), d_dst.data(), d_tiles.data(), d_blocks.data(),
                 static_cast<uint32_t>(blocks.size()), d_error.data(), nullptr);
  };
  run();
  CLLM_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) ms.push_back(time_ms(run));
  *error = d_error.download()[0];
  if (out) *out = d_dst.download();
  return ms;
}

}  // namespace cllm::cuda
