// The fused layout's product and decoder (cuda/fused_matvec.h). A weight pair becomes a bf16x2
// word in two instructions (a byte permute of sign+mantissa bytes and exponents, a rotate); the
// 8 exponents of a chunk cost a shift, two masks and two adds; docs/codec.md counts the rest.
#include "cuda/fused_matvec.h"

#include <cuda_bf16.h>

#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/element.cuh"
#include "cuda/matvec_dot.cuh"
#include "cuda/matvec_launch.cuh"

namespace cllm::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // warps per block, one row each
constexpr int kInFlight = 8;      // chunks in flight per lane (12 bytes each), over all the warp's rows
constexpr int kThreads = kRowsPerBlock * 32;
constexpr uint32_t kEscape = 15;

// Where weight j (0..7) of a chunk keeps its code: byte j & 3, high nibble for j >= 4.
__device__ __forceinline__ int code_shift(int j) { return (j & 3) * 8 + (j >> 2) * 4; }

// True when any of the 8 codes is 15 (all four bits of a nibble set).
__device__ __forceinline__ bool has_escape(uint32_t codes) {
  uint32_t t = codes & (codes >> 1);
  t &= t >> 2;
  return (t & 0x11111111u) != 0;
}

// The real exponent of escaped weight (row, col): a binary search of the row's sorted entries
// (a layout that passed codec::fused::check_fused always has it).
__device__ uint32_t escaped_exponent(const FusedWeights& w, int row, uint32_t col) {
  uint32_t lo = w.escape_start[row], hi = w.escape_start[row + 1];
  while (lo < hi) {
    const uint32_t mid = (lo + hi) / 2;
    if ((w.escapes[mid] >> 8) < col) lo = mid + 1;
    else hi = mid;
  }
  return lo < w.escape_start[row + 1] ? w.escapes[lo] & 0xFF : 0;
}

// The slow path, about one chunk in 800 on Gaussian weights: the escaped exponents put in
// their bytes of e. Not inlined, so that it costs the fast path no registers.
__device__ __noinline__ uint2 patch_escapes(const FusedWeights& w, int row, int chunk, uint32_t codes, uint2 e) {
  for (int j = 0; j < 8; ++j)
    if (((codes >> code_shift(j)) & 0xF) == kEscape) {
      const int shift = (j & 3) * 8;
      const uint32_t exponent = escaped_exponent(w, row, chunk * 8 + j);
      uint32_t& word = j < 4 ? e.x : e.y;
      word = (word & ~(0xFFu << shift)) | exponent << shift;
    }
  return e;
}

// Exponents e.x (weights 0..3) and e.y (4..7), one per byte, before escapes are patched in.
__device__ __forceinline__ uint2 coded_exponents(uint32_t codes, uint32_t base4) {
  return make_uint2((codes & 0x0F0F0F0Fu) + base4, ((codes >> 4) & 0x0F0F0F0Fu) + base4);  // base <= 240: no carries
}

// The same with escapes patched in by this lane alone (any lane may call it).
__device__ __forceinline__ uint2 chunk_exponents(const FusedWeights& w, int row, int chunk, uint32_t codes,
                                                 uint32_t base4) {
  const uint2 e = coded_exponents(codes, base4);
  return has_escape(codes) ? patch_escapes(w, row, chunk, codes, e) : e;
}

// A row's escape entries held by its warp, entry k by lane k, read once when the warp starts
// the row: the slow path then costs a few shuffles instead of a binary search through global
// memory (three dependent loads, about a microsecond, while the warp's loads run dry).
struct RowEscapes {
  uint32_t entry;  // col << 8 | exponent of the row's entry `lane` (lane < count)
  uint32_t count;  // the row's escapes; above 32 the warp searches global memory as a lane would
};

constexpr unsigned kAllLanes = 0xFFFFFFFFu;

