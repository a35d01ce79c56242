// Attention over an f16 KV cache on tensor cores (cuda/attention.h): flash attention for
// prompts and split-K "flash-decoding" for 1 .. kMaxDecodeTokens new tokens.
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

// One warp, its 16 rows against KEYS keys in shared memory (k_s, v_s: row 0 is key key0).
// Row i sees keys <= qpos[i] (its absolute position; -1 for padding rows); masking is skipped
// when the caller knows every key is visible to every row.
template <int HD, int KEYS>
__device__ __forceinline__ void warp_attend(const uint32_t (&qa)[HD / 16][4], const __half* k_s, const __half* v_s,
                                            int key0, const int (&qpos)[2], bool mask, WarpState<HD>& st) {
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
  if (mask) {
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (key0 + nt * 8 + quad_col + (e & 1) > qpos[e >> 1]) s[nt][e] = -INFINITY;
  }

  // Online softmax: the tile's row max over the quad (fixed shuffle tree), rescale, exponentiate.
  float base[2], alpha[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float mx = st.m[i];
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    base[i] = mx == -INFINITY ? 0.0f : mx;  // a row with no visible key yet: exp2(-inf - 0) = 0
    alpha[i] = exp2f(st.m[i] - base[i]);   // 0 on the first visible tile
    st.m[i] = mx;
    st.l[i] *= alpha[i];
  }
#pragma unroll
  for (int nt = 0; nt < HD / 8; ++nt) {
    st.o[nt][0] *= alpha[0];
    st.o[nt][1] *= alpha[0];
    st.o[nt][2] *= alpha[1];
    st.o[nt][3] *= alpha[1];
  }
  // P in f16, as the A operand of P V: the accumulator layout of two 8-key tiles is the A
  // layout of one 16-key step.
  uint32_t p[kNt][2];
#pragma unroll
  for (int nt = 0; nt < kNt; ++nt) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const __half2 h = __floats2half2_rn(exp2f(s[nt][2 * i] - base[i]), exp2f(s[nt][2 * i + 1] - base[i]));
      const float2 r = __half22float2(h);
      st.l[i] += r.x + r.y;
      p[nt][i] = *reinterpret_cast<const uint32_t*>(&h);
    }
  }

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

