// GPU decoder for exponent-rANS tiles (docs/codec.md). Bit-exact with the CPU reference
// decoder (src/codec/tile_decoder.cpp), which is its oracle in tests/test-gpu-decoder.cpp.
#include "common/tile_format.h"
#include "cuda/cuda_check.h"
#include "cuda/decode_tiles.h"

namespace cllm::cuda {

namespace {

// The format's constants come from the codec's own definition (common/tile_format.h): a
// change there either flows through here or stops the build at an assertion below.
using namespace tile_format;
constexpr uint32_t kThreads = kChunksPerBlock * 32;
constexpr uint32_t kNoSymbol = 0xFFFFFFFFu;

// What the code below is written for, beyond the values it takes from tile_format.h:
static_assert(kLanes == 32, "one rANS lane per warp lane: ballots, shuffles and lane masks assume 32");
static_assert(kMaxProbBits <= 12, "table[] packs freq in 12 bits (8..19) and slot - cum in bits 20..31; "
                                  "the shared table is 2^kMaxProbBits entries (16 KiB at 12)");
static_assert(kStateLow == 1u << 16, "16-bit renormalisation: one u16 word per refill");
static_assert(kStateBytes == 4 * kLanes, "a chunk stream opens with one u32 state per lane");
static_assert((kStreamAlign & (kStreamAlign - 1)) == 0, "align16 rounds to a power of two");
static_assert(kChunkElems % (kLanes * kLanes) == 0 && kChunkElems % 16 == 0,
              "whole 32 x 32 segments per chunk; 16-byte copies of raw chunks");
static_assert(kRawBytes16 == 1 && kSymbolShift16 == 7,
              "join_pair: 16-bit elements are raw byte r and symbol s as ((r & 0x80) << 8) | (s << 7) | (r & 0x7F)");
static_assert(kRawBytes32 == 3 && kSymbolShift32 == 23,
              "store_f32: f32 elements are 3 raw bytes r and symbol s as ((r & 0x800000) << 8) | (s << 23) | (r & 0x7FFFFF)");
static_assert(kModeRaw == 0, "a raw tile is told by mode == 0");

__device__ __forceinline__ uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

__device__ __forceinline__ uint32_t align16(uint32_t x) { return (x + (kStreamAlign - 1)) & ~(kStreamAlign - 1); }

// Copies one chunk of a raw tile: bytes [begin, end) of the payload, 16 bytes per lane-step
// where both sides are aligned (they are: tiles and destinations are 16-aligned and chunks
// are 32768 elements long).
__device__ void copy_raw_chunk(const uint8_t* payload, uint8_t* out, uint64_t begin, uint64_t end,
                               uint32_t lane) {
  const uint64_t vec_end = begin + ((end - begin) & ~uint64_t{15});
  for (uint64_t i = begin + 16 * lane; i < vec_end; i += 16 * kLanes)
    *reinterpret_cast<uint4*>(out + i) = *reinterpret_cast<const uint4*>(payload + i);
  for (uint64_t i = vec_end + lane; i < end; i += kLanes) out[i] = payload[i];
}

// f32: joins a symbol and its 3 raw bytes back into the element's bits (docs/codec.md table).
__device__ __forceinline__ void store_f32(uint8_t* out, const uint8_t* raw, uint32_t e, uint32_t sym) {
  const uint8_t* p = raw + 3u * e;
  const uint32_t r = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16;
  reinterpret_cast<uint32_t*>(out)[e] = ((r & 0x800000u) << 8) | (sym << kSymbolShift32) | (r & 0x7FFFFFu);
}

// bf16/f16: two elements from two raw bytes and two symbols, each in the low byte of a 16-bit
// half: ((r & 0x80) << 8) | (s << 7) | (r & 0x7F) in both halves at once.
__device__ __forceinline__ uint32_t join_pair(uint32_t r2, uint32_t s2) {
  return ((r2 & 0x00800080u) << 8) | (s2 << kSymbolShift16) | (r2 & 0x007F007Fu);
}

// Writes elements [first, first + 32) of a chunk (16-bit types) from the raw plane and the
// symbols staged in shared memory: 16-byte loads and stores instead of one byte per step.
__device__ __forceinline__ void join_run16(const uint8_t* raw, const uint8_t* syms, uint8_t* out, uint32_t first) {
  const uint4 r[2] = {reinterpret_cast<const uint4*>(raw + first)[0], reinterpret_cast<const uint4*>(raw + first)[1]};
  const uint4 s[2] = {reinterpret_cast<const uint4*>(syms)[0], reinterpret_cast<const uint4*>(syms)[1]};
  uint4* o = reinterpret_cast<uint4*>(out + 2u * first);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint32_t rw[4] = {r[h].x, r[h].y, r[h].z, r[h].w}, sw[4] = {s[h].x, s[h].y, s[h].z, s[h].w};
    uint32_t v[8];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = join_pair(__byte_perm(rw[k], 0, 0x4140), __byte_perm(sw[k], 0, 0x4140));
      v[2 * k + 1] = join_pair(__byte_perm(rw[k], 0, 0x4342), __byte_perm(sw[k], 0, 0x4342));
    }
    o[2 * h] = make_uint4(v[0], v[1], v[2], v[3]);
    o[2 * h + 1] = make_uint4(v[4], v[5], v[6], v[7]);
  }
}

