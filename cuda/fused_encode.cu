// The fused layout's GPU encoder (cuda/fused_encode.h): one warp per row in both passes.
#include "cuda/fused_encode.h"

#include "cuda/cuda_check.h"

namespace cllm::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // warps per block, one row each
constexpr uint32_t kEscape = 15, kWindow = 15, kMaxBase = 240;
constexpr int kScanThreads = 1024;

__device__ __forceinline__ uint32_t exponent_at(const uint16_t* row, int col, int cols) {
  return col < cols ? (row[col] >> 7) & 0xFF : 0u;
}

// The base of columns [lo, hi) of a row (its window holds the most exponents; the smallest
// base on a tie), from a histogram in the warp's shared memory (hist: 256 counters).
__device__ uint32_t group_base(const uint16_t* row, int lo, int hi, int lane, uint32_t* hist) {
  for (int e = lane; e < 256; e += 32) hist[e] = 0;
  __syncwarp();
  for (int c = lo + lane; c < hi; c += 32) atomicAdd(&hist[(row[c] >> 7) & 0xFF], 1u);
  __syncwarp();
  uint32_t best = 0, best_count = 0;  // this lane's best of bases lane, lane + 32, ...
  for (uint32_t b = lane; b <= kMaxBase; b += 32) {
    uint32_t n = 0;
    for (uint32_t e = b; e < b + kWindow; ++e) n += hist[e];
    if (n > best_count || b == static_cast<uint32_t>(lane)) best = b, best_count = n;
  }
  for (int o = 16; o > 0; o >>= 1) {  // the most; on a tie, the smaller base
    const uint32_t ob = __shfl_xor_sync(0xffffffffu, best, o), on = __shfl_xor_sync(0xffffffffu, best_count, o);
    if (on > best_count || (on == best_count && ob < best)) best = ob, best_count = on;
  }
  __syncwarp();  // hist is reused by the next group
  return best;
}

__device__ __forceinline__ bool escaped(uint32_t e, uint32_t base) { return e - base >= kEscape; }

__global__ void __launch_bounds__(kRowsPerBlock * 32) bases_kernel(const uint16_t* __restrict__ w, FusedPlanes p) {
  __shared__ uint32_t hist_all[kRowsPerBlock][256];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, row = blockIdx.x * kRowsPerBlock + warp;
  if (row >= p.rows) return;  // only warp-level synchronisation below
  const uint16_t* wr = w + static_cast<size_t>(row) * p.cols;
  const int groups = (p.stride + p.group - 1) / p.group;
  uint32_t escapes = 0;
  for (int g = 0; g < groups; ++g) {
    const int lo = g * p.group, hi = min(lo + p.group, p.cols);
    const uint32_t base = group_base(wr, lo, hi, lane, hist_all[warp]);
    if (lane == 0) p.bases[static_cast<size_t>(row) * groups + g] = static_cast<uint8_t>(base);
    for (int c = lo + lane; c < hi; c += 32) escapes += escaped(exponent_at(wr, c, p.cols), base);
  }
  for (int o = 16; o > 0; o >>= 1) escapes += __shfl_xor_sync(0xffffffffu, escapes, o);
  if (lane == 0) p.escape_start[row + 1] = escapes;  // counts; the scan below makes them offsets
}

// escape_start[0] = 0, escape_start[r + 1] = the sum of counts 0..r, in place, by one block:
// each thread sums a contiguous range, the block scans the thread sums, each thread rewrites its range.
__global__ void __launch_bounds__(kScanThreads) scan_kernel(uint32_t* start, int rows) {
  __shared__ uint32_t part[kScanThreads];
  const int per = (rows + kScanThreads - 1) / kScanThreads, lo = threadIdx.x * per, hi = min(lo + per, rows);
  uint32_t sum = 0;
  for (int r = lo; r < hi; ++r) sum += start[r + 1];
  part[threadIdx.x] = sum;
  __syncthreads();
  for (int o = 1; o < kScanThreads; o <<= 1) {  // inclusive Hillis-Steele scan of the thread sums
    const uint32_t add = threadIdx.x >= o ? part[threadIdx.x - o] : 0;
    __syncthreads();
    part[threadIdx.x] += add;
    __syncthreads();
  }
  uint32_t run = part[threadIdx.x] - sum;
  for (int r = lo; r < hi; ++r) start[r + 1] = run += start[r + 1];
  if (threadIdx.x == 0) start[0] = 0;
}

