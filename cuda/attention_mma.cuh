// The shared step of the f16 tensor-core attention kernels (attention_prefill.cu,
// attention_decode.cu): one warp's 16 query rows against a tile of keys in shared memory,
// with mma.sync, ldmatrix and cp.async wrappers, and the launchers' shared checks.
//
// Both take the same step, one warp's: 16 query rows against a tile of keys held in shared
// memory, S = Q K^T and O += P V with mma.sync m16n8k16 (f16 inputs, fp32 accumulators), an
// online softmax in fp32 registers in between. Query rows are (token, head of the GQA group)
// pairs, row r = t * group + j for query head kv_head * group + j, so one tile of K and V in
// shared memory serves every head of its group.
//
// Precision, and why:
// - Q is scaled by log2(e)/sqrt(head_dim) in fp32, then rounded to f16 (relative 2^-12): the
//   mma takes f16, and scaling first keeps the rounding relative to the scores' size; log2(e)
//   lets the softmax use exp2. K and V are the cache's f16 values, unrounded.
// - Scores, the running max and sum, and O accumulate in fp32 (the mma's accumulators).
// - P = exp2(s - max) lies in [0, 1] and is rounded to f16 for the P V product (relative
//   2^-12); the row sum adds the rounded values, so the output is exactly a weighted mean of V
//   with the weights actually used.
// - Decode partials (max, sum, unnormalised O) are fp32 in the workspace; the combine kernel
//   merges them in fp32.
// Every sum has a fixed order (mma, quad shuffles, warps and chunks in index order): the same
// inputs give the same bits on every run.
#pragma once

#include <cuda_fp16.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>

#include "cuda/attention.h"
#include "cuda/cuda_check.h"
#include "cuda/element.cuh"
#include "cuda/launch_overlap.cuh"

namespace cllm::cuda {

namespace {

constexpr int kWarps = 4;              // per block, both kernels
constexpr int kThreads = kWarps * 32;
constexpr int kTileKeys = kDecodeMinChunk;          // keys per shared-memory tile
constexpr int kRowsPerWarp = 16;       // one mma row tile
constexpr int kPad = 8;                // halves added to a shared row: 16 bytes, rows 4 banks apart
constexpr float kLog2e = 1.4426950408889634f;

template <int HD>
__host__ __device__ constexpr int smem_row() { return HD + kPad; }
// Two stages of (K tile, V tile), f16.
template <int HD>
__host__ __device__ constexpr size_t tile_smem_bytes() { return size_t{2} * 2 * kTileKeys * smem_row<HD>() * sizeof(__half); }

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// c (16x8, fp32) += a (16x16, f16, row-major) * b (16x8, f16, column-major).
__device__ __forceinline__ void mma_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 f16 matrices from shared memory: lane i gives the address of row i % 8 of matrix
// i / 8 and receives, of each matrix, row i / 4, columns 2 * (i % 4) and +1.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const __half* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}

// Four 8x8 f16 matrices from shared memory, transposed: lane i gives the address of row i % 8
// of matrix i / 8.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const __half* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}

// 16 bytes global -> shared, asynchronously; zero-filled when !in (src must still be valid).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool in) {
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(in ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// The block's threads copy rows key0 .. key0+63 of one kv head's K and V into a stage; rows at
// or past key_end are zeros (the cache there may hold anything, even NaN, and 0 * NaN is NaN).
template <int HD, int THREADS = kThreads>
__device__ __forceinline__ void load_tile(__half* k_s, __half* v_s, const __half* k_cache, const __half* v_cache,
                                          int key0, int key_end, size_t kv_dim, size_t head_off) {
  constexpr int kSegs = HD / 8;  // 16-byte pieces a row
  for (int i = threadIdx.x; i < kTileKeys * kSegs; i += THREADS) {
    const int r = i / kSegs, seg = i % kSegs;
    const bool in = key0 + r < key_end;
    const size_t at = in ? static_cast<size_t>(key0 + r) * kv_dim + head_off + seg * 8 : 0;
    cp_async_16(k_s + r * smem_row<HD>() + seg * 8, k_cache + at, in);
    cp_async_16(v_s + r * smem_row<HD>() + seg * 8, v_cache + at, in);
  }
}

// One warp's online-softmax state for its 16 rows. Lane l holds rows l/4 and l/4 + 8 (the mma
// accumulator layout): o[nt][0..1] = row l/4, columns nt*8 + 2*(l%4) + {0,1}; o[nt][2..3] the
// same of row l/4 + 8. m: running max (log2 units); l: this lane's share of the running sum
// (the quad's four shares add up to the row's sum at the end).
template <int HD>
struct WarpState {
  float o[HD / 8][4];
  float m[2];
  float l[2];
  __device__ __forceinline__ void init() {
#pragma unroll
    for (int nt = 0; nt < HD / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.0f;
  }
};

// Q fragments (A operand, 16 rows x HD) of one warp: qa[kk] covers columns 16kk .. 16kk+15.
// Row i of the warp is query row row0 + i = (token t, head j of the group) with t = r / group;
// rows past n_rows are zeros.
template <int HD>
__device__ __forceinline__ void load_q(uint32_t (&qa)[HD / 16][4], const float* q, int row0, int n_rows, int group,
                                       int kv_head, int n_heads, float scale) {
  const int lane = threadIdx.x % 32;
  const float* src[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = row0 + lane / 4 + 8 * i;
    const int t = r / group, h = kv_head * group + r % group;
    src[i] = r < n_rows ? q + (static_cast<size_t>(t) * n_heads + h) * HD : nullptr;
  }
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {  // columns +0 / +8
      const int col = kk * 16 + half * 8 + 2 * (lane % 4);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        float2 v = make_float2(0.0f, 0.0f);
        if (src[i]) v = *reinterpret_cast<const float2*>(src[i] + col);
        qa[kk][half * 2 + i] = pack_half2(v.x * scale, v.y * scale);
      }
    }
  }
}

// The first key the query at position p sees: 0, or with a sliding window (window > 0) the
// window's start p - window + 1 (transformers' "kv_idx > q_idx - sliding_window").
__host__ __device__ __forceinline__ int first_key(int p, int window) {
  return window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
}

// The masking and online-softmax step of one warp's 16 rows over 8 x NT keys, between S = Q K^T
// and O += P V (both products' accumulators have the mma.sync m16n8 layout: lane l holds rows l/4
// and l/4 + 8, s[nt][0..1] and s[nt][2..3] at keys key0 + nt*8 + 2*(l%4) + {0,1}). Masks keys past
// qpos or before qlo (mask: the caller's test whether any may be), updates the running max m and
// sum l, and returns P in f16 as the A operand of P V (the accumulator layout of two 8-key tiles
// is the A layout of one 16-key step) and alpha, the factor O is to be rescaled by before P V is
// added (softmax_tile does both steps; a pipelined caller rescales O once its last P V is done).
template <int NT>
__device__ __forceinline__ void softmax_scores(float (&s)[NT][4], int key0, const int (&qpos)[2], const int (&qlo)[2],
                                               bool mask, float (&m)[2], float (&l)[2], uint32_t (&p)[NT][2],
                                               float (&alpha)[2]) {
  const int quad_col = 2 * (threadIdx.x % 4);
  if (mask) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (const int key = key0 + nt * 8 + quad_col + (e & 1); key > qpos[e >> 1] || key < qlo[e >> 1])
          s[nt][e] = -INFINITY;
  }

