// Split-K decoding for 1 .. kMaxDecodeTokens new tokens: one block per (chunk of the cache,
// kv head, query rows) writes partials to the workspace, a combine kernel merges the chunks
// in order (attention_mma.cuh has the warp's step and the precision argument).
#include "cuda/attention_mma.cuh"

namespace cllm::cuda {

namespace {

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
  int window;  // > 0: sliding window (first_key)
  // Several sequences' single tokens in one launch (attention_decode_f16_rows): block z takes
  // token z, row seg_row[z] of q, at position seg_pos[z] of sequence seg_seq[z], whose cache
  // rows start seg_stride halves in; n is then the number of those tokens (the workspace's and
  // the combine's "tokens"). Null: one sequence's n tokens as above.
  const int* seg_pos = nullptr;
  const int* seg_seq = nullptr;
  const int* seg_row = nullptr;
  size_t seg_stride = 0;
};

template <int HD, int ROW_WARPS>
__global__ void __launch_bounds__(kThreads) attention_decode_f16_kernel(DecodeArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* smem = reinterpret_cast<__half*>(smem_raw);
  constexpr int kTileHalves = kTileKeys * smem_row<HD>();
  constexpr int kSplit = kWarps / ROW_WARPS, kWarpKeys = kTileKeys / kSplit, kBlockRows = ROW_WARPS * kRowsPerWarp;
  const bool segs = a.seg_pos != nullptr;
  const int z = blockIdx.z;
  const int pos = segs ? a.seg_pos[z] : a.d_pos ? *a.d_pos : a.pos_value;
  const int n_tok = segs ? 1 : a.n;
  const size_t region = segs ? static_cast<size_t>(a.seg_seq[z]) * a.seg_stride : 0;
  const __half* k_cache = a.k_cache + region;
  const __half* v_cache = a.v_cache + region;
  const float* q = segs ? a.q + static_cast<size_t>(a.seg_row[z]) * a.n_heads * HD : a.q;
  const int chunk = blockIdx.x, kv_head = blockIdx.y;
  const int key_begin = chunk * a.chunk;
  const int key_end = min(key_begin + a.chunk, pos + n_tok);  // the last token sees pos + n - 1
  const int group = a.n_heads / a.n_kv_heads, n_rows = n_tok * group;
  const int block_row0 = segs ? 0 : z * kBlockRows;
  // With a window, the tiles from the one holding the block's first row's first key: those
  // below it no row of the block sees.
  const int tile_begin = max(key_begin, first_key(pos + block_row0 / group, a.window) / kTileKeys * kTileKeys);
  // Past the last position, or below every row's window: the combine never reads this chunk.
  if (tile_begin >= key_end) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, slot = warp % kSplit;
  const int row0 = block_row0 + (warp / kSplit) * kRowsPerWarp;
  const size_t kv_dim = static_cast<size_t>(a.n_kv_heads) * HD, head_off = static_cast<size_t>(kv_head) * HD;

  int qpos[2], qlo[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = row0 + lane / 4 + 8 * i;
    qpos[i] = r < n_rows ? pos + r / group : -1;
    qlo[i] = first_key(qpos[i], a.window);
  }
  // The first tile's copy starts before Q's loads, which it then overlaps.
  const int n_tiles = (key_end - tile_begin + kTileKeys - 1) / kTileKeys;
  load_tile<HD>(smem, smem + kTileHalves, k_cache, v_cache, tile_begin, key_end, kv_dim, head_off);
  cp_async_commit();
  uint32_t qa[HD / 16][4];
  load_q<HD>(qa, q, row0, n_rows, group, kv_head, a.n_heads, kLog2e * rsqrtf(static_cast<float>(HD)));
  WarpState<HD> st;
  st.init();
  for (int i = 0; i < n_tiles; ++i) {
    if (i + 1 < n_tiles) {
      __half* next = smem + ((i + 1) & 1) * 2 * kTileHalves;
      load_tile<HD>(next, next + kTileHalves, k_cache, v_cache, tile_begin + (i + 1) * kTileKeys, key_end, kv_dim,
                    head_off);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int key0 = tile_begin + i * kTileKeys + slot * kWarpKeys;
    // warp-uniform; always masked (rows of different tokens, padding rows, windows)
    if (key0 < key_end && row0 < n_rows) {
      const __half* k_s = smem + (i & 1) * 2 * kTileHalves + slot * kWarpKeys * smem_row<HD>();
      warp_attend<HD, kWarpKeys>(qa, k_s, k_s + kTileHalves, key0, qpos, qlo, true, st);
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
    const int t = segs ? z : row / group, h = kv_head * group + row % group;
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
                                                                           int n_heads, int chunk, int window,
                                                                           const int* seg_pos = nullptr,
                                                                           const int* seg_row = nullptr) {
  let_next_kernel_start();  // 1 block a query row: the output product's weight loads fill the other SMs
  constexpr int kLanes = HD / 4, kGroups = kCombineThreads / kLanes;
  __shared__ float4 part_s[kGroups][kLanes];
  __shared__ float l_s[kGroups];
  __shared__ float scratch[32];
  const int t = blockIdx.x / n_heads, h = blockIdx.x % n_heads;
  // the query's position: token t of one sequence, or the t-th sequence's single token
  const int qp = seg_pos ? seg_pos[t] : (d_pos ? *d_pos : pos_value) + t;
  // chunks c0 .. n_chunks - 1 hold the keys this query sees
  const int c0 = first_key(qp, window) / chunk, n_chunks = qp / chunk + 1;
  const size_t stride = static_cast<size_t>(n) * n_heads;  // between chunks, in rows
  const size_t row = static_cast<size_t>(t) * n_heads + h;
  const size_t out_row = seg_row ? static_cast<size_t>(seg_row[t]) * n_heads + h : row;

  float mx = -INFINITY;
  for (int c = c0 + threadIdx.x; c < n_chunks; c += kCombineThreads) mx = fmaxf(mx, ml[c * stride + row].x);
  mx = block_max(mx, scratch);  // finite: chunk c0 holds the first key seen

  const int g = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float l = 0.0f;
  for (int c = c0 + g; c < n_chunks; c += kGroups) {
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
    const size_t at = out_row * HD + 4 * threadIdx.x;
    store_f32(out, out_dt, at, sum.x * inv);
    store_f32(out, out_dt, at + 1, sum.y * inv);
    store_f32(out, out_dt, at + 2, sum.z * inv);
    store_f32(out, out_dt, at + 3, sum.w * inv);
  }
}

template <int HD, int ROW_WARPS>
void launch_decode_rows(const DecodeArgs& a, int n_chunks, cudaStream_t s) {
  const size_t smem = tile_smem_bytes<HD>();
  allow_smem<attention_decode_f16_kernel<HD, ROW_WARPS>>(smem);
  // several sequences: one block row per sequence's single token
  const int rows = (a.seg_pos ? 1 : a.n) * (a.n_heads / a.n_kv_heads), block_rows = ROW_WARPS * kRowsPerWarp;
  const dim3 grid(n_chunks, a.n_kv_heads, a.seg_pos ? a.n : (rows + block_rows - 1) / block_rows);
  attention_decode_f16_kernel<HD, ROW_WARPS><<<grid, kThreads, smem, s>>>(a);
  CLLM_CUDA_CHECK_LAUNCH("attention_decode_f16");
}

template <int HD>
void launch_decode(const DecodeArgs& a, int n_chunks, void* out, DType out_dt, cudaStream_t s) {
  // The merge at the end reuses the tiles' shared memory.
  static_assert(sizeof(float) * kWarps * kRowsPerWarp * (HD + 2) <= tile_smem_bytes<HD>(), "merge space");
  // The fewest row groups that hold the query rows (then every key slot has work).
  const int rows = (a.seg_pos ? 1 : a.n) * (a.n_heads / a.n_kv_heads);
  if (rows <= kRowsPerWarp)
    launch_decode_rows<HD, 1>(a, n_chunks, s);
  else if (rows <= 2 * kRowsPerWarp)
    launch_decode_rows<HD, 2>(a, n_chunks, s);
  else
    launch_decode_rows<HD, 4>(a, n_chunks, s);
  attention_combine_kernel<HD><<<a.n * a.n_heads, kCombineThreads, 0, s>>>(a.acc, a.ml, out, out_dt, a.n, a.pos_value,
                                                                          a.d_pos, a.n_heads, a.chunk, a.window,
                                                                          a.seg_pos, a.seg_row);
  CLLM_CUDA_CHECK_LAUNCH("attention_combine");
}

}  // namespace

// (No window: the prompt path splits keys only without one.)
void attention_combine_f16(int head_dim, const float* acc, const float2* ml, void* out, DType out_dt, int n, int pos,
                           int n_heads, int chunk, cudaStream_t s) {
  if (head_dim == 64)
    attention_combine_kernel<64><<<n * n_heads, kCombineThreads, 0, s>>>(acc, ml, out, out_dt, n, pos, nullptr, n_heads,
                                                                        chunk, 0);
  else
    attention_combine_kernel<128><<<n * n_heads, kCombineThreads, 0, s>>>(acc, ml, out, out_dt, n, pos, nullptr,
                                                                         n_heads, chunk, 0);
  CLLM_CUDA_CHECK_LAUNCH("attention_combine");
}

bool attention_flash_supported(DType kv_dt, int head_dim) {
  return kv_dt == DType::F16 && (head_dim == 64 || head_dim == 128);
}

namespace {

// What both decode entry points check and set: the window, the cache's shape, the token count
// (n <= kMaxDecodeTokens), the workspace (acc rows of every chunk, token and head, then ml).
DecodeArgs decode_args(const char* who, const float* q, const void* k_cache, const void* v_cache, int n, int n_heads,
                       int n_kv_heads, int head_dim, int context, int window, float* workspace, size_t workspace_bytes) {
  if (window < 0) fail(who, ": sliding window ", window, " must be >= 0 (0: none)");
  check_shape(who, k_cache, v_cache, n_heads, n_kv_heads, head_dim);
  if (n > kMaxDecodeTokens) fail(who, ": ", n, " tokens (at most ", kMaxDecodeTokens, ")");
  const size_t need = attention_workspace_bytes(n_heads, head_dim, context);
  if (!workspace || workspace_bytes < need || reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    fail(who, ": the workspace needs ", need, " bytes (16-byte aligned), got ", workspace_bytes);
  DecodeArgs a;
  a.q = q;
  a.k_cache = static_cast<const __half*>(k_cache);
  a.v_cache = static_cast<const __half*>(v_cache);
  a.chunk = attention_decode_chunk(context);
  const int max_chunks = (context + a.chunk - 1) / a.chunk;
  const size_t rows = static_cast<size_t>(max_chunks) * kMaxDecodeTokens * n_heads;
  a.acc = workspace;
  a.ml = reinterpret_cast<float2*>(reinterpret_cast<char*>(workspace) +
                                   (rows * head_dim * sizeof(float) + 15) / 16 * 16);
  a.n = n;
  a.n_heads = n_heads;
  a.n_kv_heads = n_kv_heads;
  a.window = window;
  return a;
}

void launch_decode(const DecodeArgs& a, int head_dim, int n_chunks, void* out, DType out_dt, cudaStream_t s) {
  if (head_dim == 64)
    launch_decode<64>(a, n_chunks, out, out_dt, s);
  else
    launch_decode<128>(a, n_chunks, out, out_dt, s);
}

}  // namespace

void attention_decode_f16(const float* q, const void* k_cache, const void* v_cache, void* out, DType out_dt, int n,
                          int pos, const int* d_pos, int n_heads, int n_kv_heads, int head_dim, int context,
                          float* workspace, size_t workspace_bytes, cudaStream_t s, int window) {
  if (n <= 0) return;
  if (d_pos && n != 1) fail("attention_decode_f16: a position in device memory needs n == 1");
  if (context <= 0 || (!d_pos && (pos < 0 || pos + n > context)))
    fail("attention_decode_f16: positions ", pos, " .. ", pos + n - 1, " outside the context ", context);
  DecodeArgs a = decode_args("attention_decode_f16", q, k_cache, v_cache, n, n_heads, n_kv_heads, head_dim, context,
                             window, workspace, workspace_bytes);
  a.pos_value = pos;
  a.d_pos = d_pos;
  // With pos on the host only the chunks up to pos + n - 1 are launched; from device memory,
  // all of the context's (those past pos exit at once). Same blocks, same bits.
  const int end = d_pos ? context : pos + n;
  const int n_chunks = (end + a.chunk - 1) / a.chunk;
  launch_decode(a, head_dim, n_chunks, out, out_dt, s);
}

void attention_decode_f16_rows(const float* q, const void* k_cache, const void* v_cache, int region_rows, void* out,
                               DType out_dt, int n_segs, const int* d_pos, const int* d_seq, const int* d_row,
                               int max_pos, int n_heads, int n_kv_heads, int head_dim, int context, float* workspace,
                               size_t workspace_bytes, cudaStream_t s, int window) {
  if (n_segs <= 0) return;
  if (!d_pos || !d_seq || !d_row || region_rows < context || max_pos < 0 || max_pos >= context)
    fail("attention_decode_f16_rows: positions up to ", max_pos, " in regions of ", region_rows,
         " rows for a context of ", context, ", and device arrays of positions, sequences and rows, expected");
  DecodeArgs a = decode_args("attention_decode_f16_rows", q, k_cache, v_cache, n_segs, n_heads, n_kv_heads, head_dim,
                             context, window, workspace, workspace_bytes);
  a.pos_value = 0;
  a.d_pos = nullptr;
  a.seg_pos = d_pos;
  a.seg_seq = d_seq;
  a.seg_row = d_row;
  a.seg_stride = static_cast<size_t>(region_rows) * n_kv_heads * head_dim;
  // The chunks up to the deepest token's; a shallower token's blocks past its position exit at once.
  launch_decode(a, head_dim, max_pos / a.chunk + 1, out, out_dt, s);
}

}  // namespace cllm::cuda