// The escapes of the lanes' chunks put in their bytes of e, all 32 lanes together (each lane's
// chunk is its own; a lane whose chunk holds none gets e back).
__device__ __noinline__ uint2 patch_escapes_warp(const FusedWeights& w, int row, int chunk, uint32_t codes, uint2 e,
                                                 RowEscapes escapes) {
  if (escapes.count > 32) return has_escape(codes) ? patch_escapes(w, row, chunk, codes, e) : e;
  for (uint32_t k = 0; k < escapes.count; ++k) {
    const uint32_t entry = __shfl_sync(kAllLanes, escapes.entry, static_cast<int>(k));
    const uint32_t col = entry >> 8;
    if (col / 8 != static_cast<uint32_t>(chunk)) continue;
    const uint32_t shift = (col & 3) * 8;
    uint32_t& word = (col & 4) ? e.y : e.x;
    word = (word & ~(0xFFu << shift)) | (entry & 0xFF) << shift;
  }
  return e;
}

// chunk_exponents() for all 32 lanes of a warp at once (the vote and the shuffles need them all).
__device__ __forceinline__ uint2 chunk_exponents_warp(const FusedWeights& w, int row, int chunk, uint32_t codes,
                                                      uint32_t base4, RowEscapes escapes) {
  const uint2 e = coded_exponents(codes, base4);
  return __any_sync(kAllLanes, has_escape(codes)) ? patch_escapes_warp(w, row, chunk, codes, e, escapes) : e;
}

__device__ __forceinline__ uint32_t rotate_right_1(uint32_t v) { return __funnelshift_r(v, v, 1); }

// A chunk's 8 weights as 4 bf16x2 words from its sign+mantissa bytes and exponents: per pair
// [byte, exponent, byte, exponent] rotated right by one (codec::fused::decode_chunk spells out
// why that is the bf16 pair).
__device__ __forceinline__ uint4 assemble_chunk(uint2 bytes, uint2 e) {
  uint4 out;
  out.x = rotate_right_1(__byte_perm(bytes.x, e.x, 0x5140));
  out.y = rotate_right_1(__byte_perm(bytes.x, e.x, 0x7362));
  out.z = rotate_right_1(__byte_perm(bytes.y, e.y, 0x5140));
  out.w = rotate_right_1(__byte_perm(bytes.y, e.y, 0x7362));
  return out;
}

__device__ __forceinline__ uint4 decode_chunk(const FusedWeights& w, int row, int chunk, uint2 bytes, uint32_t codes,
                                              uint32_t base4) {
  return assemble_chunk(bytes, chunk_exponents(w, row, chunk, codes, base4));
}

__device__ __forceinline__ uint32_t base4_of(const FusedWeights& w, int row, int chunk) {
  const int groups = (w.stride + w.group - 1) / w.group;
  return w.bases[static_cast<size_t>(row) * groups + chunk * 8 / w.group] * 0x01010101u;
}

// One weight as bf16 bits (the element-by-element path of rows not a multiple of 8).
__device__ uint16_t decode_weight(const FusedWeights& w, int row, int col) {
  const uint32_t codes = w.codes[static_cast<size_t>(row) * (w.stride / 8) + col / 8];
  const uint32_t code = (codes >> code_shift(col % 8)) & 0xF;
  const uint32_t exponent = code == kEscape ? escaped_exponent(w, row, col) : (base4_of(w, row, col / 8) & 0xFF) + code;
  const uint8_t* bytes = w.bytes + static_cast<size_t>(row) * w.stride;
  return static_cast<uint16_t>((bytes[col ^ 1] & 1u) << 15 | exponent << 7 | bytes[col] >> 1);
}

// x's chunk `at` (8 values) as fp32: from one token's copy staged in shared memory as bf16 by
// stage_x (as full mode stages it), or token t's bf16 through the read-only cache. Staged as
// fp32 instead (converted once per block), the down projection's 14336 columns took 57 KB a
// block, 3 blocks an SM, and its 512 blocks ran in two waves; bf16 leaves 4 an SM, one wave,
// for 8 instructions a chunk: fused tg128 on the H100 187.7 against 185.4 tok/s.
__device__ __forceinline__ void x_chunk(const uint4* staged, int at, float (&xf)[8]) { bf16x8_to_f32(staged[at], xf); }
__device__ __forceinline__ void x_chunk(const __nv_bfloat16* x, int at, float (&xf)[8]) {
  bf16x8_to_f32(__ldg(reinterpret_cast<const uint4*>(x) + at), xf);
}

