// Flash attention for prompts on Hopper's warpgroup tensor cores (wgmma; compiled for sm_90a
// only, cuda/CMakeLists.txt). The numerics are the mma.sync kernels' (attention_mma.cuh): f16 Q,
// K, P, fp32 accumulators, the same masking and online softmax (softmax_scores), each row's keys
// in index order.
//
// Why: the mma.sync kernels reach about 200-270 TFLOP/s on the H100. Each mma.sync m16n8k16
// reads its 16x8 B fragment from shared memory through the registers of every warp that uses
// it; wgmma reads B from shared memory itself, once for a warpgroup's 64 rows.
//
// Block (kv head, 64-row tile): one warpgroup (4 warps x 16 query rows, the rows of one GQA group
// as in the other kernels) streams 64-key tiles of K and V through shared memory (cp.async).
// Per tile:
//   S (64 x 64, fp32) = Q K^T      HD/16 wgmma m64n64k16, Q from registers, K from shared memory
//   softmax_scores                 each warp its 16 rows, in registers
//   O (64 x HD) += P V             4 wgmma m64nHDk16, P from registers, V from shared memory
// The accumulators of m64nNk16 hold, per warp, the mma.sync m16n8 layout of its 16 rows, and the
// A operand in registers the m16n8k16 A layout: the warp's softmax is the mma.sync kernels'.
// Two forms: the three steps one after another (two stages of tiles), or pipelined (three
// stages), each tile's softmax beside the previous tile's P V.
#include "cuda/attention_prefill_sm90.h"

#include <cuda.h>
#include <cudaTypedefs.h>

#include "cuda/attention_mma.cuh"

namespace cllm::cuda {

namespace {

constexpr int kWgRows = 64;      // query rows a warpgroup: 4 warps x 16
constexpr int kWgThreads = 128;  // a warpgroup

// The shared-memory layout of a 64-key tile (keys x HD halves), one for each of K and V, with
// wgmma's 128-byte swizzle: dims in blocks of 64 (8 KiB a block: 64 keys of 128 bytes); in a key's
// 128 bytes, 16-byte piece j sits at j ^ (key % 8), so the same piece of 8 keys falls in 8
// different bank groups. The same tile serves both products:
// - K is S's B operand K-major (the key is N, the head dimension k): SBO (next 8 keys) 1024 bytes;
//   a step of 16 dims starts 32 bytes on inside the key's row (the swizzle applies to the address);
// - V is O's B operand N-major (the head dimension is N, the key k): LBO (next 64 dims) 8 KiB, SBO
//   (next 8 keys) 1024 bytes.
// The swizzle is a function of address bits 4-9, so tiles start at 1024-byte boundaries.
template <int HD>
__device__ __forceinline__ int tile_at(int row, int seg) {  // in halves; seg: 8-half column piece
  return (seg / 8) * 64 * 64 + row * 64 + ((seg % 8) ^ (row % 8)) * 8;
}

// The block's threads (WGS warpgroups) copy keys key0 .. key0 + 63 of one kv head's K and V into a
// stage; rows at or past key_end are zeros (as load_tile). Eight consecutive threads copy a key's
// 64 dims (128 bytes read, 128 bytes written across all 32 banks).
template <int HD, int WGS>
__device__ __forceinline__ void load_tile_wg(__half* k_s, __half* v_s, const __half* k_cache, const __half* v_cache,
                                             int key0, int key_end, size_t kv_dim, size_t head_off) {
  for (int i = threadIdx.x; i < kTileKeys * HD / 8; i += WGS * kWgThreads) {
    const int row = (i / 8) % kTileKeys, seg = (i / (8 * kTileKeys)) * 8 + i % 8;
    const bool in = key0 + row < key_end;
    const size_t at = in ? static_cast<size_t>(key0 + row) * kv_dim + head_off + seg * 8 : 0;
    cp_async_16(k_s + tile_at<HD>(row, seg), k_cache + at, in);
    cp_async_16(v_s + tile_at<HD>(row, seg), v_cache + at, in);
  }
}

// A shared-memory matrix descriptor with the 128-byte swizzle: start address, LBO and SBO in bytes.
__device__ __forceinline__ uint64_t smem_desc(const __half* p, uint32_t lbo, uint32_t sbo) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  return static_cast<uint64_t>((a & 0x3FFFF) >> 4) | static_cast<uint64_t>((lbo & 0x3FFFF) >> 4) << 16 |
         static_cast<uint64_t>((sbo & 0x3FFFF) >> 4) << 32 | uint64_t{1} << 62;
}

// S's B operand for dims 16kk .. 16kk + 15 of a K tile, and O's for keys 16kk .. 16kk + 15 of a V
// tile (tile_at's layouts).
// (LBO 16 for K: unused by K-major swizzled layouts, where it must read 1.)
__device__ __forceinline__ uint64_t k_desc(const __half* k_s, int kk) {
  return smem_desc(k_s + (kk / 4) * 64 * 64 + (kk % 4) * 16, 16, 1024);
}
__device__ __forceinline__ uint64_t v_desc(const __half* v_s, int kk) {
  return smem_desc(v_s + kk * 16 * 64, 64 * 128, 1024);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>  // until at most N of the committed groups are pending
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// cp.async writes shared memory through the generic proxy, wgmma reads it through the async one.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Keeps the compiler from moving reads of accumulators above the wait for their wgmma.
template <int NT>
__device__ __forceinline__ void fence_accumulators(float (&d)[NT][4]) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[nt][e])::"memory");
}