  // Online softmax: the tile's row max over the quad (fixed shuffle tree), rescale, exponentiate.
  float base[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float mx = m[i];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    base[i] = mx == -INFINITY ? 0.0f : mx;  // a row with no visible key yet: exp2(-inf - 0) = 0
    alpha[i] = exp2f(m[i] - base[i]);      // 0 on the first visible tile
    m[i] = mx;
    l[i] *= alpha[i];
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const __half2 h = __floats2half2_rn(exp2f(s[nt][2 * i] - base[i]), exp2f(s[nt][2 * i + 1] - base[i]));
      const float2 r = __half22float2(h);
      l[i] += r.x + r.y;
      p[nt][i] = *reinterpret_cast<const uint32_t*>(&h);
    }
  }
}

// O *= alpha, row by row. SKIP_UNMOVED: where no row of the warp changed its max, every alpha is
// exactly 1 and the products would leave O's bits as they are, so the warp skips them (most
// tiles at depth); the same bits, one vote a tile.
template <int HD, bool SKIP_UNMOVED = false>
__device__ __forceinline__ void rescale(float (&o)[HD / 8][4], const float (&alpha)[2]) {
  if constexpr (SKIP_UNMOVED)
    if (__all_sync(0xffffffffu, alpha[0] == 1.0f && alpha[1] == 1.0f)) return;
#pragma unroll
  for (int nt = 0; nt < HD / 8; ++nt) {
    o[nt][0] *= alpha[0];
    o[nt][1] *= alpha[0];
    o[nt][2] *= alpha[1];
    o[nt][3] *= alpha[1];
  }
}

template <int HD, int NT>
__device__ __forceinline__ void softmax_tile(float (&s)[NT][4], int key0, const int (&qpos)[2], const int (&qlo)[2],
                                             bool mask, WarpState<HD>& st, uint32_t (&p)[NT][2]) {
  float alpha[2];
  softmax_scores(s, key0, qpos, qlo, mask, st.m, st.l, p, alpha);
  rescale<HD>(st.o, alpha);
}