// ---------------------------------------------------------------------------------------------
// Prompt attention. Block (kv head, row tile): 64 query rows (4 warps x 16) of one GQA group
// stream the keys 0 .. (their last position) through shared memory, 64 at a time, in two stages
// (cp.async of tile i+1 overlaps the math of tile i). A warp skips tiles entirely above its
// rows' diagonal and masks only tiles that cross it. Row tiles run longest first (the last
// queries see the most keys), which evens out the causal triangle over the SMs.
template <int HD>
__global__ void __launch_bounds__(kThreads) attention_prefill_f16_kernel(const float* q, const __half* k_cache,
                                                                         const __half* v_cache, void* out,
                                                                         DType out_dt, int n, int pos, int n_heads,
                                                                         int n_kv_heads) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* smem = reinterpret_cast<__half*>(smem_raw);
  constexpr int kTileHalves = kTileKeys * smem_row<HD>();
  const int group = n_heads / n_kv_heads, n_rows = n * group;
  const int tile_row0 = (gridDim.y - 1 - blockIdx.y) * (kWarps * kRowsPerWarp);
  const int kv_head = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t kv_dim = static_cast<size_t>(n_kv_heads) * HD, head_off = static_cast<size_t>(kv_head) * HD;

  const int warp_row0 = tile_row0 + warp * kRowsPerWarp;
  const int block_last_row = min(tile_row0 + kWarps * kRowsPerWarp, n_rows) - 1;
  const int key_end = pos + block_last_row / group + 1;  // keys the block's last row sees
  // The warp's first and last positions (-1: a warp of padding rows only).
  const int warp_last_row = min(warp_row0 + kRowsPerWarp, n_rows) - 1;
  const int warp_min_pos = warp_row0 < n_rows ? pos + warp_row0 / group : -1;
  const int warp_max_pos = warp_row0 < n_rows ? pos + warp_last_row / group : -1;
  int qpos[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp_row0 + lane / 4 + 8 * i;
    qpos[i] = r < n_rows ? pos + r / group : -1;
  }

  // The first tile's copy starts before Q's loads, which it then overlaps.
  const int n_tiles = (key_end + kTileKeys - 1) / kTileKeys;
  load_tile<HD>(smem, smem + kTileHalves, k_cache, v_cache, 0, key_end, kv_dim, head_off);
  cp_async_commit();
  uint32_t qa[HD / 16][4];
  load_q<HD>(qa, q, warp_row0, n_rows, group, kv_head, n_heads, kLog2e * rsqrtf(static_cast<float>(HD)));
  WarpState<HD> st;
  st.init();
  for (int i = 0; i < n_tiles; ++i) {
    if (i + 1 < n_tiles) {
      __half* next = smem + ((i + 1) & 1) * 2 * kTileHalves;
      load_tile<HD>(next, next + kTileHalves, k_cache, v_cache, (i + 1) * kTileKeys, key_end, kv_dim, head_off);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int key0 = i * kTileKeys;
    if (key0 <= warp_max_pos) {  // warp-uniform
      const __half* k_s = smem + (i & 1) * 2 * kTileHalves;
      warp_attend<HD, kTileKeys>(qa, k_s, k_s + kTileHalves, key0, qpos, key0 + kTileKeys - 1 > warp_min_pos, st);
    }
    __syncthreads();  // the next iteration loads tile i + 2 into this stage
  }

  finish_sums(st);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp_row0 + lane / 4 + 8 * i;
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

// ---------------------------------------------------------------------------------------------
// Prompt attention, the variants (attention_prefill_variant_name): the kernel above
// generalised to WARPS warps of MT m16 row tiles each (a block of WARPS x 16 x MT query rows),
// K fragments by ldmatrix (one x4 gives two 16-dim steps of 8 keys), and the online softmax
// taken every STEP keys of the 64-key tile. The numerics are the kernel above's: f16 Q, K, P,
// fp32 accumulators, the same masking; each row is one warp's, over the keys in index order.
// - WARPS x 16 x MT rows a block: the K/V prefix is read from L2 once per block, so 128 rows
//   halve the traffic per row of the 64-row kernel.
// - MT = 2: a K or V fragment read from shared memory feeds two mma (two row tiles), halving
//   shared-memory reads per flop. Q then takes 2 x HD/4 registers a lane; QS keeps its
//   fragments in shared memory instead, in fragment order (lane l reads back, 16 bytes a step,
//   only what it wrote: no synchronisation, no bank conflicts).
// - STEP < 64: the softmax of each half tile separately (fewer score registers live at once).
template <int HD, int KEYS, int MT, bool QS>
__device__ __forceinline__ void warp_attend_mt(const uint32_t (&qa)[QS ? 1 : MT][HD / 16][4], const uint4* q_s,
                                               const __half* k_s, const __half* v_s, int key0,
                                               const int (&qpos)[MT][2], bool mask, WarpState<HD> (&st)[MT]) {
  constexpr int kNt = KEYS / 8;
  constexpr int kLd = smem_row<HD>();
  const int lane = threadIdx.x % 32, quad_col = 2 * (lane % 4);

  // S = Q K^T. ldmatrix x4 of keys nt*8 .. +7 at dims 16kk .. 16kk+31: matrix j (lanes 8j ..
  // 8j+7 give its rows' addresses) holds dims 16kk + 8j .. +7, so the four registers are b0, b1
  // of step kk and b0, b1 of step kk + 1 (rows 4 banks apart: no conflicts).
  float s[MT][kNt][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
  const __half* kl = k_s + (lane % 8) * kLd + (lane / 8) * 8;
#pragma unroll
  for (int kk = 0; kk < HD / 16; kk += 2) {
    uint32_t a[MT][2][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if constexpr (QS) {
          const uint4 v = q_s[(mt * (HD / 16) + kk + h) * 32 + lane];
          a[mt][h][0] = v.x;
          a[mt][h][1] = v.y;
          a[mt][h][2] = v.z;
          a[mt][h][3] = v.w;
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) a[mt][h][e] = qa[QS ? 0 : mt][kk + h][e];
        }
      }
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) {
      uint32_t b[4];
      ldmatrix_x4(b, kl + nt * 8 * kLd + kk * 16);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma_f16(s[mt][nt], a[mt][0], b[0], b[1]);
        mma_f16(s[mt][nt], a[mt][1], b[2], b[3]);
      }
    }
  }
  if (mask) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (key0 + nt * 8 + quad_col + (e & 1) > qpos[mt][e >> 1]) s[mt][nt][e] = -INFINITY;
  }

  // Online softmax, per row tile exactly as warp_attend.
  uint32_t p[MT][kNt][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float base[2], alpha[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = st[mt].m[i];
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * i], s[mt][nt][2 * i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      base[i] = mx == -INFINITY ? 0.0f : mx;
      alpha[i] = exp2f(st[mt].m[i] - base[i]);
      st[mt].m[i] = mx;
      st[mt].l[i] *= alpha[i];
    }
#pragma unroll
    for (int nt = 0; nt < HD / 8; ++nt) {
      st[mt].o[nt][0] *= alpha[0];
      st[mt].o[nt][1] *= alpha[0];
      st[mt].o[nt][2] *= alpha[1];
      st[mt].o[nt][3] *= alpha[1];
    }
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const __half2 h = __floats2half2_rn(exp2f(s[mt][nt][2 * i] - base[i]), exp2f(s[mt][nt][2 * i + 1] - base[i]));
        const float2 r = __half22float2(h);
        st[mt].l[i] += r.x + r.y;
        p[mt][nt][i] = *reinterpret_cast<const uint32_t*>(&h);
      }
    }
  }

  // O += P V, one ldmatrix.trans of V for MT row tiles.