// kRows rows of the same index, one of w0 and (kRows 2) one of w1 (the same columns), dotted
// with x[t] for kTokens tokens by one warp, on the 16-byte path (cols % 8 == 0, x 16-byte
// aligned): sum[r][t] gets this lane's chunks lane, lane + 32, ... in matvec's order, each
// through the same dot8, before the warp's reduction; every kernel below computes its rows'
// sums here, so their bits agree. One token's x is staged in shared memory (bf16) by the
// whole block (every thread must call this; `live` is false for a warp past the last row,
// whose sums are then not set). kRowBase: one base for the whole row (the default layout).
//
// Keeping HBM busy: each lane has kUnroll chunks of each row in flight (kInFlight in all),
// the first ones issued before the kernel waits for the previous one (the fused planes are
// never written while the model runs), and each slot is refilled with the chunk 32 kUnroll further on as soon as its
// chunk is summed, so the loads stay in flight while the warp decodes (loading a whole batch
// only after summing the last one left the warp with nothing in flight for half its time).
// The row's escape entries come with the first loads (RowEscapes).
template <int kRows, int kTokens, bool kRowBase>
__device__ __forceinline__ void fused_rows_dot(const FusedWeights& w0, const FusedWeights& w1, int row,
                                               const __nv_bfloat16* __restrict__ x, int lane, bool live,
                                               float (&sum)[kRows][kTokens]) {
  constexpr int kUnroll = kInFlight / kRows;  // of each row
  constexpr bool kStaged = kTokens == 1;
  const auto W = [&](int r) -> const FusedWeights& { return r == 0 ? w0 : w1; };
  const int cols = w0.cols, chunks = cols / 8, at_row = live ? row : 0;
  const uint2* bytes[kRows];
  const uint32_t* codes[kRows];
  uint32_t base4[kRows], first_escape[kRows];
  RowEscapes escapes[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    bytes[r] = reinterpret_cast<const uint2*>(W(r).bytes + static_cast<size_t>(at_row) * W(r).stride);
    codes[r] = W(r).codes + static_cast<size_t>(at_row) * (W(r).stride / 8);
    base4[r] = kRowBase && live ? base4_of(W(r), at_row, 0) : 0;
    first_escape[r] = __ldg(W(r).escape_start + at_row);
    escapes[r].count = __ldg(W(r).escape_start + at_row + 1) - first_escape[r];
  }
  // Whole batches: chunks [i - lane, i - lane + 32 kUnroll) all in the row, so that every lane
  // of the warp takes part (the escapes' vote and shuffles); the rest chunk by chunk below.
  const auto whole_batch = [&](int i) { return i - lane + 32 * kUnroll <= chunks; };
  uint2 b[kUnroll][kRows];
  uint32_t c[kUnroll][kRows];
  const auto load = [&](int u, int at) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) b[u][r] = __ldg(bytes[r] + at), c[u][r] = __ldg(codes[r] + at);
  };
  int i = lane;
  bool batch = live && whole_batch(i);
  if (batch)
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load(u, i + 32 * u);
  const uint4* staged = nullptr;
  if (kStaged) staged = reinterpret_cast<const uint4*>(stage_x(x, cols));
  else wait_for_previous_kernel();
  if (!live) return;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    escapes[r].entry = static_cast<uint32_t>(lane) < escapes[r].count ? __ldg(W(r).escapes + first_escape[r] + lane) : 0;