// The 16-bit words of a chunk's stream, read through a window of 64 words: `cur` holds words
// [base, base + 32) and `nxt` words [base + 32, base + 64), one per lane, and `ahead` and
// `later` the next 64, loaded early so their latency hides under ~12 steps of decoding. Lanes
// take their words with one shuffle, so no global load sits on the states' dependency chain.
struct WordWindow {
  const uint16_t* words;
  uint32_t n_words;  // words in the stream (its padding included)
  uint32_t base;     // warp-uniform: stream index of cur's word in lane 0
  uint32_t off;      // warp-uniform: words consumed beyond base, < 32 between steps
  uint32_t cur, nxt, ahead, later;

  __device__ __forceinline__ uint32_t load(uint32_t i) const { return i < n_words ? words[i] : 0u; }

  __device__ __forceinline__ void start(const uint8_t* stream, uint32_t stream_len, uint32_t lane) {
    words = reinterpret_cast<const uint16_t*>(stream + kStateBytes);
    n_words = (stream_len - kStateBytes) / 2;
    base = 0;
    off = 0;
    cur = load(lane), nxt = load(32 + lane), ahead = load(64 + lane), later = load(96 + lane);
  }

  // Gives each lane in `need` the next unread word, in lane order (docs/codec.md, "A chunk").
  // A lane below `off` offers its nxt word, the others their cur word: lane l then reads the
  // window's word off + (needing lanes below l), which is < off + 32, with a single shuffle.
  __device__ __forceinline__ uint32_t refill(uint32_t x, bool need, uint32_t lane, uint32_t lanes_below) {
    const uint32_t offered = lane >= off ? cur : nxt;
    const uint32_t need_mask = __ballot_sync(0xFFFFFFFFu, need);
    const uint32_t word = __shfl_sync(0xFFFFFFFFu, offered, off + __popc(need_mask & lanes_below));  // lane index mod 32
    off += __popc(need_mask);
    if (off >= 32) {
      off -= 32;
      base += 32;
      cur = nxt, nxt = ahead, ahead = later;
      later = load(base + 96 + lane);
    }
    return need ? __byte_perm(word, x, 0x5410) : x;  // (x << 16) | word, one instruction
  }

  __device__ __forceinline__ uint32_t consumed() const { return base + off; }
};

// One rANS step of one lane: the symbol of slot x & (2^P - 1), the state moved past it.
// table[slot] packs symbol (bits 0-7), freq (bits 8-19) and slot-cum (bits 20-31); a freq of
// 2^P does not fit, and such tiles take decode_constant_chunk instead.
__device__ __forceinline__ uint32_t rans_step(const uint32_t* table, uint32_t prob_bits, uint32_t mask_p, uint32_t& x) {
  const uint32_t ent = table[x & mask_p];
  x = ((ent >> 8) & 0xFFFu) * (x >> prob_bits) + (ent >> 20);
  return ent & 0xFFu;
}

// A chunk of a tile where one symbol has all 2^P of the frequency: decoding leaves every state
// as it is (x' = 2^P (x >> P) + slot) and reads no word, so the chunk is valid only as the
// encoder writes it, 32 states of 2^16 and nothing else, and every element has that symbol.
template <uint32_t E>
__device__ void decode_constant_chunk(uint32_t sym, const uint8_t* stream, uint32_t stream_len, const uint8_t* raw,
                                      uint8_t* out, uint32_t n, uint32_t lane, int* error) {
  const uint32_t x = reinterpret_cast<const uint32_t*>(stream)[lane];
  if (x != kStateLow || stream_len != kStateBytes) atomicOr(error, 1);
  for (uint32_t e = lane; e < n; e += kLanes) {
    if constexpr (E == 2) reinterpret_cast<uint16_t*>(out)[e] = static_cast<uint16_t>(join_pair(raw[e], sym));
    else store_f32(out, raw, e, sym);
  }
}