// d (64 x N, fp32; this warp's 16 rows in the m16n8 layout, d[nt] = columns 8nt .. 8nt+7) +=
// a (64 x 16, f16, from registers) * B (16 x N, f16, shared memory by desc); with accumulate 0,
// d = a * B (d's old values unread). TRANS: B is N-major. Asynchronous: wgmma_commit and
// wgmma_wait before reading d.
template <int TRANS>
__device__ __forceinline__ void wgmma_n64(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc,
                                          int accumulate = 1) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %37;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),
        "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]),
        "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]),
        "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "n"(TRANS), "r"(accumulate));
}

template <int TRANS>
__device__ __forceinline__ void wgmma_n128(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, "
      "%43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, %69;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),
        "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]),
        "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]),
        "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]),
        "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]),
        "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
        "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]),
        "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
        "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "n"(TRANS), "r"(1));
}

// O += P V for head size HD (64: one m64n64k16 a 16-key step, 128: one m64n128k16).
template <int HD>
__device__ __forceinline__ void wgmma_pv(float (&o)[HD / 8][4], const uint32_t (&a)[4], uint64_t desc) {
  if constexpr (HD == 64)
    wgmma_n64<1>(o, a, desc);
  else
    wgmma_n128<1>(o, a, desc);
}

// A block's rows and keys: the 64 x WGS query rows of tile blockIdx.y (longest first) of kv head
// blockIdx.x, and the 64-key tiles they see (as the mma.sync kernel's block, one warp's rows each).
template <int WGS>
struct WgBlock {
  int group, n_rows, kv_head, warp_row0;
  int block_min_pos, block_hi;  // the first row's position; the last row's first key (windows)
  int key_end, tile_begin, n_tiles;
  int qpos[2], qlo[2];  // this lane's rows: position (-1: padding), first key

