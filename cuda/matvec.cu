// y = W x for one token: the batch-1 decoding step reads every weight once, so this kernel
// is about memory bandwidth: one warp per row, 16-byte loads, several in flight per lane.
// Each lane sums its elements in a fixed order and the warp reduces in a fixed tree, so the
// result depends only on the inputs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/element.cuh"
#include "cuda/kernels.h"
#include "cuda/launch_overlap.cuh"
#include "cuda/matvec_launch.cuh"
#include "cuda/matvec_dot.cuh"

namespace cllm::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // warps per block
constexpr int kUnroll = 8;        // 16-byte loads of each row in flight per lane
constexpr int kThreads = kRowsPerBlock * 32;

template <class T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ float from_float(float v) { return v; }

// kRows rows of w (k elements each, 16-byte aligned) dotted with x by one warp: every lane
// keeps kUnroll 16-byte loads of each row in flight, each refilled as soon as it is summed
// (refilling a whole batch after summing it left half the time with nothing in flight). x is
// staged in shared memory by the whole block (every thread must call this; `live` is false for a warp past the last row),
// and the warp's first loads of weights are issued before that, so staging x (a read of
// k elements and a barrier: a few us, most of a short kernel) overlaps them. Each lane sums
// its elements in a fixed order and the warp reduces in a fixed tree; every lane gets the sums.
template <class T, int kRows>
__device__ __forceinline__ void rows_dot(const T* const (&w)[kRows], const T* __restrict__ x, int k, int lane, bool live,
                                         float (&sum)[kRows]) {
  constexpr int per = 16 / sizeof(T);
  const int n4 = k / per;
  for (int r = 0; r < kRows; ++r) sum[r] = 0.0f;
  int i = lane;
  uint4 a[kRows][kUnroll];
  auto load_batch = [&] {
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) a[r][u] = __ldg(reinterpret_cast<const uint4*>(w[r]) + i + 32 * u);
  };
  bool batch = live && i + 32 * (kUnroll - 1) < n4;
  if (batch) load_batch();
  const uint4* x4 = reinterpret_cast<const uint4*>(stage_x(x, k));
  if (!live) return;
  while (batch) {  // each load refilled with the one 32 kUnroll further on once summed: always in flight
    const int next = i + 32 * kUnroll;
    const bool refill = next + 32 * (kUnroll - 1) < n4;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint4 b = x4[i + 32 * u];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        sum[r] += dot16(a[r][u], b, T());
        if (refill) a[r][u] = __ldg(reinterpret_cast<const uint4*>(w[r]) + next + 32 * u);
      }
    }
    i = next;
    batch = refill;
  }
  for (; i < n4; i += 32) {
    const uint4 b = x4[i];
#pragma unroll
    for (int r = 0; r < kRows; ++r) sum[r] += dot16(__ldg(reinterpret_cast<const uint4*>(w[r]) + i), b, T());
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    for (int o = 16; o > 0; o >>= 1) sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], o);
}

// The same without alignment: any k, element by element (small or odd-shaped models).
template <class T>
__device__ __forceinline__ float row_dot_scalar(const T* __restrict__ w, const T* __restrict__ x, int k, int lane) {
  float sum = 0.0f;
  for (int i = lane; i < k; i += 32) sum += to_float(w[i]) * to_float(x[i]);
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  return sum;
}

// Up to three products with the same x in one launch (q, k, v): blocks [first[j], first[j+1])
// do job j.
template <class T, bool kVector>
__global__ void __launch_bounds__(kRowsPerBlock * 32)
    matvec_kernel(const __grid_constant__ MatVecJobs jobs, const T* __restrict__ x, int k) {
  let_next_kernel_start();
  if (!kVector) wait_for_previous_kernel();  // (the vector path waits in stage_x)
  int j = 0;
  while (j + 1 < jobs.count && static_cast<int>(blockIdx.x) >= jobs.first_block[j + 1]) ++j;
  const int row = (blockIdx.x - jobs.first_block[j]) * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool live = row < jobs.job[j].d;
  const T* wr = static_cast<const T*>(jobs.job[j].w) + static_cast<size_t>(live ? row : 0) * k;
  float sum[1];
  if (kVector) rows_dot<T, 1>({wr}, x, k, lane, live, sum);
  if (!live) return;
  if (!kVector) sum[0] = row_dot_scalar(wr, x, k, lane);
  float* y = jobs.job[j].y;
  if (lane == 0) y[row] = jobs.job[j].accumulate ? y[row] + sum[0] : sum[0];
}

