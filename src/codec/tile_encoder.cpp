// The tile encoder (docs/codec.md): split elements into symbols and raw bytes, normalise the
// symbol histogram, rANS-code every chunk with 32 interleaved states, and keep the result only
// when it is smaller than the raw tile. The full steps of a chunk run in the AVX2 twin of
// encode_symbol (encode_steps_avx2.cpp) where the CPU has AVX2; both write the same bytes.
#include <cstring>

#include "codec/codec.h"
#include "codec/exponent_stats.h"
#include "codec/rans_table.h"
#include "codec/simd_avx2.h"
#include "codec/symbol_split.h"
#include "codec/tile_layout.h"
#include "common/error.h"

namespace cllm::codec {

namespace {

// Per-thread buffers reused from tile to tile, so encoding a model does not allocate (and
// page-fault) a few MiB per tile. Sizes: raw plane n*R bytes, streams <= 2n + 144 per chunk.
struct EncodeScratch {
  std::vector<uint8_t> raw;
  std::vector<uint8_t> sym;     // the symbol plane, n bytes
  std::vector<uint8_t> streams;
  std::vector<uint16_t> words;  // one chunk's words, written back to front
};

EncodeScratch& scratch() {
  thread_local EncodeScratch s;
  return s;
}

void append_raw_tile(DType t, const void* src, size_t n, std::vector<uint8_t>& out) {
  TileLayout l{};
  l.mode = TileMode::raw;
  l.n_elems = static_cast<uint32_t>(n);
  const size_t base = out.size();
  const size_t bytes = n * dtype_size(t);
  out.resize(base + kTileHeaderBytes + bytes);
  write_tile_header(l, out.data() + base);
  if (bytes > 0) std::memcpy(out.data() + base + kTileHeaderBytes, src, bytes);
}

// Splits the source into its symbol plane and raw plane (a simple loop the compiler
// vectorises), then counts symbols with four sub-histograms so that runs of one symbol (a few
// exponents dominate) do not serialise on one counter.
template <class Split>
void split_elements(const uint8_t* src, uint32_t n, uint8_t* sym, uint8_t* raw, std::array<uint64_t, 256>& count) {
  constexpr size_t kSize = sizeof(typename Split::Value);
  for (uint32_t i = 0; i < n; ++i) {
    const auto v = Split::load(src + size_t(i) * kSize);
    sym[i] = static_cast<uint8_t>(Split::symbol(v));
    Split::put_raw(v, raw + size_t(i) * Split::kRawBytes);
  }
  uint32_t h[4][256] = {};  // n <= 2^24 fits a u32 counter
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++h[0][sym[i]];
    ++h[1][sym[i + 1]];
    ++h[2][sym[i + 2]];
    ++h[3][sym[i + 3]];
  }
  for (; i < n; ++i) ++h[0][sym[i]];
  for (uint32_t s = 0; s < 256; ++s) count[s] = uint64_t(h[0][s]) + h[1][s] + h[2][s] + h[3][s];
}

// Encodes one symbol into state x. Words go to wp[-1], wp moving down only when one is due;
// the store is unconditional (branch-free), so the buffer keeps one spare word below.
// Shift amounts instead of ?: keep the compiler from branching on the (unpredictable) flush.
inline void encode_symbol(uint32_t& x, const RansEncSymbol& es, uint16_t*& wp) {
  const uint32_t flush = x >= es.x_max;
  wp[-1] = static_cast<uint16_t>(x);
  wp -= flush;
  x >>= flush << 4;
  const auto q = static_cast<uint32_t>((static_cast<unsigned __int128>(x) * es.rcp) >> kRcpShift);
  x += q * es.cmpl + es.cum;  // (x / f) << P + x % f + cum, < 2^32 since x < f << (32 - P)
}

// Encodes the n (1..32768) elements of one chunk into `stream`: 32 final states, the words in
// the order the decoder reads them, zero padding. Returns the stream's size in bytes. The
// words are built back to front ending at words_end, with kSpareWords free below them.
constexpr size_t kSpareWords = 9;  // encode_symbol's 1, encode_steps_avx2's 8
size_t encode_chunk(const RansEncodeTable& enc, uint32_t prob_bits, const uint8_t* sym, uint32_t n,
                    uint16_t* words_end, uint8_t* stream) {
  uint32_t x[kLanes];
  for (auto& s : x) s = kStateLow;
  uint16_t* wp = words_end;
  // Reverse of the decoder's order: the partial last step first, then full steps from the top,
  // lane 31 down to lane 0. Element e belongs to lane e % 32.
  const uint32_t full = n / kLanes * kLanes;
  for (uint32_t e = n; e-- > full;) encode_symbol(x[e % kLanes], enc.symbol[sym[e]], wp);
  if (simd_enabled()) {
    encode_steps_avx2(x, enc.packed.data(), prob_bits, sym, full / kLanes, wp);
  } else {
    for (uint32_t base = full; base > 0;) {
      base -= kLanes;
#pragma GCC unroll 32
      for (uint32_t i = 0; i < kLanes; ++i) {
        const uint32_t l = kLanes - 1 - i;
        encode_symbol(x[l], enc.symbol[sym[base + l]], wp);
      }
    }
  }
  for (uint32_t l = 0; l < kLanes; ++l) store_u32(stream + 4 * l, x[l]);
  const size_t words = static_cast<size_t>(words_end - wp);
  std::memcpy(stream + kStateBytes, wp, 2 * words);
  const size_t size = chunk_stream_bytes(words);
  std::memset(stream + kStateBytes + 2 * words, 0, size - kStateBytes - 2 * words);
  return size;
}

template <class Split>
void encode_rans_tile(DType t, const uint8_t* src, uint32_t n, std::vector<uint8_t>& out,
                      const EncodeOptions& opt, SymbolHistogram* symbols) {
  EncodeScratch& sc = scratch();
  sc.raw.resize(size_t(n) * Split::kRawBytes);
  sc.sym.resize(n);
  std::array<uint64_t, 256> count{};
  split_elements<Split>(src, n, sc.sym.data(), sc.raw.data(), count);
  if (symbols) {
    for (size_t s = 0; s < 256; ++s) symbols->count[s] += count[s];
    symbols->total += n;
  }
  const FreqTable ft = normalise_frequencies(count, opt.prob_bits);
  const auto enc = build_encode_table(ft);

  TileLayout l{};
  l.mode = TileMode::rans;
  l.prob_bits = opt.prob_bits;
  l.sym_lo = ft.sym_lo;
  l.sym_count = ft.sym_count;
  l.n_elems = n;
  l.n_chunks = chunk_count(n);

  // Streams: worst case one word per element per chunk, plus states and padding.
  sc.streams.resize(size_t(n) * 2 + size_t(l.n_chunks) * (kStateBytes + kStreamAlign));
  sc.words.resize(kSpareWords + kChunkElems);
  std::vector<uint32_t> chunk_end(l.n_chunks);
  size_t pos = 0;
  for (uint32_t k = 0; k < l.n_chunks; ++k) {
    pos += encode_chunk(enc, opt.prob_bits, sc.sym.data() + size_t(k) * kChunkElems, chunk_elems(n, k),
                        sc.words.data() + sc.words.size(), sc.streams.data() + pos);
    chunk_end[k] = static_cast<uint32_t>(pos);
  }
  l.stream_bytes = static_cast<uint32_t>(pos);
  const uint64_t size = place_rans_parts(t, l);
  if (opt.allow_raw && size >= kTileHeaderBytes + uint64_t(n) * dtype_size(t)) {
    append_raw_tile(t, src, n, out);
    return;
  }

  const size_t base = out.size();
  out.resize(base + size, 0);  // zero: the padding between parts
  uint8_t* tile = out.data() + base;
  write_tile_header(l, tile);
  for (uint32_t i = 0; i < l.sym_count; ++i)
    store_u16(tile + l.freq_offset + 2 * i, static_cast<uint16_t>(ft.freq[l.sym_lo + i]));
  for (uint32_t k = 0; k < l.n_chunks; ++k) store_u32(tile + l.chunk_end_offset + 4 * k, chunk_end[k]);
  std::memcpy(tile + l.raw_offset, sc.raw.data(), sc.raw.size());
  std::memcpy(tile + l.stream_offset, sc.streams.data(), pos);
}

}  // namespace

void encode_tile(DType t, const void* src, size_t n, std::vector<uint8_t>& out, const EncodeOptions& opt,
                 SymbolHistogram* symbols) {
  CLLM_CHECK(dtype_valid(static_cast<uint8_t>(t)), "encode_tile: unknown dtype ", static_cast<int>(t));
  CLLM_CHECK(n <= kMaxTileElems, "encode_tile: ", n, " elements exceed the tile limit ", kMaxTileElems);
  CLLM_CHECK(opt.prob_bits >= kMinProbBits && opt.prob_bits <= kMaxProbBits, "encode_tile: prob_bits ",
             opt.prob_bits, " outside ", kMinProbBits, "..", kMaxProbBits);
  if (t == DType::U8 || n == 0 || opt.force_raw) {
    if (symbols) symbols->add(t, src, n);  // no coding pass counted them
    append_raw_tile(t, src, n, out);
    return;
  }
  const auto* bytes = static_cast<const uint8_t*>(src);
  const auto n32 = static_cast<uint32_t>(n);
  if (t == DType::F32)
    encode_rans_tile<Split32>(t, bytes, n32, out, opt, symbols);
  else
    encode_rans_tile<Split16>(t, bytes, n32, out, opt, symbols);
}

}  // namespace cllm::codec