  __device__ __forceinline__ WgBlock(int n, int pos, int n_heads, int n_kv_heads, int window) {
    group = n_heads / n_kv_heads;
    n_rows = n * group;
    const int tile_row0 = (gridDim.y - 1 - blockIdx.y) * WGS * kWgRows;
    kv_head = blockIdx.x;
    warp_row0 = tile_row0 + (threadIdx.x / 32) * kRowsPerWarp;
    const int block_last_row = min(tile_row0 + WGS * kWgRows, n_rows) - 1;
    block_min_pos = pos + tile_row0 / group;
    const int block_max_pos = pos + block_last_row / group;
    key_end = block_max_pos + 1;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = warp_row0 + threadIdx.x % 32 / 4 + 8 * i;
      qpos[i] = r < n_rows ? pos + r / group : -1;
      qlo[i] = first_key(qpos[i], window);
    }
    // With a window: the first tile holds the first row's first key; tiles reaching below the last
    // row's first key are masked.
    tile_begin = first_key(block_min_pos, window) / kTileKeys * kTileKeys;
    block_hi = first_key(block_max_pos, window);
    n_tiles = (key_end - tile_begin + kTileKeys - 1) / kTileKeys;
  }
  __device__ __forceinline__ int key0(int tile) const { return tile_begin + tile * kTileKeys; }
  __device__ __forceinline__ bool masked(int tile) const {
    return key0(tile) + kTileKeys - 1 > block_min_pos || key0(tile) < block_hi;
  }
};

// Issues S = Q K^T over a K tile (16 dims a step) into s; not committed. s is zeroed first, or
// (OVERWRITE) the first step ignores s's old values (wgmma's scale-d: no register write between
// wgmma_fence and the wgmma, and no registers spent on zeros).
template <int HD, bool OVERWRITE = false>
__device__ __forceinline__ void issue_scores(float (&s)[kTileKeys / 8][4], const uint32_t (&qa)[HD / 16][4],
                                             const __half* k_s) {
  if constexpr (!OVERWRITE) {
#pragma unroll
    for (int nt = 0; nt < kTileKeys / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
  }
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) wgmma_n64<0>(s, qa[kk], k_desc(k_s, kk), OVERWRITE ? kk > 0 : 1);
}

// Issues O += P V over a V tile (16 keys a step); not committed.
template <int HD>
__device__ __forceinline__ void issue_values(float (&o)[HD / 8][4], const uint32_t (&p)[kTileKeys / 8][2],
                                             const __half* v_s) {
#pragma unroll
  for (int kk = 0; kk < kTileKeys / 16; ++kk) {
    const uint32_t a[4] = {p[2 * kk][0], p[2 * kk][1], p[2 * kk + 1][0], p[2 * kk + 1][1]};
    wgmma_pv<HD>(o, a, v_desc(v_s, kk));
  }
}

// Keeps registers an in-flight wgmma reads (P) from being reused before the wait for it.
__device__ __forceinline__ void fence_operands(uint32_t (&p)[kTileKeys / 8][2]) {
#pragma unroll
  for (int nt = 0; nt < kTileKeys / 8; ++nt) asm volatile("" : "+r"(p[nt][0]), "+r"(p[nt][1])::"memory");
}

__device__ __forceinline__ void check_swizzle_alignment(const void* smem) {
  if (static_cast<uint32_t>(__cvta_generic_to_shared(smem)) % 1024 != 0) __trap();  // the swizzle: address bits 4-9
}