#pragma unroll
    for (int t = 0; t < kTokens; ++t) sum[r][t] = 0.0f;
  }
  const auto add_chunk = [&](int at, const uint4 (&wb)[kRows]) {
    float wf[kRows][8];
#pragma unroll
    for (int r = 0; r < kRows; ++r) bf16x8_to_f32(wb[r], wf[r]);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float xf[8];
      if (kStaged) x_chunk(staged, at, xf);
      else x_chunk(x + static_cast<size_t>(t) * cols, at, xf);
#pragma unroll
      for (int r = 0; r < kRows; ++r) sum[r][t] += dot8(wf[r], xf);
    }
  };
  const auto base_at = [&](int r, int at) { return kRowBase ? base4[r] : base4_of(W(r), at_row, at); };
  while (batch) {
    const int next = i + 32 * kUnroll;
    const bool refill = whole_batch(next);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int at = i + 32 * u;
      uint4 wb[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        wb[r] = assemble_chunk(b[u][r], chunk_exponents_warp(W(r), at_row, at, c[u][r], base_at(r, at), escapes[r]));
      if (refill) load(u, next + 32 * u);
      add_chunk(at, wb);
    }
    i = next;
    batch = refill;
  }
  for (; i < chunks; i += 32) {
    uint4 wb[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      wb[r] = decode_chunk(W(r), at_row, i, __ldg(bytes[r] + i), __ldg(codes[r] + i), base_at(r, i));
    add_chunk(i, wb);
  }
}

// The same sums element by element (rows not a multiple of 8, or x not 16-byte aligned).
template <int kTokens>
__device__ __forceinline__ void row_sums_scalar(const FusedWeights& w, int row, const __nv_bfloat16* __restrict__ x,
                                                int lane, float (&sum)[kTokens]) {
#pragma unroll
  for (int t = 0; t < kTokens; ++t) sum[t] = 0.0f;
  for (int i = lane; i < w.cols; i += 32) {
    const __nv_bfloat16 wi = __ushort_as_bfloat16(decode_weight(w, row, i));
#pragma unroll
    for (int t = 0; t < kTokens; ++t) sum[t] += to_float(wi) * to_float(x[static_cast<size_t>(t) * w.cols + i]);
  }
}

// A warp's sums for kRows rows (w0's, and w1's when kRows is 2) and kTokens tokens, on
// either path; false for a warp past the last row.
template <int kRows, int kTokens, bool kVector, bool kRowBase>
__device__ __forceinline__ bool warp_row_sums(const FusedWeights& w0, const FusedWeights& w1, int row,
                                              const __nv_bfloat16* __restrict__ x, int lane, float (&sum)[kRows][kTokens]) {
  const bool live = row < w0.rows;
  if (kVector) {
    fused_rows_dot<kRows, kTokens, kRowBase>(w0, w1, row, x, lane, live, sum);
  } else {
    wait_for_previous_kernel();
    if (!live) return false;
#pragma unroll
    for (int r = 0; r < kRows; ++r) row_sums_scalar<kTokens>(r == 0 ? w0 : w1, row, x, lane, sum[r]);
  }
  return live;
}

// kTokens tokens (a template argument: no per-token branches, as few registers as possible).
template <int kTokens, bool kVector, bool kRowBase>
__global__ void __launch_bounds__(kRowsPerBlock * 32)
    fused_matvec_kernel(const __grid_constant__ FusedWeights w, const __nv_bfloat16* __restrict__ x, float* y, int ldy,
                        bool accumulate) {
  let_next_kernel_start();
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  float sum[1][kTokens];
  if (!warp_row_sums<1, kTokens, kVector, kRowBase>(w, w, row, x, lane, sum)) return;
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    const float s = warp_sum(sum[0][t]);
    float* yt = y + static_cast<size_t>(t) * ldy;
    if (lane == 0) yt[row] = accumulate ? yt[row] + s : s;
  }
}

// One token, up to three products of the same x (q, k, v): blocks [first_block[j],
// first_block[j + 1]) do job j, each row as fused_matvec_kernel<1> does it.
template <bool kVector, bool kRowBase>
__global__ void __launch_bounds__(kRowsPerBlock * 32)
    fused_jobs_kernel(const __grid_constant__ FusedJobs jobs, const __nv_bfloat16* __restrict__ x) {
  let_next_kernel_start();
  int j = 0;
  while (j + 1 < jobs.count && static_cast<int>(blockIdx.x) >= jobs.first_block[j + 1]) ++j;
  const FusedJob& job = jobs.job[j];
  const int row = (blockIdx.x - jobs.first_block[j]) * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  float sum[1][1];
  if (!warp_row_sums<1, 1, kVector, kRowBase>(job.w, job.w, row, x, lane, sum)) return;
  const float s = warp_sum(sum[0][0]);
  if (lane == 0) job.y[row] = job.accumulate ? job.y[row] + s : s;
}