// One chunk: its 8 bytes, its code word and its escapes in column order (written from out).
__device__ void encode_chunk(const uint16_t* wr, const FusedPlanes& p, int row, int chunk, uint32_t* out) {
  const int groups = (p.stride + p.group - 1) / p.group;
  const uint32_t base = p.bases[static_cast<size_t>(row) * groups + chunk * 8 / p.group];
  uint32_t code_word = 0, bytes[2] = {0, 0};
  for (int j = 0; j < 8; ++j) {
    const int c = chunk * 8 + j;
    const uint32_t v = c < p.cols ? wr[c] : 0u, partner = (c ^ 1) < p.cols ? wr[c ^ 1] : 0u;
    const uint32_t e = (v >> 7) & 0xFF;
    uint32_t code = c < p.cols ? e - base : 0u;
    if (code >= kEscape) {
      code = kEscape;
      *out++ = static_cast<uint32_t>(c) << 8 | e;
    }
    code_word |= code << ((j & 3) * 8 + (j >> 2) * 4);
    bytes[j >> 2] |= ((v & 0x7F) << 1 | partner >> 15) << ((j & 3) * 8);
  }
  p.codes[static_cast<size_t>(row) * (p.stride / 8) + chunk] = code_word;
  reinterpret_cast<uint2*>(p.bytes + static_cast<size_t>(row) * p.stride)[chunk] = make_uint2(bytes[0], bytes[1]);
}

__device__ int chunk_escapes(const uint16_t* wr, const FusedPlanes& p, int row, int chunk) {
  const int groups = (p.stride + p.group - 1) / p.group;
  const uint32_t base = p.bases[static_cast<size_t>(row) * groups + chunk * 8 / p.group];
  int n = 0;
  for (int j = 0; j < 8 && chunk * 8 + j < p.cols; ++j) n += escaped((wr[chunk * 8 + j] >> 7) & 0xFF, base);
  return n;
}

// Steps of 32 chunks; in each, a warp scan of the lanes' escape counts puts every escape entry
// at its place in column order.
__global__ void __launch_bounds__(kRowsPerBlock * 32)
    planes_kernel(const uint16_t* __restrict__ w, FusedPlanes p, uint32_t* escapes) {
  const int lane = threadIdx.x % 32, row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  if (row >= p.rows) return;
  const uint16_t* wr = w + static_cast<size_t>(row) * p.cols;
  uint32_t next = p.escape_start[row];
  const int chunks = p.stride / 8;
  for (int step = 0; step < chunks; step += 32) {
    const int chunk = step + lane;
    const int n = chunk < chunks ? chunk_escapes(wr, p, row, chunk) : 0;
    int before = n;  // inclusive scan over lanes
    for (int o = 1; o < 32; o <<= 1) {
      const int up = __shfl_up_sync(0xffffffffu, before, o);
      if (lane >= o) before += up;
    }
    if (chunk < chunks) encode_chunk(wr, p, row, chunk, escapes + next + before - n);
    next += __shfl_sync(0xffffffffu, before, 31);
  }
}

}  // namespace

void fused_encode_bases(const void* w_bf16, const FusedPlanes& p, cudaStream_t s) {
  CLLM_CHECK(p.group >= 8 && p.group % 8 == 0 && p.group <= p.stride && p.stride == (p.cols + 7) / 8 * 8,
             "fused_encode: group ", p.group, ", stride ", p.stride, " for ", p.cols,
             " columns (expected a multiple of 8 up to the stride, the columns rounded up to 8)");
  if (p.rows <= 0) return;
  const unsigned blocks = (p.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  bases_kernel<<<blocks, kRowsPerBlock * 32, 0, s>>>(static_cast<const uint16_t*>(w_bf16), p);
  CLLM_CUDA_CHECK_LAUNCH("fused_encode_bases");
  scan_kernel<<<1, kScanThreads, 0, s>>>(p.escape_start, p.rows);
  CLLM_CUDA_CHECK_LAUNCH("fused_encode_bases (scan)");
}

void fused_encode_planes(const void* w_bf16, const FusedPlanes& p, uint32_t* escapes, cudaStream_t s) {
  if (p.rows <= 0) return;
  const unsigned blocks = (p.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  planes_kernel<<<blocks, kRowsPerBlock * 32, 0, s>>>(static_cast<const uint16_t*>(w_bf16), p, escapes);
  CLLM_CUDA_CHECK_LAUNCH("fused_encode_planes");
}

}  // namespace cllm::cuda