// Serial steps: per tile, S, then the softmax, then P V, each waited for. Two stages of tiles.
template <int HD, int WGS>
__global__ void __launch_bounds__(WGS * kWgThreads) attention_prefill_wgmma_kernel(const float* q, const __half* k_cache,
                                                                              const __half* v_cache, void* out,
                                                                              DType out_dt, int n, int pos,
                                                                              int n_heads, int n_kv_heads,
                                                                              int window) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  __half* smem = reinterpret_cast<__half*>(smem_raw);
  check_swizzle_alignment(smem_raw);
  constexpr int kTileHalves = kTileKeys * HD;  // one of K or V, no padding
  const WgBlock<WGS> b(n, pos, n_heads, n_kv_heads, window);
  const size_t kv_dim = static_cast<size_t>(n_kv_heads) * HD, head_off = static_cast<size_t>(b.kv_head) * HD;
  const auto load = [&](int tile) {
    __half* k_s = smem + (tile & 1) * 2 * kTileHalves;
    load_tile_wg<HD, WGS>(k_s, k_s + kTileHalves, k_cache, v_cache, b.key0(tile), b.key_end, kv_dim, head_off);
  };

  load(0);
  cp_async_commit();
  uint32_t qa[HD / 16][4];
  load_q<HD>(qa, q, b.warp_row0, b.n_rows, b.group, b.kv_head, n_heads, kLog2e * rsqrtf(static_cast<float>(HD)));
  WarpState<HD> st;
  st.init();
  for (int i = 0; i < b.n_tiles; ++i) {
    if (i + 1 < b.n_tiles) load(i + 1);
    cp_async_commit();
    cp_async_wait<1>();
    fence_proxy_async();
    __syncthreads();
    const __half* k_s = smem + (i & 1) * 2 * kTileHalves;

    float s[kTileKeys / 8][4];
    wgmma_fence();
    issue_scores<HD>(s, qa, k_s);
    wgmma_commit();
    wgmma_wait<0>();
    fence_accumulators(s);

    uint32_t p[kTileKeys / 8][2];
    softmax_tile<HD, kTileKeys / 8>(s, b.key0(i), b.qpos, b.qlo, b.masked(i), st, p);

    wgmma_fence();
    issue_values<HD>(st.o, p, k_s + kTileHalves);
    wgmma_commit();
    wgmma_wait<0>();
    fence_accumulators(st.o);
    fence_operands(p);  // P's registers are read until the wait
    __syncthreads();  // the next iteration loads tile i + 2 into this stage
  }
  finish_sums(st);
  store_rows(st, b.warp_row0, b.n_rows, b.group, b.kv_head, n_heads, out, out_dt);
}

// The epilogue of the pipelined forms: the last tile's P V (v_s: its V tile), then each row's
// sum and its output.
template <int HD, int WGS>
__device__ __forceinline__ void finish_rows(WarpState<HD>& st, uint32_t (&p)[kTileKeys / 8][2], const __half* v_s,
                                            const WgBlock<WGS>& b, int n_heads, void* out, DType out_dt) {
  wgmma_fence();
  issue_values<HD>(st.o, p, v_s);
  wgmma_commit();
  wgmma_wait<0>();
  fence_accumulators(st.o);
  finish_sums(st);
  store_rows(st, b.warp_row0, b.n_rows, b.group, b.kv_head, n_heads, out, out_dt);
}