#pragma unroll
  for (int kk = 0; kk < KEYS / 16; ++kk) {
    const __half* vr = v_s + (kk * 16 + lane % 16) * kLd + (lane / 16) * 8;
#pragma unroll
    for (int nt = 0; nt < HD / 8; nt += 2) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, vr + nt * 8);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint32_t a[4] = {p[mt][2 * kk][0], p[mt][2 * kk][1], p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]};
        mma_f16(st[mt].o[nt], a, b[0], b[1]);
        mma_f16(st[mt].o[nt + 1], a, b[2], b[3]);
      }
    }
  }
}

template <int HD, int WARPS, int MT, bool QS>
__host__ __device__ constexpr size_t prefill_mt_smem_bytes() {
  return tile_smem_bytes<HD>() + (QS ? size_t{WARPS} * MT * (HD / 16) * 32 * sizeof(uint4) : 0);
}

template <int HD, int WARPS, int MT, bool QS, int STEP>
__global__ void __launch_bounds__(WARPS * 32) attention_prefill_mt_kernel(const float* q, const __half* k_cache,
                                                                          const __half* v_cache, void* out,
                                                                          DType out_dt, int n, int pos, int n_heads,
                                                                          int n_kv_heads) {
  static_assert(kTileKeys % STEP == 0 && STEP % 16 == 0, "softmax step");
  constexpr int kThr = WARPS * 32, kWarpRows = kRowsPerWarp * MT, kBlockRows = WARPS * kWarpRows;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* smem = reinterpret_cast<__half*>(smem_raw);
  constexpr int kTileHalves = kTileKeys * smem_row<HD>();
  const int group = n_heads / n_kv_heads, n_rows = n * group;
  const int tile_row0 = (gridDim.y - 1 - blockIdx.y) * kBlockRows;
  const int kv_head = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t kv_dim = static_cast<size_t>(n_kv_heads) * HD, head_off = static_cast<size_t>(kv_head) * HD;

  const int warp_row0 = tile_row0 + warp * kWarpRows;
  const int block_last_row = min(tile_row0 + kBlockRows, n_rows) - 1;
  const int key_end = pos + block_last_row / group + 1;
  const int warp_last_row = min(warp_row0 + kWarpRows, n_rows) - 1;
  const int warp_min_pos = warp_row0 < n_rows ? pos + warp_row0 / group : -1;
  const int warp_max_pos = warp_row0 < n_rows ? pos + warp_last_row / group : -1;
  int qpos[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = warp_row0 + mt * kRowsPerWarp + lane / 4 + 8 * i;
      qpos[mt][i] = r < n_rows ? pos + r / group : -1;
    }

  const int n_tiles = (key_end + kTileKeys - 1) / kTileKeys;
  load_tile<HD, kThr>(smem, smem + kTileHalves, k_cache, v_cache, 0, key_end, kv_dim, head_off);
  cp_async_commit();
  const float scale = kLog2e * rsqrtf(static_cast<float>(HD));
  uint32_t qa[QS ? 1 : MT][HD / 16][4];
  uint4* q_s = reinterpret_cast<uint4*>(smem_raw + tile_smem_bytes<HD>()) + warp * MT * (HD / 16) * 32;
  if constexpr (QS) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      uint32_t t[HD / 16][4];
      load_q<HD>(t, q, warp_row0 + mt * kRowsPerWarp, n_rows, group, kv_head, n_heads, scale);
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk)
        q_s[(mt * (HD / 16) + kk) * 32 + lane] = make_uint4(t[kk][0], t[kk][1], t[kk][2], t[kk][3]);
    }
  } else {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      load_q<HD>(qa[mt], q, warp_row0 + mt * kRowsPerWarp, n_rows, group, kv_head, n_heads, scale);
  }
  WarpState<HD> st[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) st[mt].init();
  for (int i = 0; i < n_tiles; ++i) {
    if (i + 1 < n_tiles) {
      __half* next = smem + ((i + 1) & 1) * 2 * kTileHalves;
      load_tile<HD, kThr>(next, next + kTileHalves, k_cache, v_cache, (i + 1) * kTileKeys, key_end, kv_dim, head_off);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const __half* k_s = smem + (i & 1) * 2 * kTileHalves;
#pragma unroll
    for (int sub = 0; sub < kTileKeys / STEP; ++sub) {
      const int key0 = i * kTileKeys + sub * STEP;
      if (key0 <= warp_max_pos)  // warp-uniform
        warp_attend_mt<HD, STEP, MT, QS>(qa, q_s, k_s + sub * STEP * smem_row<HD>(),
                                         k_s + kTileHalves + sub * STEP * smem_row<HD>(), key0, qpos,
                                         key0 + STEP - 1 > warp_min_pos, st);
    }
    __syncthreads();
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    finish_sums(st[mt]);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = warp_row0 + mt * kRowsPerWarp + lane / 4 + 8 * i;
      if (r >= n_rows) continue;
      const int t = r / group, h = kv_head * group + r % group;
      const size_t row = (static_cast<size_t>(t) * n_heads + h) * HD + 2 * (lane % 4);
      const float inv = 1.0f / st[mt].l[i];
#pragma unroll
      for (int nt = 0; nt < HD / 8; ++nt) {
        store_f32(out, out_dt, row + nt * 8, st[mt].o[nt][2 * i] * inv);
        store_f32(out, out_dt, row + nt * 8 + 1, st[mt].o[nt][2 * i + 1] * inv);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding, split-K. Block (chunk, kv head, 16 x ROW_WARPS query rows): the rows of its chunk
// are loaded 64 at a time into shared memory (two stages). The four warps form ROW_WARPS row
// groups of 16 query rows times kSplit = 4 / ROW_WARPS key slots: warp w = group * kSplit + slot
// takes keys slot * 64/kSplit .. of each tile for its group's rows, with its own online softmax.
// ROW_WARPS is the fewest that hold all n x group query rows (up to 64; beyond, several blocks
// read the chunk), so the chunk is read from memory once for all of them (n = 1: 1 row group,
// 4 key slots of 16 keys; Llama-3 8B's n = 16: 64 rows, 4 row groups of all 64 keys). At the
// end each row group's slots merge in slot order and the chunk's partial goes to the
// workspace: for query (t, head h) and chunk c, ml[(c*n + t)*n_heads + h] = (max, sum) and
// acc[((c*n + t)*n_heads + h)*HD + d] the unnormalised output.
struct DecodeArgs {
  const float* q;
  const __half* k_cache;
  const __half* v_cache;
  float* acc;
  float2* ml;
  int n, pos_value;
  const int* d_pos;
  int n_heads, n_kv_heads, chunk;
};

template <int HD, int ROW_WARPS>
__global__ void __launch_bounds__(kThreads) attention_decode_f16_kernel(DecodeArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* smem = reinterpret_cast<__half*>(smem_raw);
  constexpr int kTileHalves = kTileKeys * smem_row<HD>();
  constexpr int kSplit = kWarps / ROW_WARPS, kWarpKeys = kTileKeys / kSplit, kBlockRows = ROW_WARPS * kRowsPerWarp;
  const int pos = a.d_pos ? *a.d_pos : a.pos_value;
  const int chunk = blockIdx.x, kv_head = blockIdx.y;
  const int key_begin = chunk * a.chunk;
  const int key_end = min(key_begin + a.chunk, pos + a.n);  // the last token sees pos + n - 1
  if (key_begin >= key_end) return;  // past the last position: the combine never reads it
  const int group = a.n_heads / a.n_kv_heads, n_rows = a.n * group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, slot = warp % kSplit;
  const int block_row0 = blockIdx.z * kBlockRows, row0 = block_row0 + (warp / kSplit) * kRowsPerWarp;
  const size_t kv_dim = static_cast<size_t>(a.n_kv_heads) * HD, head_off = static_cast<size_t>(kv_head) * HD;

  int qpos[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = row0 + lane / 4 + 8 * i;
    qpos[i] = r < n_rows ? pos + r / group : -1;
  }
  // The first tile's copy starts before Q's loads, which it then overlaps.
  const int n_tiles = (key_end - key_begin + kTileKeys - 1) / kTileKeys;
  load_tile<HD>(smem, smem + kTileHalves, a.k_cache, a.v_cache, key_begin, key_end, kv_dim, head_off);
  cp_async_commit();
  uint32_t qa[HD / 16][4];
  load_q<HD>(qa, a.q, row0, n_rows, group, kv_head, a.n_heads, kLog2e * rsqrtf(static_cast<float>(HD)));
  WarpState<HD> st;
  st.init();
  for (int i = 0; i < n_tiles; ++i) {
    if (i + 1 < n_tiles) {
      __half* next = smem + ((i + 1) & 1) * 2 * kTileHalves;
      load_tile<HD>(next, next + kTileHalves, a.k_cache, a.v_cache, key_begin + (i + 1) * kTileKeys, key_end, kv_dim,
                    head_off);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int key0 = key_begin + i * kTileKeys + slot * kWarpKeys;
    // warp-uniform; always masked (rows of different tokens, padding rows)
    if (key0 < key_end && row0 < n_rows) {
      const __half* k_s = smem + (i & 1) * 2 * kTileHalves + slot * kWarpKeys * smem_row<HD>();
      warp_attend<HD, kWarpKeys>(qa, k_s, k_s + kTileHalves, key0, qpos, true, st);
    }
    __syncthreads();
  }
  finish_sums(st);

  // Merge each row group's slots in slot order through shared memory (the tiles are no longer
  // read; 4 warps x 16 rows x (HD + 2) floats fit in one stage).
  float* o_s = reinterpret_cast<float*>(smem_raw);        // (warp, row, HD)
  float* m_s = o_s + kWarps * kRowsPerWarp * HD;          // (warp, row)
  float* l_s = m_s + kWarps * kRowsPerWarp;               // (warp, row)
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = lane / 4 + 8 * i;
    float* orow = o_s + (warp * kRowsPerWarp + r) * HD + 2 * (lane % 4);
#pragma unroll
    for (int nt = 0; nt < HD / 8; ++nt) {
      orow[nt * 8] = st.o[nt][2 * i];
      orow[nt * 8 + 1] = st.o[nt][2 * i + 1];
    }
    if (lane % 4 == 0) {
      m_s[warp * kRowsPerWarp + r] = st.m[i];
      l_s[warp * kRowsPerWarp + r] = st.l[i];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < kBlockRows * HD; e += kThreads) {
    const int br = e / HD, d = e % HD, row = block_row0 + br;
    if (row >= n_rows) break;  // rows grow with e
    // slot k of this row's group is warp w0 + k; the row is row r of those warps
    const int w0 = (br / kRowsPerWarp) * kSplit, r = br % kRowsPerWarp;
    float mx = -INFINITY;
#pragma unroll
    for (int k = 0; k < kSplit; ++k) mx = fmaxf(mx, m_s[(w0 + k) * kRowsPerWarp + r]);
    float o = 0.0f, l = 0.0f;
    if (mx != -INFINITY) {  // else no key of this chunk is visible to the row: o = l = 0
#pragma unroll
      for (int k = 0; k < kSplit; ++k) {
        const int w = w0 + k;
        const float f = exp2f(m_s[w * kRowsPerWarp + r] - mx);
        o += f * o_s[(w * kRowsPerWarp + r) * HD + d];
        l += f * l_s[w * kRowsPerWarp + r];
      }
    }
    const int t = row / group, h = kv_head * group + row % group;
    const size_t at = (static_cast<size_t>(chunk) * a.n + t) * a.n_heads + h;
    a.acc[at * HD + d] = o;
    if (d == 0) a.ml[at] = make_float2(mx, l);
  }
}

// Merges the chunks of one query row (token t, head h): weights exp2(m_c - M) with M the
// largest chunk max; threads of one group of HD/4 take every n_groups-th chunk, four output
// dimensions each, then the groups add up in group order.
constexpr int kCombineThreads = 256;

template <int HD>
__global__ void __launch_bounds__(kCombineThreads) attention_combine_kernel(const float* acc, const float2* ml,
                                                                           void* out, DType out_dt, int n,
                                                                           int pos_value, const int* d_pos,
                                                                           int n_heads, int chunk) {
  let_next_kernel_start();  // 1 block a query row: the output product's weight loads fill the other SMs
  constexpr int kLanes = HD / 4, kGroups = kCombineThreads / kLanes;
  __shared__ float4 part_s[kGroups][kLanes];
  __shared__ float l_s[kGroups];
  __shared__ float scratch[32];
  const int pos = d_pos ? *d_pos : pos_value;
  const int t = blockIdx.x / n_heads, h = blockIdx.x % n_heads;
  const int n_chunks = (pos + t) / chunk + 1;  // chunks holding a key this query sees
  const size_t stride = static_cast<size_t>(n) * n_heads;  // between chunks, in rows
  const size_t row = static_cast<size_t>(t) * n_heads + h;

  float mx = -INFINITY;
  for (int c = threadIdx.x; c < n_chunks; c += kCombineThreads) mx = fmaxf(mx, ml[c * stride + row].x);
  mx = block_max(mx, scratch);  // finite: chunk 0 holds key 0

  const int g = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float l = 0.0f;
  for (int c = g; c < n_chunks; c += kGroups) {
    const float2 cm = ml[c * stride + row];
    const float f = exp2f(cm.x - mx);
    const float4 v = reinterpret_cast<const float4*>(acc + (c * stride + row) * HD)[lane];
    o.x += f * v.x;
    o.y += f * v.y;
    o.z += f * v.z;
    o.w += f * v.w;
    l += f * cm.y;
  }
  part_s[g][lane] = o;
  if (lane == 0) l_s[g] = l;
  __syncthreads();
  if (threadIdx.x < kLanes) {
    float4 sum = part_s[0][threadIdx.x];
    float lsum = l_s[0];
#pragma unroll
    for (int k = 1; k < kGroups; ++k) {
      const float4 v = part_s[k][threadIdx.x];
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
      lsum += l_s[k];
    }
    const float inv = 1.0f / lsum;
    const size_t at = row * HD + 4 * threadIdx.x;
    store_f32(out, out_dt, at, sum.x * inv);
    store_f32(out, out_dt, at + 1, sum.y * inv);
    store_f32(out, out_dt, at + 2, sum.z * inv);
    store_f32(out, out_dt, at + 3, sum.w * inv);
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

template <int HD>
void launch_prefill(const float* q, const __half* k, const __half* v, void* out, DType out_dt, int n, int pos,
                    int n_heads, int n_kv_heads, cudaStream_t s) {
  const size_t smem = tile_smem_bytes<HD>();
  allow_smem<attention_prefill_f16_kernel<HD>>(smem);
  const int rows = n * (n_heads / n_kv_heads);
  // kv heads vary fastest, so every head's longest row tiles are dispatched first
  const dim3 grid(n_kv_heads, (rows + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp));
  attention_prefill_f16_kernel<HD><<<grid, kThreads, smem, s>>>(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads);
  CLLM_CUDA_CHECK_LAUNCH("attention_prefill_f16");
}

template <int HD, int WARPS, int MT, bool QS, int STEP>
void launch_prefill_mt(const float* q, const __half* k, const __half* v, void* out, DType out_dt, int n, int pos,
                       int n_heads, int n_kv_heads, cudaStream_t s) {
  constexpr auto kernel = attention_prefill_mt_kernel<HD, WARPS, MT, QS, STEP>;
  constexpr int kBlockRows = WARPS * kRowsPerWarp * MT;
  const size_t smem = prefill_mt_smem_bytes<HD, WARPS, MT, QS>();
  // Q in shared memory may pass a device's opt-in limit (99 KiB on sm_86/89: variants 2, 4, 6
  // at head_dim 128): those devices run the original kernel instead.
  int dev = 0, limit = 0;
  CLLM_CUDA_CHECK(cudaGetDevice(&dev));
  CLLM_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (smem > static_cast<size_t>(limit)) {
    launch_prefill<HD>(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, s);
    return;
  }
  allow_smem<kernel>(smem);
  const int rows = n * (n_heads / n_kv_heads);
  const dim3 grid(n_kv_heads, (rows + kBlockRows - 1) / kBlockRows);
  kernel<<<grid, WARPS * 32, smem, s>>>(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads);
  CLLM_CUDA_CHECK_LAUNCH("attention_prefill_f16");
}

// The prompt kernel's variants, by number (attention.h): the launcher of each head_dim.
struct PrefillVariant {
  const char* name;
  void (*launch64)(const float*, const __half*, const __half*, void*, DType, int, int, int, int, cudaStream_t);
  void (*launch128)(const float*, const __half*, const __half*, void*, DType, int, int, int, int, cudaStream_t);
};
const PrefillVariant kPrefillVariants[] = {
    {"0: 64 rows, 4 warps x 16 (original)", launch_prefill<64>, launch_prefill<128>},
    {"1: 128 rows, 8 warps x 16, K ldmatrix", launch_prefill_mt<64, 8, 1, false, 64>,
     launch_prefill_mt<128, 8, 1, false, 64>},
    {"2: 128 rows, 4 warps x 32, Q smem, K ldmatrix", launch_prefill_mt<64, 4, 2, true, 64>,
     launch_prefill_mt<128, 4, 2, true, 64>},
    {"3: 64 rows, 4 warps x 16, K ldmatrix", launch_prefill_mt<64, 4, 1, false, 64>,
     launch_prefill_mt<128, 4, 1, false, 64>},
    {"4: 128 rows, 4 warps x 32, Q smem, K ldmatrix, softmax /32 keys", launch_prefill_mt<64, 4, 2, true, 32>,
     launch_prefill_mt<128, 4, 2, true, 32>},
    // 5, 6: softmax every 64 keys at head_dim 64, every 32 at 128 (64 spills there)
    {"5: 64 rows, 2 warps x 32, Q smem, K ldmatrix", launch_prefill_mt<64, 2, 2, true, 64>,
     launch_prefill_mt<128, 2, 2, true, 32>},
    {"6: 256 rows, 8 warps x 32, Q smem, K ldmatrix", launch_prefill_mt<64, 8, 2, true, 64>,
     launch_prefill_mt<128, 8, 2, true, 32>},
};
constexpr int kNumPrefillVariants = sizeof(kPrefillVariants) / sizeof(kPrefillVariants[0]);

template <int HD, int ROW_WARPS>
void launch_decode_rows(const DecodeArgs& a, int n_chunks, cudaStream_t s) {
  const size_t smem = tile_smem_bytes<HD>();
  allow_smem<attention_decode_f16_kernel<HD, ROW_WARPS>>(smem);
  const int rows = a.n * (a.n_heads / a.n_kv_heads), block_rows = ROW_WARPS * kRowsPerWarp;
  const dim3 grid(n_chunks, a.n_kv_heads, (rows + block_rows - 1) / block_rows);
  attention_decode_f16_kernel<HD, ROW_WARPS><<<grid, kThreads, smem, s>>>(a);
  CLLM_CUDA_CHECK_LAUNCH("attention_decode_f16");
}

template <int HD>
void launch_decode(const DecodeArgs& a, int n_chunks, void* out, DType out_dt, cudaStream_t s) {
  // The merge at the end reuses the tiles' shared memory.
  static_assert(sizeof(float) * kWarps * kRowsPerWarp * (HD + 2) <= tile_smem_bytes<HD>(), "merge space");
  // The fewest row groups that hold the query rows (then every key slot has work).
  const int rows = a.n * (a.n_heads / a.n_kv_heads);
  if (rows <= kRowsPerWarp)
    launch_decode_rows<HD, 1>(a, n_chunks, s);
  else if (rows <= 2 * kRowsPerWarp)
    launch_decode_rows<HD, 2>(a, n_chunks, s);
  else
    launch_decode_rows<HD, 4>(a, n_chunks, s);
  attention_combine_kernel<HD><<<a.n * a.n_heads, kCombineThreads, 0, s>>>(a.acc, a.ml, out, out_dt, a.n, a.pos_value,
                                                                          a.d_pos, a.n_heads, a.chunk);
  CLLM_CUDA_CHECK_LAUNCH("attention_combine");
}

}  // namespace

bool attention_flash_supported(DType kv_dt, int head_dim) {
  return kv_dt == DType::F16 && (head_dim == 64 || head_dim == 128);
}

int attention_prefill_variants() { return kNumPrefillVariants; }

const char* attention_prefill_variant_name(int variant) {
  if (variant < 0 || variant >= kNumPrefillVariants) fail("attention_prefill_variant_name: no variant ", variant);
  return kPrefillVariants[variant].name;
}

int attention_prefill_default_variant() {
  static const int variant = [] {
    const char* env = std::getenv("CLLM_PREFILL_VARIANT");
    if (!env || !*env) return kDefaultPrefillVariant;
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (*end != '\0' || v < 0 || v >= kNumPrefillVariants)
      fail("CLLM_PREFILL_VARIANT=", env, ": expected 0 .. ", kNumPrefillVariants - 1);
    return static_cast<int>(v);
  }();
  return variant;
}

void attention_prefill_f16_variant(int variant, const float* q, const void* k_cache, const void* v_cache, void* out,
                                   DType out_dt, int n, int pos, int n_heads, int n_kv_heads, int head_dim,
                                   cudaStream_t s) {
  if (variant < 0 || variant >= kNumPrefillVariants) fail("attention_prefill_f16: no variant ", variant);
  if (n <= 0) return;
  check_shape("attention_prefill_f16", k_cache, v_cache, n_heads, n_kv_heads, head_dim);
  const auto* k = static_cast<const __half*>(k_cache);
  const auto* v = static_cast<const __half*>(v_cache);
  const PrefillVariant& pv = kPrefillVariants[variant];
  (head_dim == 64 ? pv.launch64 : pv.launch128)(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, s);
}

void attention_prefill_f16(const float* q, const void* k_cache, const void* v_cache, void* out, DType out_dt, int n,
                           int pos, int n_heads, int n_kv_heads, int head_dim, cudaStream_t s) {
  attention_prefill_f16_variant(attention_prefill_default_variant(), q, k_cache, v_cache, out, out_dt, n, pos,
                                n_heads, n_kv_heads, head_dim, s);
}

void attention_decode_f16(const float* q, const void* k_cache, const void* v_cache, void* out, DType out_dt, int n,
                          int pos, const int* d_pos, int n_heads, int n_kv_heads, int head_dim, int context,
                          float* workspace, size_t workspace_bytes, cudaStream_t s) {
  if (n <= 0) return;
  check_shape("attention_decode_f16", k_cache, v_cache, n_heads, n_kv_heads, head_dim);
  if (n > kMaxDecodeTokens) fail("attention_decode_f16: ", n, " tokens (at most ", kMaxDecodeTokens, ")");
  if (d_pos && n != 1) fail("attention_decode_f16: a position in device memory needs n == 1");
  if (context <= 0 || (!d_pos && (pos < 0 || pos + n > context)))
    fail("attention_decode_f16: positions ", pos, " .. ", pos + n - 1, " outside the context ", context);
  const size_t need = attention_workspace_bytes(n_heads, head_dim, context);
  if (!workspace || workspace_bytes < need || reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    fail("attention_decode_f16: the workspace needs ", need, " bytes (16-byte aligned), got ", workspace_bytes);
  DecodeArgs a;
  a.q = q;
  a.k_cache = static_cast<const __half*>(k_cache);
  a.v_cache = static_cast<const __half*>(v_cache);
  const int chunk = attention_decode_chunk(context);
  const int max_chunks = (context + chunk - 1) / chunk;
  const size_t rows = static_cast<size_t>(max_chunks) * kMaxDecodeTokens * n_heads;
  a.acc = workspace;
  a.ml = reinterpret_cast<float2*>(reinterpret_cast<char*>(workspace) +
                                   (rows * head_dim * sizeof(float) + 15) / 16 * 16);
  a.n = n;
  a.pos_value = pos;
  a.d_pos = d_pos;
  a.n_heads = n_heads;
  a.n_kv_heads = n_kv_heads;
  a.chunk = chunk;
  // With pos on the host only the chunks up to pos + n - 1 are launched; from device memory,
  // all of the context's (those past pos exit at once). Same blocks, same bits.
  const int n_chunks = d_pos ? max_chunks : (pos + n + chunk - 1) / chunk;
  if (head_dim == 64)
    launch_decode<64>(a, n_chunks, out, out_dt, s);
  else
    launch_decode<128>(a, n_chunks, out, out_dt, s);
}

}  // namespace cllm::cuda
