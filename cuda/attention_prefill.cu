// Flash attention for prompts (more than kMaxDecodeTokens tokens) on tensor cores: a block
// of query rows streams K/V tiles through shared memory (attention_mma.cuh has the warp's
// step and the precision argument). Several block layouts are kept as variants
// (CLLM_PREFILL_VARIANT; docs/benchmarks.md has their measured speeds).
#include <algorithm>
#include <cstdlib>

#include "cuda/attention_mma.cuh"
#include "cuda/attention_prefill_sm90.h"  // defined only where CLLM_HAVE_SM90A

namespace cllm::cuda {

namespace {

// ---------------------------------------------------------------------------------------------
// Prompt attention. Block (kv head, row tile): 64 query rows (4 warps x 16) of one GQA group
// stream the keys 0 .. (their last position) through shared memory, 64 at a time, in two stages
// (cp.async of tile i+1 overlaps the math of tile i). A warp skips tiles entirely above its
// rows' diagonal and masks only tiles that cross it. Row tiles run longest first (the last
// queries see the most keys), which evens out the causal triangle over the SMs.
//
// Split keys (split.chunk > 0, grid z = the splits): block z takes keys z*chunk .. +chunk-1 of
// its rows and writes unnormalised partials in the decode path's workspace layout (for query
// (t, head h) and split z: ml[(z*n + t)*n_heads + h], acc[that row * HD + d]); the decode
// path's combine merges them. At depth the blocks of a 512-token batch are too few to fill the
// GPU (8 kv heads x 32 row tiles on 132 SMs); splitting the keys multiplies them.
struct PrefillSplit {
  int chunk = 0;  // keys per split, a multiple of kTileKeys; 0: no split
  float* acc = nullptr;
  float2* ml = nullptr;
};

template <int HD>
__global__ void __launch_bounds__(kThreads) attention_prefill_f16_kernel(const float* q, const __half* k_cache,
                                                                         const __half* v_cache, void* out,
                                                                         DType out_dt, int n, int pos, int n_heads,
                                                                         int n_kv_heads, int window, PrefillSplit split) {
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
  int qpos[2], qlo[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp_row0 + lane / 4 + 8 * i;
    qpos[i] = r < n_rows ? pos + r / group : -1;
    qlo[i] = first_key(qpos[i], window);
  }
  // With a window: the keys from the block's first row's first key (tile_begin), the warp's
  // rows' first keys (warp_lo .. warp_hi: tiles wholly below warp_lo are skipped, tiles
  // reaching below warp_hi are masked).
  const int tile_begin = first_key(pos + tile_row0 / group, window) / kTileKeys * kTileKeys;
  const int warp_lo = first_key(warp_min_pos, window), warp_hi = first_key(warp_max_pos, window);

  // This block's keys: all of its rows' prefix, or split z's range of it.
  const int key_lo = split.chunk ? blockIdx.z * split.chunk : tile_begin;  // (no window when split)
  const int key_hi = split.chunk ? min(key_lo + split.chunk, key_end) : key_end;
  if (key_lo >= key_hi) return;  // no row of the block sees this split: the combine skips it

  // The first tile's copy starts before Q's loads, which it then overlaps.
  const int n_tiles = (key_hi - key_lo + kTileKeys - 1) / kTileKeys;
  load_tile<HD>(smem, smem + kTileHalves, k_cache, v_cache, key_lo, key_hi, kv_dim, head_off);
  cp_async_commit();
  uint32_t qa[HD / 16][4];
  load_q<HD>(qa, q, warp_row0, n_rows, group, kv_head, n_heads, kLog2e * rsqrtf(static_cast<float>(HD)));
  WarpState<HD> st;
  st.init();
  for (int i = 0; i < n_tiles; ++i) {
    if (i + 1 < n_tiles) {
      __half* next = smem + ((i + 1) & 1) * 2 * kTileHalves;
      load_tile<HD>(next, next + kTileHalves, k_cache, v_cache, key_lo + (i + 1) * kTileKeys, key_hi, kv_dim,
                    head_off);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int key0 = key_lo + i * kTileKeys;
    if (key0 <= warp_max_pos && key0 + kTileKeys > warp_lo) {  // warp-uniform
      const __half* k_s = smem + (i & 1) * 2 * kTileHalves;
      const bool mask = key0 + kTileKeys - 1 > warp_min_pos || key0 < warp_hi;
      warp_attend<HD, kTileKeys>(qa, k_s, k_s + kTileHalves, key0, qpos, qlo, mask, st);
    }
    __syncthreads();  // the next iteration loads tile i + 2 into this stage
  }

  finish_sums(st);
  if (!split.chunk) {
    store_rows(st, warp_row0, n_rows, group, kv_head, n_heads, out, out_dt);
    return;
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {  // the partial: unnormalised O, and (max, sum)
    const int r = warp_row0 + lane / 4 + 8 * i;
    if (r >= n_rows) continue;
    const int t = r / group, h = kv_head * group + r % group;
    const size_t at = (static_cast<size_t>(blockIdx.z) * n + t) * n_heads + h;
    float* acc = split.acc + at * HD + 2 * (lane % 4);
#pragma unroll
    for (int nt = 0; nt < HD / 8; ++nt)
      *reinterpret_cast<float2*>(acc + nt * 8) = make_float2(st.o[nt][2 * i], st.o[nt][2 * i + 1]);
    if (lane % 4 == 0) split.ml[at] = make_float2(st.m[i], st.l[i]);
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
                                               const int (&qpos)[MT][2], const int (&qlo)[MT][2], bool mask,
                                               WarpState<HD> (&st)[MT]) {
  constexpr int kNt = KEYS / 8;
  constexpr int kLd = smem_row<HD>();
  const int lane = threadIdx.x % 32;

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
  // Masking and the online softmax, per row tile exactly as warp_attend.
  uint32_t p[MT][kNt][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) softmax_tile<HD, kNt>(s[mt], key0, qpos[mt], qlo[mt], mask, st[mt], p[mt]);

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
                                                                          int n_kv_heads, int window) {
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
  int qpos[MT][2], qlo[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = warp_row0 + mt * kRowsPerWarp + lane / 4 + 8 * i;
      qpos[mt][i] = r < n_rows ? pos + r / group : -1;
      qlo[mt][i] = first_key(qpos[mt][i], window);
    }
  // With a window, as the kernel above: tile_begin, warp_lo, warp_hi.
  const int tile_begin = first_key(pos + tile_row0 / group, window) / kTileKeys * kTileKeys;
  const int warp_lo = first_key(warp_min_pos, window), warp_hi = first_key(warp_max_pos, window);

  const int n_tiles = (key_end - tile_begin + kTileKeys - 1) / kTileKeys;
  load_tile<HD, kThr>(smem, smem + kTileHalves, k_cache, v_cache, tile_begin, key_end, kv_dim, head_off);
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
      load_tile<HD, kThr>(next, next + kTileHalves, k_cache, v_cache, tile_begin + (i + 1) * kTileKeys, key_end, kv_dim,
                          head_off);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const __half* k_s = smem + (i & 1) * 2 * kTileHalves;
#pragma unroll
    for (int sub = 0; sub < kTileKeys / STEP; ++sub) {
      const int key0 = tile_begin + i * kTileKeys + sub * STEP;
      if (key0 <= warp_max_pos && key0 + STEP > warp_lo)  // warp-uniform
        warp_attend_mt<HD, STEP, MT, QS>(qa, q_s, k_s + sub * STEP * smem_row<HD>(),
                                         k_s + kTileHalves + sub * STEP * smem_row<HD>(), key0, qpos, qlo,
                                         key0 + STEP - 1 > warp_min_pos || key0 < warp_hi, st);
    }
    __syncthreads();
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    finish_sums(st[mt]);
    store_rows(st[mt], warp_row0 + mt * kRowsPerWarp, n_rows, group, kv_head, n_heads, out, out_dt);
  }
}

template <int HD>
void launch_prefill_split(const float* q, const __half* k, const __half* v, void* out, DType out_dt, int n, int pos,
                          int n_heads, int n_kv_heads, int window, const PrefillSplit& split, int splits,
                          cudaStream_t s) {
  const size_t smem = tile_smem_bytes<HD>();
  allow_smem<attention_prefill_f16_kernel<HD>>(smem);
  const int rows = n * (n_heads / n_kv_heads);
  // kv heads vary fastest, so every head's longest row tiles are dispatched first
  const dim3 grid(n_kv_heads, (rows + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp), splits);
  attention_prefill_f16_kernel<HD><<<grid, kThreads, smem, s>>>(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads,
                                                                window, split);
  CLLM_CUDA_CHECK_LAUNCH("attention_prefill_f16");
}

template <int HD>
void launch_prefill(const float* q, const __half* k, const __half* v, void* out, DType out_dt, int n, int pos,
                    int n_heads, int n_kv_heads, int window, cudaStream_t s) {
  launch_prefill_split<HD>(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, window, PrefillSplit{}, 1, s);
}

template <int HD, int WARPS, int MT, bool QS, int STEP>
void launch_prefill_mt(const float* q, const __half* k, const __half* v, void* out, DType out_dt, int n, int pos,
                       int n_heads, int n_kv_heads, int window, cudaStream_t s) {
  constexpr auto kernel = attention_prefill_mt_kernel<HD, WARPS, MT, QS, STEP>;
  constexpr int kBlockRows = WARPS * kRowsPerWarp * MT;
  const size_t smem = prefill_mt_smem_bytes<HD, WARPS, MT, QS>();
  // Q in shared memory may pass a device's opt-in limit (99 KiB on sm_86/89: variants 2, 4, 6
  // at head_dim 128): those devices run the original kernel instead.
  int dev = 0, limit = 0;
  CLLM_CUDA_CHECK(cudaGetDevice(&dev));
  CLLM_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (smem > static_cast<size_t>(limit)) {
    launch_prefill<HD>(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, window, s);
    return;
  }
  allow_smem<kernel>(smem);
  const int rows = n * (n_heads / n_kv_heads);
  const dim3 grid(n_kv_heads, (rows + kBlockRows - 1) / kBlockRows);
  kernel<<<grid, WARPS * 32, smem, s>>>(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, window);
  CLLM_CUDA_CHECK_LAUNCH("attention_prefill_f16");
}

// Hopper's warpgroup kernel (attention_prefill_sm90.cu) where the build and the device have it,
// else the original kernel.
template <int HD, int FORM, int WARPGROUPS = 1>
void launch_prefill_wgmma(const float* q, const __half* k, const __half* v, void* out, DType out_dt, int n, int pos,
                          int n_heads, int n_kv_heads, int window, cudaStream_t s) {
#if CLLM_HAVE_SM90A
  if (attention_prefill_wgmma_supported()) {
    attention_prefill_wgmma(FORM, WARPGROUPS, q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, HD, window, s);
    return;
  }
#endif
  launch_prefill<HD>(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, window, s);
}

// The prompt kernel's variants, by number (attention.h): the launcher of each head_dim.
// split_keys: at depth, with a workspace, the keys split across blocks (launch_split_keys).
struct PrefillVariant {
  const char* name;
  // (q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, window, stream)
  void (*launch64)(const float*, const __half*, const __half*, void*, DType, int, int, int, int, int, cudaStream_t);
  void (*launch128)(const float*, const __half*, const __half*, void*, DType, int, int, int, int, int, cudaStream_t);
  bool split_keys = false;
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
    {"7: 64 rows, 4 warps x 16, keys split across up to 4 blocks at depth", launch_prefill<64>, launch_prefill<128>,
     true},
    {"8: 64 rows, one warpgroup, wgmma (sm_90a; else 0)", launch_prefill_wgmma<64, kWgmmaSerial>,
     launch_prefill_wgmma<128, kWgmmaSerial>},
    {"9: 64 rows, one warpgroup, wgmma, softmax beside P V (sm_90a; else 0)", launch_prefill_wgmma<64, kWgmmaPipelined>,
     launch_prefill_wgmma<128, kWgmmaPipelined>},
    {"10: 128 rows, two warpgroups, wgmma, softmax beside P V (sm_90a; else 0)",
     launch_prefill_wgmma<64, kWgmmaPipelined, 2>, launch_prefill_wgmma<128, kWgmmaPipelined, 2>},
    {"11: as 9, lean: S overwritten, rescale skipped where no max moved (sm_90a; else 0)",
     launch_prefill_wgmma<64, kWgmmaLean>, launch_prefill_wgmma<128, kWgmmaLean>},
    {"12: as 11, one barrier a tile, tiles loaded one ahead (sm_90a; else 0)",
     launch_prefill_wgmma<64, kWgmmaLeanOneBarrier>, launch_prefill_wgmma<128, kWgmmaLeanOneBarrier>},
    {"13: 128 rows, two warpgroups taking turns, fed by a TMA producer warp (sm_90a; else 0)",
     launch_prefill_wgmma<64, kWgmmaProducer>, launch_prefill_wgmma<128, kWgmmaProducer>},
    {"14: as 13, lean: S overwritten, rescale skipped where no max moved (sm_90a; else 0)",
     launch_prefill_wgmma<64, kWgmmaProducerLean>, launch_prefill_wgmma<128, kWgmmaProducerLean>},
};

// Keys split across blocks: up to kMaxKeySplits ranges of at least kMinSplitKeys keys, as many
// as the workspace holds (n x n_heads x (HD + 2) floats a split). Returns false (nothing
// launched) when one range would do.
constexpr int kMaxKeySplits = 4, kMinSplitKeys = 1024;
bool launch_split_keys(const float* q, const __half* k, const __half* v, void* out, DType out_dt, int n, int pos,
                       int n_heads, int n_kv_heads, int head_dim, float* workspace, size_t workspace_bytes,
                       cudaStream_t s) {
  const int keys = pos + n;  // the last row's prefix
  // acc (splits x n x n_heads rows of head_dim floats), then ml (a float2 a row), 16-aligned
  const auto acc_bytes = [&](int splits) {
    return (static_cast<size_t>(splits) * n * n_heads * head_dim * sizeof(float) + 15) / 16 * 16;
  };
  const auto need = [&](int splits) { return acc_bytes(splits) + static_cast<size_t>(splits) * n * n_heads * 8; };
  int splits = workspace ? std::min(kMaxKeySplits, keys / kMinSplitKeys) : 0;
  while (splits > 1 && need(splits) > workspace_bytes) --splits;
  if (splits <= 1) return false;
  PrefillSplit split;
  split.chunk = (keys + splits * kTileKeys - 1) / (splits * kTileKeys) * kTileKeys;
  split.acc = workspace;
  split.ml = reinterpret_cast<float2*>(reinterpret_cast<char*>(workspace) + acc_bytes(splits));
  const int used = (keys + split.chunk - 1) / split.chunk;  // splits holding a key (<= splits)
  if (head_dim == 64)
    launch_prefill_split<64>(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, 0, split, used, s);
  else
    launch_prefill_split<128>(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, 0, split, used, s);
  attention_combine_f16(head_dim, split.acc, split.ml, out, out_dt, n, pos, n_heads, split.chunk, s);
  return true;
}
constexpr int kNumPrefillVariants = sizeof(kPrefillVariants) / sizeof(kPrefillVariants[0]);

}  // namespace

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
                                   float* workspace, size_t workspace_bytes, cudaStream_t s, int window) {
  if (variant < 0 || variant >= kNumPrefillVariants) fail("attention_prefill_f16: no variant ", variant);
  if (n <= 0) return;
  if (window < 0) fail("attention_prefill_f16: sliding window ", window, " must be >= 0 (0: none)");
  check_shape("attention_prefill_f16", k_cache, v_cache, n_heads, n_kv_heads, head_dim);
  if (workspace && reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    fail("attention_prefill_f16: the workspace must be 16-byte aligned");
  const auto* k = static_cast<const __half*>(k_cache);
  const auto* v = static_cast<const __half*>(v_cache);
  const PrefillVariant& pv = kPrefillVariants[variant];
  if (pv.split_keys && window == 0 &&
      launch_split_keys(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, head_dim, workspace, workspace_bytes, s))
    return;
  (head_dim == 64 ? pv.launch64 : pv.launch128)(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, window, s);
}

void attention_prefill_f16(const float* q, const void* k_cache, const void* v_cache, void* out, DType out_dt, int n,
                           int pos, int n_heads, int n_kv_heads, int head_dim, float* workspace,
                           size_t workspace_bytes, cudaStream_t s, int window) {
  attention_prefill_f16_variant(attention_prefill_default_variant(), q, k_cache, v_cache, out, out_dt, n, pos,
                                n_heads, n_kv_heads, head_dim, workspace, workspace_bytes, s, window);
}

}  // namespace cllm::cuda