// Pipelined steps (FlashAttention-3's order inside a warpgroup): tile j's S = Q K^T is issued,
// then tile j - 1's P V; the softmax of tile j runs while P V is on the tensor cores, and O is
// rescaled by tile j's alpha once that P V is done. Three stages of tiles, read by tiles j and
// j - 1. Tile j + 2 loads into the third at the end of iteration j, after a second barrier (two
// iterations ahead); or, with ONE_BARRIER, tile j + 1 loads into it after the first (one ahead).
// LEAN: S overwritten by its first wgmma (issue_scores), O's rescale skipped where no max moved
// (rescale): the same bits, 16 fewer registers at head_dim 128 and fewer multiplies.
template <int HD, int WGS, bool ONE_BARRIER, bool LEAN>
__global__ void __launch_bounds__(WGS * kWgThreads) attention_prefill_wgmma_pipelined_kernel(
    const float* q, const __half* k_cache, const __half* v_cache, void* out, DType out_dt, int n, int pos, int n_heads,
    int n_kv_heads, int window) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  __half* smem = reinterpret_cast<__half*>(smem_raw);
  check_swizzle_alignment(smem_raw);
  constexpr int kTileHalves = kTileKeys * HD;
  const WgBlock<WGS> b(n, pos, n_heads, n_kv_heads, window);
  const size_t kv_dim = static_cast<size_t>(n_kv_heads) * HD, head_off = static_cast<size_t>(b.kv_head) * HD;
  const auto k_stage = [&](int tile) { return smem + (tile % 3) * 2 * kTileHalves; };
  const auto load = [&](int tile) {
    if (tile < b.n_tiles)
      load_tile_wg<HD, WGS>(k_stage(tile), k_stage(tile) + kTileHalves, k_cache, v_cache, b.key0(tile),
                                b.key_end, kv_dim, head_off);
    cp_async_commit();  // a group every call, empty or not: the waits count groups
  };

  load(0);
  if constexpr (!ONE_BARRIER) load(1);
  uint32_t qa[HD / 16][4];
  load_q<HD>(qa, q, b.warp_row0, b.n_rows, b.group, b.kv_head, n_heads, kLog2e * rsqrtf(static_cast<float>(HD)));
  WarpState<HD> st;
  st.init();
  uint32_t p[kTileKeys / 8][2];  // the P of tile j - 1, whose P V is pending
  for (int j = 0; j < b.n_tiles; ++j) {
    if constexpr (ONE_BARRIER)
      cp_async_wait<0>();  // tile j has landed
    else
      cp_async_wait<1>();  // tile j has landed; tile j + 1 may still be in flight
    fence_proxy_async();
    __syncthreads();  // (ONE_BARRIER: every warp is past iteration j - 1, so tile j - 2's stage is free)
    if constexpr (ONE_BARRIER) load(j + 1);

    float s[kTileKeys / 8][4];
    wgmma_fence();
    issue_scores<HD, LEAN>(s, qa, k_stage(j));
    wgmma_commit();
    if (j > 0) {
      issue_values<HD>(st.o, p, k_stage(j - 1) + kTileHalves);
      wgmma_commit();
      wgmma_wait<1>();  // S done, P V may still run
    } else {
      wgmma_wait<0>();
    }
    fence_accumulators(s);

    uint32_t p_next[kTileKeys / 8][2];
    float alpha[2];
    softmax_scores(s, b.key0(j), b.qpos, b.qlo, b.masked(j), st.m, st.l, p_next, alpha);
    wgmma_wait<0>();  // tile j - 1's P V
    fence_accumulators(st.o);
    fence_operands(p);
    rescale<HD, LEAN>(st.o, alpha);
#pragma unroll
    for (int nt = 0; nt < kTileKeys / 8; ++nt) p[nt][0] = p_next[nt][0], p[nt][1] = p_next[nt][1];
    if constexpr (!ONE_BARRIER) {
      __syncthreads();  // tile j - 1's stage is read by no one now: tile j + 2 goes there
      load(j + 2);
    }
  }
  finish_rows(st, p, k_stage(b.n_tiles - 1) + kTileHalves, b, n_heads, out, out_dt);
}

// ---- Producer and consumers (form kWgmmaProducer): FlashAttention-3's layout of a block ----
// Two consumer warpgroups (warps 0-7, 128 query rows, the pipelined loop above each) and a
// producer warpgroup (warps 8-11) whose first lane loads the K and V tiles with the tensor memory accelerator
// (TMA: one instruction a 64-key x 64-dim box, the 128-byte swizzle done by the copy engine)
// into kProducerStages stages. mbarriers carry the hand-over: full[s] completes when stage s's
// bytes have landed, empty[s] when all 8 consumer warps are done with it. The consumers issue
// no loads and meet at no block-wide barrier; a ping-pong of two named barriers makes the two
// warpgroups take turns issuing their wgmmas, so one's softmax runs while the other's products
// are on the tensor cores. Registers: a block of 384 threads starts at 168 a thread; the
// producer gives its warpgroup's down to 40 and the consumers take theirs up to 232
// (128 x 40 + 256 x 232 = 64512 of the SM's 65536), as FlashAttention-3 does.
constexpr int kProducerStages = 4;
constexpr int kProducerThreads = 3 * kWgThreads;  // two consumer warpgroups + the producer's

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// Arrives and expects `bytes` more from asynchronous copies before the phase completes.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}
// Until the phase of this parity has completed (phase k has parity k % 2; a barrier starts in
// phase 0, so waiting on parity 1 before any phase completed returns at once). A wait of more
// than 2^35 cycles (about 17 s) can only be a broken hand-over: it traps, so the launch fails
// with an error instead of hanging the process.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  long long since = -1;
  for (;;) {
    uint32_t done;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
    if (done) return;
    if (since < 0)
      since = clock64();
    else if (clock64() - since > (1ll << 35))
      __trap();
  }
}
// One TMA box of a (dims, kv heads, keys) tensor into shared memory, completing on bar.
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap& map, int dim0, int head, int key,
                                            uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];\n" ::
          "r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(&map)), "r"(smem_u32(bar)), "r"(dim0), "r"(head), "r"(key)
      : "memory");
}
// Named barriers 1 and 2 (0 is __syncthreads): warpgroup w waits on 1 + w for its turn and
// arrives on 2 - w to give the other its turn; 256 threads each (128 waiting, 128 arriving).
__device__ __forceinline__ void turn_wait(int wg) {
  if (wg == 0)
    asm volatile("bar.sync 1, 256;\n" ::: "memory");
  else
    asm volatile("bar.sync 2, 256;\n" ::: "memory");
}
__device__ __forceinline__ void turn_give(int wg) {
  if (wg == 0)
    asm volatile("bar.arrive 2, 256;\n" ::: "memory");
  else
    asm volatile("bar.arrive 1, 256;\n" ::: "memory");
}
// A warpgroup's registers a thread (setmaxnreg: every thread of the warpgroup executes it).
template <int N>
__device__ __forceinline__ void registers_down() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N)); }
template <int N>
__device__ __forceinline__ void registers_up() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N)); }