// One token: out[r] = glu(gate_r . x, up_r . x) in bf16, each sum as fused_matvec_kernel<1>
// makes it (the two rows' chunks in flight together), then swiglu()'s formula and rounding.
template <bool kVector, bool kRowBase>
__global__ void __launch_bounds__(kRowsPerBlock * 32)
    fused_swiglu_kernel(const __grid_constant__ FusedWeights gate, const __grid_constant__ FusedWeights up,
                        const __nv_bfloat16* __restrict__ x, __nv_bfloat16* out, bool gelu_tanh) {
  let_next_kernel_start();
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  float gu[2][1];
  if (!warp_row_sums<2, 1, kVector, kRowBase>(gate, up, row, x, lane, gu)) return;
  const float gs = warp_sum(gu[0][0]), us = warp_sum(gu[1][0]);
  if (lane == 0) out[row] = __float2bfloat16_rn(glu(gs, us, gelu_tanh));
}

// Pieces of rows decoded and stored by warps (grid-stride over the pieces of all the launch's
// matrices, 32 kDecodeUnroll chunks each, lane k taking chunks k, k + 32, ... of its piece):
// kDecodeUnroll chunks of 12 bytes in flight per lane, a piece's matrix, row and base found once.
// A step's matrices share one launch, so the small ones (k and v) do not leave the card idle at
// their tails. One thread per chunk (the first decoder) wrote a fifth of copy bandwidth: short
// blocks, a 64-bit division per chunk, one chunk in flight per thread.
constexpr int kDecodeUnroll = 4;
constexpr int kDecodePiece = 32 * kDecodeUnroll;  // chunks

// One base for the whole row (the default layout).
__host__ __device__ inline bool row_base(const FusedWeights& w) { return w.group >= w.stride; }

int64_t decode_pieces(const FusedWeights& w) {
  return static_cast<int64_t>(w.rows) * ((w.stride / 8 + kDecodePiece - 1) / kDecodePiece);
}

struct DecodeLaunch {
  FusedDecodeJob job[kFusedDecodeJobs];
  int64_t first_piece[kFusedDecodeJobs + 1];  // job j has pieces [first_piece[j], first_piece[j + 1])
  int count;
};

__global__ void __launch_bounds__(256) fused_decode_kernel(const __grid_constant__ DecodeLaunch launch) {
  const int lane = threadIdx.x % 32;
  const int64_t pieces = launch.first_piece[launch.count];
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  int j = 0;  // a warp's pieces only grow, and so does their job
  for (int64_t piece = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; piece < pieces; piece += warps) {
    while (piece >= launch.first_piece[j + 1]) ++j;
    const FusedWeights& w = launch.job[j].w;
    const int per_row = w.stride / 8, pieces_per_row = (per_row + kDecodePiece - 1) / kDecodePiece;
    const int64_t local = piece - launch.first_piece[j];
    const int row = static_cast<int>(local / pieces_per_row);
    const int first = static_cast<int>(local % pieces_per_row) * kDecodePiece + lane;
    const uint2* bytes = reinterpret_cast<const uint2*>(w.bytes + static_cast<size_t>(row) * w.stride);
    const uint32_t* codes = w.codes + static_cast<size_t>(row) * per_row;
    __nv_bfloat16* dst = static_cast<__nv_bfloat16*>(launch.job[j].out) + static_cast<size_t>(row) * w.cols;
    const bool one_base = row_base(w), whole = w.cols % 8 == 0;  // whole: 8 weights a chunk, rows 16-byte aligned
    const uint32_t row_base4 = one_base ? base4_of(w, row, 0) : 0;
    uint2 b[kDecodeUnroll];
    uint32_t c[kDecodeUnroll];
#pragma unroll
    for (int u = 0; u < kDecodeUnroll; ++u) {
      const int at = first + 32 * u;
      if (at < per_row) b[u] = __ldg(bytes + at), c[u] = __ldg(codes + at);
    }
#pragma unroll
    for (int u = 0; u < kDecodeUnroll; ++u) {
      const int at = first + 32 * u;
      if (at >= per_row) break;
      const uint4 v = decode_chunk(w, row, at, b[u], c[u], one_base ? row_base4 : base4_of(w, row, at));
      if (whole) {
        reinterpret_cast<uint4*>(dst)[at] = v;  // out is 16-byte aligned (the caller's promise) and so is every row
        continue;
      }
      const uint16_t* h = reinterpret_cast<const uint16_t*>(&v);
      for (int k = 0; k < 8 && at * 8 + k < w.cols; ++k) dst[at * 8 + k] = __ushort_as_bfloat16(h[k]);
    }
  }
}

