#include "model/cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "model/cpu_attention_isa.h"
#include "model/cpu_ops.h"

namespace cllm::cpu {

namespace {

using attn::AttentionKernels;
using attn::ChunkArgs;
using attn::kPartL;
using attn::kPartM;

static_assert(attn::kChunk == kAttentionChunk, "the ISA files' chunk is the public one");

// Tokens per pass over the cache: a pass holds a partial row per (kv head, chunk, token, query
// head), 17 MiB for 16 tokens of Llama-3.1-8B at 32768 positions. Longer batches (prompts) run
// in passes of this many tokens; no (token, head) is computed differently for it.
constexpr int kTokenBlock = 16;

// ---- The scalar path: the same chunks and combine in plain C++ (cpu::dot, std::exp, sums in
// position order): the portable fallback, and a second opinion for the tests.

void chunk_scalar_head(const ChunkArgs& a) {
  const int hd = a.head_dim, G = a.group, np = a.p1 - a.p0, rows = (a.t1 - a.t0) * G;
  thread_local std::vector<float> kv, w;
  kv.resize(static_cast<size_t>(np) * hd);
  w.resize(static_cast<size_t>(rows) * np);
  const auto widen = [&](const void* base) {
    for (int p = 0; p < np; ++p) {
      const size_t at = static_cast<size_t>(a.p0 + p) * a.kv_stride;
      float* d = kv.data() + static_cast<size_t>(p) * hd;
      for (int i = 0; i < hd; ++i)
        d[i] = a.f16 ? f16_to_f32(static_cast<const uint16_t*>(base)[at + i]) : static_cast<const float*>(base)[at + i];
    }
  };
  const auto n_valid = [&](int r) { return std::min(a.p1, a.pos + a.t0 + r / G + 1) - a.p0; };
  const auto first_valid = [&](int r) { return std::max(attn::first_visible(a.pos, a.t0 + r / G, a.window) - a.p0, 0); };
  const auto out_row = [&](int r) {
    return a.part + (static_cast<size_t>(a.t0 + r / G - a.t_base) * G + r % G) * a.part_stride;
  };
  widen(a.k);
  for (int r = 0; r < rows; ++r) {
    const int n = n_valid(r), lo = first_valid(r);
    const float* q = a.q + static_cast<size_t>(a.t0 + r / G) * a.q_stride + static_cast<size_t>(r % G) * hd;
    float* s = w.data() + static_cast<size_t>(r) * np;
    float m = -INFINITY;
    for (int p = lo; p < n; ++p) s[p] = dot(q, kv.data() + static_cast<size_t>(p) * hd, hd) * a.scale;
    if (a.softcap > 0) softcap(s + lo, static_cast<size_t>(n - lo), a.softcap);
    for (int p = lo; p < n; ++p) m = std::max(m, s[p]);
    float l = 0.0f;
    for (int p = lo; p < n; ++p) {
      s[p] = std::exp(s[p] - m);
      l += s[p];
    }
    float* o = out_row(r);
    o[a.part_stride - kPartM] = m;
    o[a.part_stride - kPartL] = l;
  }
  widen(a.v);
  for (int r = 0; r < rows; ++r) {
    const int n = n_valid(r);
    const float* s = w.data() + static_cast<size_t>(r) * np;
    float* o = out_row(r);
    std::fill(o, o + hd, 0.0f);
    for (int p = first_valid(r); p < n; ++p) {
      const float* vp = kv.data() + static_cast<size_t>(p) * hd;
      for (int i = 0; i < hd; ++i) o[i] += s[p] * vp[i];
    }
  }
}

// An item's heads one after another.
void chunk_scalar(const ChunkArgs& a) {
  const size_t esize = a.f16 ? 2 : 4;
  for (int h = 0; h < a.heads; ++h) {
    ChunkArgs one = a;
    one.heads = 1;
    one.q = a.q + static_cast<size_t>(h) * a.group * a.head_dim;
    one.k = static_cast<const char*>(a.k) + static_cast<size_t>(h) * a.head_dim * esize;
    one.v = static_cast<const char*>(a.v) + static_cast<size_t>(h) * a.head_dim * esize;
    one.part = a.part + h * a.part_head_stride;
    chunk_scalar_head(one);
  }
}

void combine_scalar(float* out, const float* part, size_t chunk_stride, int n_chunks, int hd, int part_stride) {
  float big = -INFINITY;
  for (int c = 0; c < n_chunks; ++c) big = std::max(big, part[c * chunk_stride + part_stride - kPartM]);
  std::fill(out, out + hd, 0.0f);
  float l = 0.0f;
  for (int c = 0; c < n_chunks; ++c) {
    const float* row = part + c * chunk_stride;
    const float e = std::exp(row[part_stride - kPartM] - big);
    l += e * row[part_stride - kPartL];
    for (int i = 0; i < hd; ++i) out[i] += e * row[i];
  }
  for (int i = 0; i < hd; ++i) out[i] /= l;
}

constexpr AttentionKernels kScalar = {chunk_scalar, combine_scalar};

// AVX512_BF16 brings nothing to attention: it runs the AVX-512 loops; a build without an ISA's
// file falls back to the one below it.
const AttentionKernels& kernels_for(Isa isa) {
  CLLM_CHECK(isa_available(isa), "attention: ", isa_name(isa), " is not available on this CPU or build");
  const AttentionKernels* k = nullptr;
  if (isa == Isa::avx512 || isa == Isa::avx512_bf16) k = attn::avx512_attention();
  if (!k && isa != Isa::scalar) k = attn::avx2_attention();
  return k ? *k : kScalar;
}

}  // namespace

void attention(const AttentionArgs& a, ThreadPool* pool, Isa isa) {
  CLLM_CHECK(a.out && a.q && a.k && a.v, "attention: missing ", !a.out ? "output" : !a.q ? "queries" : "keys/values");
  CLLM_CHECK(a.kv_dtype == DType::F16 || a.kv_dtype == DType::F32, "attention: KV cache of ",
             dtype_name(a.kv_dtype), ", expected f16 or f32");
  CLLM_CHECK(a.window >= 0, "attention: sliding window ", a.window, " must be >= 0 (0: none)");
  CLLM_CHECK(a.scale >= 0 && a.softcap >= 0, "attention: scale ", a.scale, " and softcap ", a.softcap,
             " must be >= 0 (0: the default, none)");
  CLLM_CHECK(a.n_tokens >= 0 && a.pos >= 0 && a.head_dim >= 1 && a.n_kv_heads >= 1 && a.n_heads >= a.n_kv_heads &&
                 a.n_heads % a.n_kv_heads == 0,
             "attention: ", a.n_tokens, " tokens at position ", a.pos, ", ", a.n_heads, " heads over ", a.n_kv_heads,
             " kv heads of ", a.head_dim, " (need heads a multiple of kv heads, all >= 1)");
  CLLM_CHECK(a.kv_stride >= a.n_kv_heads * a.head_dim && a.q_stride >= a.n_heads * a.head_dim &&
                 a.out_stride >= a.n_heads * a.head_dim,
             "attention: strides (q ", a.q_stride, ", out ", a.out_stride, ", kv ", a.kv_stride,
             ") shorter than the rows they hold");
  const AttentionKernels& kern = kernels_for(isa);
  const int G = a.n_heads / a.n_kv_heads, hd = a.head_dim, C = kAttentionChunk;
  const int ps = (hd + 15) / 16 * 16 + 16;  // cpu_attention_isa.h's part_stride
  const size_t esize = a.kv_dtype == DType::F16 ? 2 : 4;

  // (A thread_local named inside the lambdas below would be each worker's own: they get
  // the calling thread's through this pointer.)
  thread_local std::vector<float> part_buffer;
  for (int tb = 0; tb < a.n_tokens; tb += kTokenBlock) {
    const int te = std::min(a.n_tokens, tb + kTokenBlock), nt = te - tb;
    const int n_ctx = a.pos + te;  // positions seen by the pass's last token
    const int n_chunks = (n_ctx + C - 1) / C;
    // partial row of (kv head j, chunk c, token t, query head g) at
    // ((j * n_chunks + c) * nt + t - tb) * G + g rows of ps floats
    const size_t chunk_stride = static_cast<size_t>(nt) * G * ps;
    part_buffer.resize(static_cast<size_t>(a.n_kv_heads) * n_chunks * chunk_stride);
    float* const part = part_buffer.data();

    ChunkArgs base;
    base.q_stride = a.q_stride;
    base.f16 = a.kv_dtype == DType::F16;
    base.kv_stride = a.kv_stride;
    base.head_dim = hd;
    base.group = G;
    base.t1 = te;
    base.pos = a.pos;
    base.window = a.window;
    base.scale = a.scale > 0 ? a.scale : 1.0f / std::sqrt(static_cast<float>(hd));
    base.softcap = a.softcap;
    base.t_base = tb;
    base.part_stride = ps;
    // Items: H kv heads over one chunk. All the heads while there are enough chunks for the
    // threads, so that each position's keys and values are read as one run (widen_rows); fewer
    // where the chunks are few, and where the heads' rows together would pass kItemRows (then the
    // arithmetic, not the reads, is what costs, and it wants its buffers in L1). Which heads
    // share an item changes no bit.
    constexpr int kItemRows = 16;
    const int threads = pool ? pool->size() : 1;
    int H = a.n_kv_heads;
    while (H > 1 && (static_cast<long long>(a.n_kv_heads / H) * n_chunks < threads || H * nt * G > kItemRows)) {
      do --H;
      while (a.n_kv_heads % H != 0);
    }
    base.heads = H;
    base.part_head_stride = static_cast<size_t>(n_chunks) * chunk_stride;
    const double chunk_cost = 4.0 * hd * C * nt * G * H;  // scores and weighted sums, multiply-adds
    parallel_for(pool, static_cast<size_t>(a.n_kv_heads / H) * n_chunks, chunk_cost, [&](size_t item) {
      const int j = static_cast<int>(item / n_chunks) * H, c = static_cast<int>(item % n_chunks);
      ChunkArgs ca = base;
      ca.q = a.q + static_cast<size_t>(j) * G * hd;
      ca.k = static_cast<const char*>(a.k) + static_cast<size_t>(j) * hd * esize;
      ca.v = static_cast<const char*>(a.v) + static_cast<size_t>(j) * hd * esize;
      ca.p0 = c * C;
      ca.p1 = std::min(ca.p0 + C, n_ctx);
      ca.t0 = std::max(tb, ca.p0 - a.pos);  // the first token that sees p0
      // With a window, the tokens whose window starts below p1 (first_visible(t) < p1).
      if (a.window > 0) ca.t1 = std::min(te, ca.p1 + a.window - 1 - a.pos);
      if (ca.t1 <= ca.t0) return;  // below every token's window: no combine reads it
      ca.part = part + (static_cast<size_t>(j) * n_chunks + c) * chunk_stride;
      kern.chunk(ca);
    });
    // Each (token, head): the chunks it sees combined in position order.
    parallel_for(pool, static_cast<size_t>(nt) * a.n_heads, 2.0 * n_chunks * hd, [&](size_t i) {
      const int t = tb + static_cast<int>(i / a.n_heads), h = static_cast<int>(i % a.n_heads);
      const int j = h / G, g = h % G;
      const int c0 = attn::first_visible(a.pos, t, a.window) / C;
      const float* row = part + (static_cast<size_t>(j) * n_chunks + c0) * chunk_stride +
                         (static_cast<size_t>(t - tb) * G + g) * ps;
      kern.combine(a.out + static_cast<size_t>(t) * a.out_stride + static_cast<size_t>(h) * hd, row, chunk_stride,
                   (a.pos + t) / C + 1 - c0, hd, ps);
    });
  }
}

AttentionArgs layer_attention_args(const LlamaConfig& c, int layer, float* out, const float* q, const void* k,
                                   const void* v, DType kv_dtype, int n, int pos) {
  AttentionArgs a;
  a.out = out;
  a.out_stride = c.q_dim();
  a.q = q;
  a.q_stride = c.q_dim();
  a.k = k;
  a.v = v;
  a.kv_dtype = kv_dtype;
  a.kv_stride = c.kv_dim();
  a.n_tokens = n;
  a.pos = pos;
  a.window = c.window_of(layer);
  a.scale = c.attention_scale();
  a.softcap = c.attn_softcap;
  a.n_heads = c.n_heads;
  a.n_kv_heads = c.n_kv_heads;
  a.head_dim = c.head_dim;
  return a;
}

}  // namespace cllm::cpu