// LEAN: as the pipelined kernel's (S overwritten by its first wgmma, O's rescale skipped where no
// max moved).
template <int HD, bool LEAN>
__global__ void __launch_bounds__(kProducerThreads, 1) attention_prefill_wgmma_producer_kernel(
    const __grid_constant__ CUtensorMap k_map, const __grid_constant__ CUtensorMap v_map, const float* q, void* out,
    DType out_dt, int n, int pos, int n_heads, int n_kv_heads, int window) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  __half* smem = reinterpret_cast<__half*>(smem_raw);
  check_swizzle_alignment(smem_raw);
  constexpr int kTileHalves = kTileKeys * HD;
  constexpr uint32_t kStageBytes = 2 * kTileHalves * sizeof(__half);  // K and V
  uint64_t* full = reinterpret_cast<uint64_t*>(smem_raw + kProducerStages * kStageBytes);
  uint64_t* empty = full + kProducerStages;
  const WgBlock<2> b(n, pos, n_heads, n_kv_heads, window);
  const auto k_stage = [&](int tile) { return smem + (tile % kProducerStages) * 2 * kTileHalves; };
  // The warpgroup, uniform across the warp (read from lane 0) so the compiler sees each
  // warpgroup's wgmmas on a convergent path.
  const int wg = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / kWgThreads, 0);
  if (threadIdx.x == 0) {
    for (int s = 0; s < kProducerStages; ++s) {
      mbar_init(&full[s], 1);  // the producer's arrive, then the bytes
      mbar_init(&empty[s], 8);  // every consumer warp's
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    fence_proxy_async();  // the barriers' state, visible to the copy engine
  }
  __syncthreads();  // the block's only one

  if (wg == 2) {  // the producer: one lane issues every copy
    registers_down<40>();
    if (threadIdx.x == 2 * kWgThreads)
      for (int t = 0; t < b.n_tiles; ++t) {
        const int s = t % kProducerStages;
        mbar_wait(&empty[s], (t / kProducerStages + 1) & 1);  // tile t - kProducerStages is done with
        mbar_arrive_expect_tx(&full[s], kStageBytes);
        __half* k_s = k_stage(t);
#pragma unroll
        for (int d = 0; d < HD / 64; ++d) {  // tile_at's blocks of 64 dims, 8 KiB each
          tma_load_3d(k_s + d * 64 * 64, k_map, d * 64, b.kv_head, b.key0(t), &full[s]);
          tma_load_3d(k_s + kTileHalves + d * 64 * 64, v_map, d * 64, b.kv_head, b.key0(t), &full[s]);
        }
      }
    return;
  }

  registers_up<232>();
  uint32_t qa[HD / 16][4];
  load_q<HD>(qa, q, b.warp_row0, b.n_rows, b.group, b.kv_head, n_heads, kLog2e * rsqrtf(static_cast<float>(HD)));
  WarpState<HD> st;
  st.init();
  uint32_t p[kTileKeys / 8][2];  // the P of tile j - 1, whose P V is pending
  if (wg == 1) turn_give(wg);    // warpgroup 0 issues first
  for (int j = 0; j < b.n_tiles; ++j) {
    mbar_wait(&full[j % kProducerStages], (j / kProducerStages) & 1);
    turn_wait(wg);
    float s[kTileKeys / 8][4];
    wgmma_fence();
    issue_scores<HD, LEAN>(s, qa, k_stage(j));
    wgmma_commit();
    if (j > 0) {
      issue_values<HD>(st.o, p, k_stage(j - 1) + kTileHalves);
      wgmma_commit();
      wgmma_wait<1>();  // S done, P V may still run
    } else {
      wgmma_wait<0>();
    }
    fence_accumulators(s);
    // The other's turn, its products queued behind this P V (given before the wait, the arrive
    // would serialize the wgmmas: ptxas C7514). Warpgroup 1's last is left out, so each barrier
    // sees as many arrivals as waits.
    if (wg == 0 || j + 1 < b.n_tiles) turn_give(wg);

    uint32_t p_next[kTileKeys / 8][2];
    float alpha[2];
    softmax_scores(s, b.key0(j), b.qpos, b.qlo, b.masked(j), st.m, st.l, p_next, alpha);
    wgmma_wait<0>();  // tile j - 1's P V
    fence_accumulators(st.o);
    fence_operands(p);
    if (j > 0 && threadIdx.x % 32 == 0) mbar_arrive(&empty[(j - 1) % kProducerStages]);
    rescale<HD, LEAN>(st.o, alpha);
#pragma unroll
    for (int nt = 0; nt < kTileKeys / 8; ++nt) p[nt][0] = p_next[nt][0], p[nt][1] = p_next[nt][1];
  }
  finish_rows(st, p, k_stage(b.n_tiles - 1) + kTileHalves, b, n_heads, out, out_dt);
}