// Starts kernel over `blocks` blocks; one token's x staged in shared memory (cols bf16) on the
// 16-byte path.
template <class... Params, class... Args>
void start(void (*kernel)(Params...), unsigned blocks, bool staged_x, int cols, cudaStream_t s, bool overlap,
           Args... args) {
  const size_t smem = staged_x ? x_smem_bytes(kernel, sizeof(__nv_bfloat16) * static_cast<size_t>(cols)) : 0;
  start_kernel(kernel, blocks, kThreads, smem, s, overlap, args...);
}

bool vector_path(const FusedWeights& w, const void* x) { return w.cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0; }

template <int kTokens>
void launch(const FusedWeights& w, const __nv_bfloat16* x, float* y, int ldy, bool accumulate, unsigned blocks,
            cudaStream_t s, bool overlap) {
  const bool staged = kTokens == 1;
  if (!vector_path(w, x))
    start(fused_matvec_kernel<kTokens, false, false>, blocks, false, w.cols, s, overlap, w, x, y, ldy, accumulate);
  else if (row_base(w))
    start(fused_matvec_kernel<kTokens, true, true>, blocks, staged, w.cols, s, overlap, w, x, y, ldy, accumulate);
  else
    start(fused_matvec_kernel<kTokens, true, false>, blocks, staged, w.cols, s, overlap, w, x, y, ldy, accumulate);
}

}  // namespace