// One warp decodes one chunk: 32 lanes, lane l owns elements l, l+32, l+64, ... of the chunk.
// For 16-bit types, symbols of a segment of 32 steps are staged in shared memory (sym_buf,
// 1 KiB per warp) and joined with the raw bytes in 16-byte pieces. A full segment (all 32
// steps of 32 elements present: every segment of all but a tensor's last chunk) runs
// unrolled without per-element bounds checks; the decoder is bound by instruction issue, so
// every instruction taken out of the step is speed (docs/perf-notes.md).
template <uint32_t E>
__device__ void decode_chunk(const uint32_t* table, uint32_t prob_bits, const uint8_t* stream,
                             uint32_t stream_len, const uint8_t* raw, uint8_t* out, uint32_t n,
                             uint32_t lane, uint8_t* sym_buf, int* error) {
  const uint32_t mask_p = (1u << prob_bits) - 1u;
  uint32_t x = reinterpret_cast<const uint32_t*>(stream)[lane];
  WordWindow w;
  w.start(stream, stream_len, lane);
  const uint32_t lanes_below = (1u << lane) - 1u;
  const uint32_t steps = (n + kLanes - 1) / kLanes;
  for (uint32_t seg = 0; seg * kLanes < steps; ++seg) {
    const uint32_t seg_first = seg * kLanes * kLanes;  // first element of the segment
    if (E == 2 && seg_first + kLanes * kLanes <= n) {
#pragma unroll
      for (uint32_t j = 0; j < kLanes; ++j) {
        const uint32_t sym = rans_step(table, prob_bits, mask_p, x);
        x = w.refill(x, x < kStateLow, lane, lanes_below);
        sym_buf[j * kLanes + lane] = static_cast<uint8_t>(sym);
      }
    } else {
      const uint32_t seg_steps = min(kLanes, steps - seg * kLanes);
      for (uint32_t j = 0; j < seg_steps; ++j) {
        const uint32_t e = seg_first + j * kLanes + lane;
        const bool valid = e < n;
        const uint32_t sym = valid ? rans_step(table, prob_bits, mask_p, x) : 0u;
        x = w.refill(x, valid && x < kStateLow, lane, lanes_below);
        if constexpr (E == 2) sym_buf[j * kLanes + lane] = static_cast<uint8_t>(sym);
        else if (valid) store_f32(out, raw, e, sym);
      }
    }
    if constexpr (E == 2) {
      // Join this segment's 32 x 32 elements: lane l writes elements [32 l, 32 l + 32) of it.
      // The staged symbols are in step-major order, which is element order within the segment.
      __syncwarp();
      const uint32_t first = seg_first + kLanes * lane;
      if (first + kLanes <= n) {
        join_run16(raw, sym_buf + kLanes * lane, out, first);
      } else {
        for (uint32_t e = first; e < n; ++e) {
          const uint32_t r = raw[e], s_ = sym_buf[e - seg_first];
          reinterpret_cast<uint16_t*>(out)[e] = static_cast<uint16_t>(((r & 0x80u) << 8) | (s_ << 7) | (r & 0x7Fu));
        }
      }
      __syncwarp();
    }
  }
  // As the CPU decoder: every lane back at the encoder's initial state, and the stream exactly
  // as long as the words read (plus padding to 16 bytes).
  if (x != kStateLow || align16(kStateBytes + 2 * w.consumed()) != stream_len) atomicOr(error, 1);
}