// cuTensorMapEncodeTiled from the driver, looked up once (the runtime hands out its entry point,
// so nothing links libcuda). The first launch may be inside a graph capture: as allow_smem, the
// lookup runs in relaxed mode and the thread's mode is restored.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    CLLM_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    const cudaError_t err =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
    CLLM_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    CLLM_CUDA_CHECK(err);
    if (!fn || found != cudaDriverEntryPointSuccess)
      fail("attention_prefill_wgmma: the driver has no cuTensorMapEncodeTiled");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// One of K or V as a (HD dims, n_kv_heads, rows) f16 tensor, read in boxes of 64 dims x 64 keys
// with the 128-byte swizzle (tile_at's layout). Keys at or past `rows` (the launch's last
// position + 1) read as zeros, as load_tile_wg's.
CUtensorMap kv_tensor_map(const __half* cache, int head_dim, int n_kv_heads, int rows) {
  CUtensorMap map{};
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(head_dim), static_cast<cuuint64_t>(n_kv_heads),
                              static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(head_dim) * sizeof(__half),  // bytes, of dims 1 and 2
                                 static_cast<cuuint64_t>(head_dim) * n_kv_heads * sizeof(__half)};
  const cuuint32_t box[3] = {64, 1, static_cast<cuuint32_t>(kTileKeys)};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUresult r = tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3, const_cast<__half*>(cache), dims,
                                          strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                          CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    fail("attention_prefill_wgmma: cuTensorMapEncodeTiled failed (", static_cast<int>(r), ") for a cache of ", rows,
         " rows x ", n_kv_heads, " heads x ", head_dim);
  return map;
}