void fused_matvec(const FusedWeights& w, const void* x, int n, float* y, int ldy, bool accumulate, cudaStream_t s,
                  bool overlap_previous) {
  CLLM_CHECK(n >= 1 && n <= kFusedMaxTokens, "fused_matvec: ", n, " tokens (expected 1 .. ", kFusedMaxTokens, ")");
  if (w.rows <= 0) return;
  const unsigned blocks = (w.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  const __nv_bfloat16* xb = static_cast<const __nv_bfloat16*>(x);
  const bool o = overlap_previous;
  switch (n) {
    case 1: launch<1>(w, xb, y, ldy, accumulate, blocks, s, o); break;
    case 2: launch<2>(w, xb, y, ldy, accumulate, blocks, s, o); break;
    case 3: launch<3>(w, xb, y, ldy, accumulate, blocks, s, o); break;
    case 4: launch<4>(w, xb, y, ldy, accumulate, blocks, s, o); break;
    case 5: launch<5>(w, xb, y, ldy, accumulate, blocks, s, o); break;
    case 6: launch<6>(w, xb, y, ldy, accumulate, blocks, s, o); break;
    case 7: launch<7>(w, xb, y, ldy, accumulate, blocks, s, o); break;
    default: launch<8>(w, xb, y, ldy, accumulate, blocks, s, o); break;
  }
  CLLM_CUDA_CHECK_LAUNCH("fused_matvec");
}

void fused_matvec(FusedJobs jobs, const void* x, cudaStream_t s) {
  CLLM_CHECK(jobs.count >= 1 && jobs.count <= 3, "fused_matvec: ", jobs.count, " jobs (expected 1 .. 3)");
  bool vector = true, base = true;
  int blocks = 0;
  for (int j = 0; j < jobs.count; ++j) {
    const FusedWeights& w = jobs.job[j].w;
    CLLM_CHECK(w.cols == jobs.job[0].w.cols, "fused_matvec: jobs of ", jobs.job[0].w.cols, " and ", w.cols,
               " columns (one x for all)");
    vector = vector && vector_path(w, x);
    base = base && row_base(w);
    jobs.first_block[j] = blocks;
    blocks += (w.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  }
  if (blocks == 0) return;
  const __nv_bfloat16* xb = static_cast<const __nv_bfloat16*>(x);
  const int cols = jobs.job[0].w.cols;
  const bool o = jobs.overlap_previous;
  const unsigned nb = static_cast<unsigned>(blocks);
  if (!vector) start(fused_jobs_kernel<false, false>, nb, false, cols, s, o, jobs, xb);
  else if (base) start(fused_jobs_kernel<true, true>, nb, true, cols, s, o, jobs, xb);
  else start(fused_jobs_kernel<true, false>, nb, true, cols, s, o, jobs, xb);
  CLLM_CUDA_CHECK_LAUNCH("fused_matvec (jobs)");
}

void fused_matvec_swiglu(const FusedWeights& gate, const FusedWeights& up, const void* x, void* out, cudaStream_t s,
                         bool gelu_tanh, bool overlap_previous) {
  CLLM_CHECK(gate.rows == up.rows && gate.cols == up.cols, "fused_matvec_swiglu: gate ", gate.rows, " x ", gate.cols,
             " and up ", up.rows, " x ", up.cols, " (expected the same shape)");
  if (gate.rows <= 0) return;
  const bool vector = vector_path(gate, x), base = row_base(gate) && row_base(up);
  const unsigned blocks = (gate.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  const __nv_bfloat16* xb = static_cast<const __nv_bfloat16*>(x);
  __nv_bfloat16* o = static_cast<__nv_bfloat16*>(out);
  const bool ov = overlap_previous;
  if (!vector) start(fused_swiglu_kernel<false, false>, blocks, false, gate.cols, s, ov, gate, up, xb, o, gelu_tanh);
  else if (base) start(fused_swiglu_kernel<true, true>, blocks, true, gate.cols, s, ov, gate, up, xb, o, gelu_tanh);
  else start(fused_swiglu_kernel<true, false>, blocks, true, gate.cols, s, ov, gate, up, xb, o, gelu_tanh);
  CLLM_CUDA_CHECK_LAUNCH("fused_matvec_swiglu");
}

void fused_decode(const FusedDecodeJob* jobs, int count, cudaStream_t s) {
  // A warp per piece, so blocks are short-lived: beside a prompt's GEMMs (the compute stream has
  // the higher priority) the GEMMs' blocks take each SM a decode block leaves. A persistent grid,
  // as many blocks as the SMs hold, kept the GEMMs waiting until the whole step was decoded
  // (H100, 8B: fused pp512 21.2k against 22.6k tok/s; alone too, gate/up 1390 against 1510 GB/s).
  constexpr int kThreads = 256, kWarps = kThreads / 32;
  for (int k = 0; k < count;) {
    DecodeLaunch launch{};
    for (; k < count && launch.count < kFusedDecodeJobs; ++k) {
      if (jobs[k].w.rows <= 0 || jobs[k].w.stride <= 0) continue;
      launch.job[launch.count] = jobs[k];
      launch.first_piece[launch.count + 1] = launch.first_piece[launch.count] + decode_pieces(jobs[k].w);
      ++launch.count;
    }
    const int64_t pieces = launch.first_piece[launch.count];
    if (pieces == 0) continue;
    const unsigned blocks = static_cast<unsigned>((pieces + kWarps - 1) / kWarps);
    fused_decode_kernel<<<blocks, kThreads, 0, s>>>(launch);
    CLLM_CUDA_CHECK_LAUNCH("fused_decode");
  }
}

void fused_decode(const FusedWeights& w, void* out, cudaStream_t s) {
  const FusedDecodeJob job{w, out};
  fused_decode(&job, 1, s);
}

}  // namespace cllm::cuda