__global__ void __launch_bounds__(kThreads, 5) decode_tiles_kernel(const uint8_t* __restrict__ src,
                                                                uint8_t* __restrict__ dst,
                                                                const TileTask* __restrict__ tiles,
                                                                const BlockTask* __restrict__ blocks,
                                                                int* error) {
  __shared__ uint32_t table[1u << kMaxProbBits];
  __shared__ uint32_t cum[257];
  __shared__ uint32_t constant_sym;  // the symbol with frequency 2^P, or kNoSymbol
  __shared__ __align__(16) uint8_t sym_bufs[kChunksPerBlock][kLanes * kLanes];

  const BlockTask bt = blocks[blockIdx.x];
  const TileTask tt = tiles[bt.tile];
  const uint8_t* tile = src + tt.src;
  uint8_t* out_tile = dst + tt.dst;
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t chunk = bt.first_chunk + warp;
  const uint32_t mode = tile[kHeaderMode];

  if (mode == kModeRaw) {  // raw tile: the payload follows the 16-byte header
    const uint64_t bytes = static_cast<uint64_t>(tt.n_elems) * tt.elem_bytes;
    const uint64_t begin = static_cast<uint64_t>(chunk) * kChunkElems * tt.elem_bytes;
    if (begin < bytes) {
      const uint64_t end = min(bytes, begin + static_cast<uint64_t>(kChunkElems) * tt.elem_bytes);
      copy_raw_chunk(tile + kTileHeaderBytes, out_tile, begin, end, lane);
    }
    return;
  }

  const uint32_t prob_bits = tile[kHeaderProbBits], sym_lo = tile[kHeaderSymLo], sym_count = tile[kHeaderSymCountM1] + 1u;
  const uint32_t n_elems = load_u32(tile + kHeaderNElems), n_chunks = load_u32(tile + kHeaderNChunks);
  const uint32_t raw_bytes = tt.elem_bytes == 4 ? kRawBytes32 : kRawBytes16;
  const uint32_t freq_off = kFreqOffset, chunk_end_off = align16(freq_off + 2 * sym_count);
  const uint32_t raw_off = align16(chunk_end_off + 4 * n_chunks);
  const uint32_t stream_off = align16(raw_off + n_elems * raw_bytes);
  const uint16_t* freq = reinterpret_cast<const uint16_t*>(tile + freq_off);

  // Cumulative frequencies: warp 0 scans the (at most 256) frequencies, 8 per lane.
  if (warp == 0) {
    uint32_t f[8], sum = 0;
    for (int i = 0; i < 8; ++i) {
      const uint32_t s = lane * 8 + i;
      f[i] = s < sym_count ? freq[s] : 0u;
      sum += f[i];
    }
    if (lane == 0) constant_sym = kNoSymbol;
    __syncwarp();
    for (int i = 0; i < 8; ++i)
      if (f[i] == (1u << prob_bits)) constant_sym = sym_lo + lane * 8 + i;
    uint32_t incl = sum;
    for (int d = 1; d < 32; d <<= 1) {
      const uint32_t v = __shfl_up_sync(0xFFFFFFFFu, incl, d);
      if (lane >= static_cast<uint32_t>(d)) incl += v;
    }
    uint32_t c = incl - sum;
    for (int i = 0; i < 8; ++i) {
      cum[lane * 8 + i] = c;
      c += f[i];
    }
    if (lane == 31) cum[256] = incl;
  }
  __syncthreads();
  // Slot -> (symbol, freq, slot - cum): each thread fills slots by binary search over cum.
  const uint32_t m = 1u << prob_bits;
  for (uint32_t slot = threadIdx.x; slot < m; slot += kThreads) {
    uint32_t lo = 0, hi = sym_count;  // find the last s with cum[s] <= slot
    while (hi - lo > 1) {
      const uint32_t mid = (lo + hi) / 2;
      if (cum[mid] <= slot) lo = mid;
      else hi = mid;
    }
    const uint32_t f = cum[lo + 1] - cum[lo];
    table[slot] = (sym_lo + lo) | ((f & 0xFFFu) << 8) | ((slot - cum[lo]) << 20);
  }
  __syncthreads();
  if (chunk >= n_chunks) return;

  const uint32_t* chunk_end = reinterpret_cast<const uint32_t*>(tile + chunk_end_off);
  const uint32_t begin = chunk == 0 ? 0u : chunk_end[chunk - 1], end = chunk_end[chunk];
  const uint32_t n = min(kChunkElems, n_elems - chunk * kChunkElems);
  const uint8_t* stream = tile + stream_off + begin;
  const uint8_t* raw = tile + raw_off + static_cast<uint64_t>(chunk) * kChunkElems * raw_bytes;
  uint8_t* out = out_tile + static_cast<uint64_t>(chunk) * kChunkElems * tt.elem_bytes;
  if (end - begin < kStateBytes) {
    if (lane == 0) atomicOr(error, 2);
    return;
  }
  if (constant_sym != kNoSymbol) {
    if (tt.elem_bytes == 4) decode_constant_chunk<4>(constant_sym, stream, end - begin, raw, out, n, lane, error);
    else decode_constant_chunk<2>(constant_sym, stream, end - begin, raw, out, n, lane, error);
  } else if (tt.elem_bytes == 4)
    decode_chunk<4>(table, prob_bits, stream, end - begin, raw, out, n, lane, sym_bufs[warp], error);
  else
    decode_chunk<2>(table, prob_bits, stream, end - begin, raw, out, n, lane, sym_bufs[warp], error);
}

}  // namespace

void decode_tiles(const uint8_t* d_src, uint8_t* d_dst, const TileTask* d_tiles,
                  const BlockTask* d_blocks, uint32_t n_blocks, int* d_error, cudaStream_t stream) {
  if (n_blocks == 0) return;
  decode_tiles_kernel<<<n_blocks, kThreads, 0, stream>>>(d_src, d_dst, d_tiles, d_blocks, d_error);
  CLLM_CUDA_CHECK_LAUNCH("decode_tiles_kernel");
}

}  // namespace cllm::cuda