template <int HD, bool LEAN>
void launch_producer(const float* q, const __half* k, const __half* v, void* out, DType out_dt, int n, int pos,
                     int n_heads, int n_kv_heads, int window, cudaStream_t s) {
  constexpr auto kernel = attention_prefill_wgmma_producer_kernel<HD, LEAN>;
  const size_t smem = size_t{kProducerStages} * 2 * kTileKeys * HD * sizeof(__half) + 2 * kProducerStages * 8;
  allow_smem<kernel>(smem);
  const int rows = n * (n_heads / n_kv_heads);
  const dim3 grid(n_kv_heads, (rows + 2 * kWgRows - 1) / (2 * kWgRows));
  kernel<<<grid, kProducerThreads, smem, s>>>(kv_tensor_map(k, HD, n_kv_heads, pos + n),
                                              kv_tensor_map(v, HD, n_kv_heads, pos + n), q, out, out_dt, n, pos,
                                              n_heads, n_kv_heads, window);
  CLLM_CUDA_CHECK_LAUNCH("attention_prefill_wgmma_producer");
}

template <int HD, int FORM, int WGS>
void launch(const float* q, const __half* k, const __half* v, void* out, DType out_dt, int n, int pos, int n_heads,
            int n_kv_heads, int window, cudaStream_t s) {
  constexpr auto kernel = [] {
    if constexpr (FORM == kWgmmaSerial) return attention_prefill_wgmma_kernel<HD, WGS>;
    else
      return attention_prefill_wgmma_pipelined_kernel<HD, WGS, FORM == kWgmmaLeanOneBarrier,
                                                      FORM == kWgmmaLean || FORM == kWgmmaLeanOneBarrier>;
  }();
  const size_t smem = size_t{FORM == kWgmmaSerial ? 2 : 3} * 2 * kTileKeys * HD * sizeof(__half);  // K and V stages
  allow_smem<kernel>(smem);
  const int rows = n * (n_heads / n_kv_heads);
  const dim3 grid(n_kv_heads, (rows + WGS * kWgRows - 1) / (WGS * kWgRows));
  kernel<<<grid, WGS * kWgThreads, smem, s>>>(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, window);
  CLLM_CUDA_CHECK_LAUNCH("attention_prefill_wgmma");
}

template <int FORM, int WGS>
void launch_form(int head_dim, const float* q, const __half* k, const __half* v, void* out, DType out_dt, int n,
                 int pos, int n_heads, int n_kv_heads, int window, cudaStream_t s) {
  (head_dim == 64 ? launch<64, FORM, WGS> : launch<128, FORM, WGS>)(q, k, v, out, out_dt, n, pos, n_heads,
                                                                      n_kv_heads, window, s);
}

}  // namespace

bool attention_prefill_wgmma_supported() {
  return device_compute_capability() == 90;  // sm_90a code runs on compute capability 9.0 only
}

void attention_prefill_wgmma(int form, int warpgroups, const float* q, const void* k_cache, const void* v_cache,
                             void* out, DType out_dt, int n, int pos, int n_heads, int n_kv_heads, int head_dim,
                             int window, cudaStream_t s) {
  const auto* k = static_cast<const __half*>(k_cache);
  const auto* v = static_cast<const __half*>(v_cache);
  if (form == kWgmmaProducer || form == kWgmmaProducerLean) {
    const auto go = form == kWgmmaProducerLean ? (head_dim == 64 ? launch_producer<64, true> : launch_producer<128, true>)
                                               : (head_dim == 64 ? launch_producer<64, false> : launch_producer<128, false>);
    go(q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, window, s);
    return;
  }
  const auto go = form == kWgmmaSerial      ? launch_form<kWgmmaSerial, 1>
                  : form == kWgmmaLean       ? launch_form<kWgmmaLean, 1>
                  : form == kWgmmaLeanOneBarrier ? launch_form<kWgmmaLeanOneBarrier, 1>
                  : warpgroups == 2          ? launch_form<kWgmmaPipelined, 2>
                                             : launch_form<kWgmmaPipelined, 1>;
  go(head_dim, q, k, v, out, out_dt, n, pos, n_heads, n_kv_heads, window, s);
}

}  // namespace cllm::cuda
