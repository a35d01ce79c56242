// Products and decoding over the fused layout (src/codec/fused_layout.h; docs/codec.md "The
// fused layout (mode 3)") on the device: the weights stay about 12 bits each in VRAM and are
// decoded in registers, so a token reads 0.75 x the bytes of bf16. Raw device pointers only.
// Fused mode's products and prompt decode (runtime/gpu_forward.cpp, gpu_weights_fused.cpp;
// docs/architecture.md "Mode 3: fused").
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cllm::cuda {

// A fused matrix in device memory: the fields of codec::fused::FusedMatrix.
struct FusedWeights {
  const uint8_t* bytes;          // (rows, stride)
  const uint32_t* codes;         // (rows, stride / 8)
  const uint8_t* bases;          // (rows, ceil(stride / group))
  const uint32_t* escape_start;  // (rows + 1)
  const uint32_t* escapes;       // col << 8 | exponent, sorted by column within a row
  int rows, cols, stride, group;
};

constexpr int kFusedMaxTokens = 8;

// y[t] (rows) fp32 = W x[t] (+ y[t] when accumulate) for tokens t < n (1..kFusedMaxTokens);
// x (n, cols) bf16, token after token; y[t] starts at y + t * ldy. Each token's sum runs in
// cuda/matvec.cu's order (16-byte path when cols % 8 == 0 and x is 16-byte aligned), so the
// result has the bits of matvec() over the decoded weights, token by token.
// overlap_previous (sm_90+): the launch may start while the stream's previous kernel runs and
// load weights meanwhile (cuda/matvec_launch.cuh); only when no kernel still running writes the
// fused planes (the engine's forward passes: planes are written at load, then synchronized).
void fused_matvec(const FusedWeights& w, const void* x, int n, float* y, int ldy, bool accumulate, cudaStream_t s,
                  bool overlap_previous = false);

// One token, up to three products of the same x (k columns each) in one launch (q, k and v):
// job j's y = W_j x (+ y). Each job has the bits of fused_matvec() alone.
struct FusedJob {
  FusedWeights w;
  float* y;
  bool accumulate;
};
struct FusedJobs {
  FusedJob job[3];
  int first_block[3];  // filled in by fused_matvec()
  int count = 0;
  bool overlap_previous = false;  // as fused_matvec()'s
};
void fused_matvec(FusedJobs jobs, const void* x, cudaStream_t s);

// One token's SwiGLU (GeGLU with gelu_tanh) input to w_down in one launch: out (rows) bf16 =
// silu(gate x) * (up x). The bits of fused_matvec() twice and cuda::swiglu() (so of
// cuda::matvec_swiglu() over the decoded weights).
void fused_matvec_swiglu(const FusedWeights& gate, const FusedWeights& up, const void* x, void* out, cudaStream_t s,
                         bool gelu_tanh = false, bool overlap_previous = false);

// out (rows, cols) bf16 = the decoded matrix (tests; out 16-byte aligned).
void fused_decode(const FusedWeights& w, void* out, cudaStream_t s);

// Several matrices decoded by one launch (kFusedDecodeJobs at a time): fused mode's slot
// decode of a step for batches. Each job's out as fused_decode()'s.
struct FusedDecodeJob {
  FusedWeights w;
  void* out;
};
constexpr int kFusedDecodeJobs = 8;
void fused_decode(const FusedDecodeJob* jobs, int count, cudaStream_t s);

}  // namespace cllm::cuda