// One warp, its 16 rows against KEYS keys in shared memory (k_s, v_s: row 0 is key key0).
// Row i sees keys qlo[i] .. qpos[i] (qpos: its absolute position, -1 for padding rows; qlo: its
// first_key); masking is skipped when the caller knows every key is visible to every row.
// A tile that no row sees leaves st's values unchanged (every p is 0; alpha is 1, or o and l
// are still 0), so callers may skip such tiles or not without changing results.
template <int HD, int KEYS>
__device__ __forceinline__ void warp_attend(const uint32_t (&qa)[HD / 16][4], const __half* k_s, const __half* v_s,
                                            int key0, const int (&qpos)[2], const int (&qlo)[2], bool mask,
                                            WarpState<HD>& st) {
  constexpr int kNt = KEYS / 8;
  constexpr int kLd = smem_row<HD>();
  const int lane = threadIdx.x % 32, quad_row = lane / 4, quad_col = 2 * (lane % 4);

  // S = Q K^T: the B operand's column n is key n, its k index the head dimension, so lane l
  // reads two adjacent halves of key row l/4 (rows 4 banks apart: no conflicts).
  float s[kNt][4];
#pragma unroll
  for (int nt = 0; nt < kNt; ++nt) {
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
    const __half* kr = k_s + (nt * 8 + quad_row) * kLd + quad_col;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      const uint32_t b0 = *reinterpret_cast<const uint32_t*>(kr + kk * 16);
      const uint32_t b1 = *reinterpret_cast<const uint32_t*>(kr + kk * 16 + 8);
      mma_f16(s[nt], qa[kk], b0, b1);
    }
  }
  uint32_t p[kNt][2];
  softmax_tile<HD, kNt>(s, key0, qpos, qlo, mask, st, p);

  // O += P V: the B operand's k index is the key, n the head dimension; ldmatrix.trans turns
  // V's rows (keys) into that layout, two 8-column tiles a call.
#pragma unroll
  for (int kk = 0; kk < KEYS / 16; ++kk) {
    const uint32_t a[4] = {p[2 * kk][0], p[2 * kk][1], p[2 * kk + 1][0], p[2 * kk + 1][1]};
    const __half* vr = v_s + (kk * 16 + lane % 16) * kLd + (lane / 16) * 8;
#pragma unroll
    for (int nt = 0; nt < HD / 8; nt += 2) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, vr + nt * 8);
      mma_f16(st.o[nt], a, b[0], b[1]);
      mma_f16(st.o[nt + 1], a, b[2], b[3]);
    }
  }
}

// The row sums: the quad's four shares, added in a fixed tree.
template <int HD>
__device__ __forceinline__ void finish_sums(WarpState<HD>& st) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    st.l[i] += __shfl_xor_sync(0xffffffffu, st.l[i], 1);
    st.l[i] += __shfl_xor_sync(0xffffffffu, st.l[i], 2);
  }
}


// Writes a warp's 16 rows of O / l to out (row r = token t, head kv_head * group + r % group, as
// load_q): lane l holds rows row0 + l/4 and + 8, columns 2*(l%4) + {0,1} of each 8 (finish_sums
// first). Rows at or past n_rows are padding and not written.
template <int HD>
__device__ __forceinline__ void store_rows(const WarpState<HD>& st, int row0, int n_rows, int group, int kv_head,
                                           int n_heads, void* out, DType out_dt) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = row0 + lane / 4 + 8 * i;
    if (r >= n_rows) continue;
    const int t = r / group, h = kv_head * group + r % group;
    const size_t row = (static_cast<size_t>(t) * n_heads + h) * HD + 2 * (lane % 4);
    const float inv = 1.0f / st.l[i];
#pragma unroll
    for (int nt = 0; nt < HD / 8; ++nt) {
      store_f32(out, out_dt, row + nt * 8, st.o[nt][2 * i] * inv);
      store_f32(out, out_dt, row + nt * 8 + 1, st.o[nt][2 * i + 1] * inv);
    }
  }
}

void check_shape(const char* what, const void* k_cache, const void* v_cache, int n_heads, int n_kv_heads,
                 int head_dim) {
  if (!attention_flash_supported(DType::F16, head_dim))
    fail(what, ": head_dim ", head_dim, " not supported (64 or 128)");
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0) fail(what, ": heads ", n_heads, "/", n_kv_heads, " not supported");
  if ((reinterpret_cast<uintptr_t>(k_cache) | reinterpret_cast<uintptr_t>(v_cache)) % 16 != 0)
    fail(what, ": the KV cache must be 16-byte aligned");
}

// Allows a kernel more than 48 KiB of dynamic shared memory, once per device and kernel.
template <auto kernel>  // one flag set per kernel instance
void allow_smem(size_t bytes) {
  static std::atomic<uint64_t> done{0};  // one bit per device
  int dev = 0;
  CLLM_CUDA_CHECK(cudaGetDevice(&dev));
  const uint64_t bit = uint64_t{1} << (dev % 64);
  if (done.load() & bit) return;
  // The first launch may be inside a graph capture (the engine's one-token graph): relaxed mode
  // lets this non-stream call through there, then the thread's mode is restored.
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  CLLM_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  CLLM_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  CLLM_CUDA_CHECK(err);
  done.fetch_or(bit);
}

}  // namespace

// Merges per-chunk partials (the decode path's workspace layout, attention_decode.cu) into
// out: for query (t, head h), chunks 0 .. (pos + t) / chunk, chunk c holding keys c*chunk ..
// Used by the decode path and by the prompt kernel's split keys.
void attention_combine_f16(int head_dim, const float* acc, const float2* ml, void* out, DType out_dt, int n, int pos,
                           int n_heads, int chunk, cudaStream_t s);

}  // namespace cllm::cuda