// out[r] = silu(gate_r . x) * (up_r . x) (or gelu, GeGLU), stored in T: the feed-forward's
// first half for one token, the same bits as two products and swiglu() apart.
template <class T, bool kVector>
__global__ void __launch_bounds__(kRowsPerBlock * 32)
    matvec_swiglu_kernel(const T* __restrict__ gate, const T* __restrict__ up, const T* __restrict__ x, T* out, int d,
                         int k, bool gelu_tanh) {
  let_next_kernel_start();
  if (!kVector) wait_for_previous_kernel();
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool live = row < d;
  const size_t off = static_cast<size_t>(live ? row : 0) * k;
  float gu[2];
  if (kVector) rows_dot<T, 2>({gate + off, up + off}, x, k, lane, live, gu);
  if (!live) return;
  if (!kVector) {
    gu[0] = row_dot_scalar(gate + off, x, k, lane);
    gu[1] = row_dot_scalar(up + off, x, k, lane);
  }
  if (lane == 0) out[row] = from_float<T>(glu(gu[0], gu[1], gelu_tanh));
}

template <class T>
bool vectorizable(const void* p, int k) {
  return k % (16 / sizeof(T)) == 0 && reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

template <class T>
void launch(MatVecJobs jobs, const void* x, int k, cudaStream_t s) {
  const bool overlap = jobs.overlap_previous;
  bool vector = vectorizable<T>(x, k);
  int blocks = 0;
  for (int j = 0; j < jobs.count; ++j) {
    vector = vector && vectorizable<T>(jobs.job[j].w, k);
    jobs.first_block[j] = blocks;
    blocks += (jobs.job[j].d + kRowsPerBlock - 1) / kRowsPerBlock;
  }
  if (blocks == 0) return;
  const T* xt = static_cast<const T*>(x);
  if (vector) {
    const size_t smem = x_smem_bytes(matvec_kernel<T, true>, sizeof(T) * k);
    start_kernel(matvec_kernel<T, true>, blocks, kThreads, smem, s, overlap, jobs, xt, k);
  } else {
    start_kernel(matvec_kernel<T, false>, blocks, kThreads, 0, s, overlap, jobs, xt, k);
  }
}

template <class T>
void launch_swiglu(const void* gate, const void* up, const void* x, void* out, int d, int k, cudaStream_t s,
                   bool overlap, bool gelu_tanh) {
  const bool vector = vectorizable<T>(x, k) && vectorizable<T>(gate, k) && vectorizable<T>(up, k);
  const unsigned blocks = (d + kRowsPerBlock - 1) / kRowsPerBlock;
  const T *g = static_cast<const T*>(gate), *u = static_cast<const T*>(up), *xt = static_cast<const T*>(x);
  T* o = static_cast<T*>(out);
  if (vector) {
    const size_t smem = x_smem_bytes(matvec_swiglu_kernel<T, true>, sizeof(T) * k);
    start_kernel(matvec_swiglu_kernel<T, true>, blocks, kThreads, smem, s, overlap, g, u, xt, o, d, k, gelu_tanh);
  } else {
    start_kernel(matvec_swiglu_kernel<T, false>, blocks, kThreads, 0, s, overlap, g, u, xt, o, d, k, gelu_tanh);
  }
}

}  // namespace

void matvec(MatVecJobs jobs, DType dt, const void* x, int k, cudaStream_t s) {
  switch (dt) {
    case DType::BF16: launch<__nv_bfloat16>(jobs, x, k, s); break;
    case DType::F16: launch<__half>(jobs, x, k, s); break;
    case DType::F32: launch<float>(jobs, x, k, s); break;
    default: fail("matvec: weights of dtype ", dtype_name(dt), " are not supported");
  }
  CLLM_CUDA_CHECK_LAUNCH("matvec");
}

void matvec(const void* w, DType dt, const void* x, float* y, int d, int k, bool accumulate, cudaStream_t s,
            bool overlap_previous) {
  MatVecJobs jobs;
  jobs.job[0] = {w, y, d, accumulate};
  jobs.count = 1;
  jobs.overlap_previous = overlap_previous;
  matvec(jobs, dt, x, k, s);
}

void matvec_swiglu(const void* gate, const void* up, DType dt, const void* x, void* out, int d, int k, cudaStream_t s,
                   bool overlap_previous, bool gelu_tanh) {
  if (d <= 0) return;
  switch (dt) {
    case DType::BF16: launch_swiglu<__nv_bfloat16>(gate, up, x, out, d, k, s, overlap_previous, gelu_tanh); break;
    case DType::F16: launch_swiglu<__half>(gate, up, x, out, d, k, s, overlap_previous, gelu_tanh); break;
    case DType::F32: launch_swiglu<float>(gate, up, x, out, d, k, s, overlap_previous, gelu_tanh); break;
    default: fail("matvec_swiglu: weights of dtype ", dtype_name(dt), " are not supported");
  }
  CLLM_CUDA_CHECK_LAUNCH("matvec_swiglu");
}

}  // namespace cllm::cuda
