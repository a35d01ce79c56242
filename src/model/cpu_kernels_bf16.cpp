#include "model/cpu_kernels_bf16.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

#include "common/error.h"
#include "model/cpu_kernels_isa.h"
#include "model/cpu_ops.h"

namespace cllm::cpu {

namespace {

using kernels::IsaKernels;
using kernels::RowsArgs;

// ---- The scalar path: the readable reference. One weight row is widened into a small buffer
// and dotted with each token by cpu::dot, so it is cpu::matmul's arithmetic by construction.

template <DType D>
float widen(uint16_t h) {
  if constexpr (D == DType::BF16) return bf16_to_f32(h);
  else return f16_to_f32(h);
}

template <DType D>
void rows_scalar(const RowsArgs& a, int r0, int r1) {
  thread_local std::vector<float> row;
  row.resize(a.k);
  for (int r = r0; r < r1; ++r) {
    const uint16_t* w = a.w + static_cast<size_t>(r) * a.k;
    for (int i = 0; i < a.k; ++i) row[i] = widen<D>(w[i]);
    for (int t = 0; t < a.n; ++t) {
      const float d = dot(a.x + static_cast<size_t>(t) * a.kx, row.data(), a.k);
      float& y = a.y[static_cast<size_t>(t) * a.ldy + r];
      y = a.accumulate ? y + d : d;
    }
  }
}

void scores_scalar(float* scores, const float* q, const uint16_t* k, int n_pos, int kv_stride, int head_dim,
                   float scale) {
  thread_local std::vector<float> row;
  row.resize(head_dim);
  for (int p = 0; p < n_pos; ++p) {
    const uint16_t* kp = k + static_cast<size_t>(p) * kv_stride;
    for (int i = 0; i < head_dim; ++i) row[i] = f16_to_f32(kp[i]);
    scores[p] = dot(q, row.data(), head_dim) * scale;
  }
}

void weighted_sum_scalar(float* out, const float* weights, float sum, const uint16_t* v, int n_pos, int kv_stride,
                         int head_dim) {
  for (int i = 0; i < head_dim; ++i) out[i] = 0.0f;
  for (int p = 0; p < n_pos; ++p) {
    const float a = weights[p] / sum;
    const uint16_t* vp = v + static_cast<size_t>(p) * kv_stride;
    for (int i = 0; i < head_dim; ++i) out[i] += a * f16_to_f32(vp[i]);
  }
}

void round_bf16_scalar(const float* x, float* out, uint16_t* bits, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const uint16_t b = f32_to_bf16(x[i]);
    out[i] = bf16_to_f32(b);
    if (bits) bits[i] = b;
  }
}

void round_f16_scalar(const float* x, float* out, uint16_t* bits, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = f32_to_f16(x[i]);
    out[i] = f16_to_f32(h);
    if (bits) bits[i] = h;
  }
}

constexpr IsaKernels kScalar = {rows_scalar<DType::BF16>, rows_scalar<DType::F16>, scores_scalar,
                                weighted_sum_scalar,      round_bf16_scalar,       round_f16_scalar,
                                false};

// ---- Dispatch

// From CPUID, and XGETBV for the OS saving the registers (compiler-independent: clang's
// __builtin_cpu_supports knows neither "f16c" nor, in older versions, "avx512bf16").
bool cpu_has(Isa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (isa == Isa::scalar) return true;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool fma = c >> 12 & 1, osxsave = c >> 27 & 1, avx = c >> 28 & 1, f16c = c >> 29 & 1;
  if (!(fma && osxsave && avx && f16c)) return false;
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6) != 0x6) return false;  // XMM and YMM state
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b >> 5 & 1;
  if (isa == Isa::avx2) return avx2;
  const bool avx512 = avx2 && (b >> 16 & 1) && (b >> 30 & 1) && (b >> 31 & 1) &&  // F, BW, VL
                      (xcr0_lo & 0xE0) == 0xE0;                                     // opmask and ZMM state
  if (isa == Isa::avx512) return avx512;
  __cpuid_count(7, 1, a, b, c, d);
  return avx512 && (a >> 5 & 1);  // AVX512_BF16
#else
  return isa == Isa::scalar;
#endif
}

const IsaKernels* compiled(Isa isa) {
  switch (isa) {
    case Isa::scalar: return &kScalar;
    case Isa::avx2: return kernels::avx2_kernels();
    case Isa::avx512: return kernels::avx512_kernels();
    case Isa::avx512_bf16: return kernels::avx512_bf16_kernels();
  }
  return nullptr;
}

constexpr Isa kAllIsas[] = {Isa::scalar, Isa::avx2, Isa::avx512, Isa::avx512_bf16};

// Per ISA: whether it is available, and its table: its own loops, the rest from the ISA below
// it (AVX-512 takes attention and rounding from AVX2; AVX512_BF16 takes f16 rows from AVX-512).
struct Tables {
  bool available[4] = {};
  IsaKernels t[4];
  Tables() {
    IsaKernels cur = kScalar;
    for (Isa isa : kAllIsas) {
      const int i = static_cast<int>(isa);
      const IsaKernels* own = compiled(isa);
      available[i] = own && cpu_has(isa);
      if (available[i]) {
        if (own->rows_bf16) cur.rows_bf16 = own->rows_bf16;
        if (own->rows_f16) cur.rows_f16 = own->rows_f16;
        if (own->scores_f16) cur.scores_f16 = own->scores_f16;
        if (own->weighted_sum_f16) cur.weighted_sum_f16 = own->weighted_sum_f16;
        if (own->round_bf16) cur.round_bf16 = own->round_bf16;
        if (own->round_f16) cur.round_f16 = own->round_f16;
        cur.needs_bf16_input = own->needs_bf16_input;
      }
      t[i] = cur;
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

const IsaKernels& table(Isa isa) {
  CLLM_CHECK(isa_available(isa), "CPU kernels: ", isa_name(isa), " is not available on this CPU or build");
  return tables().t[static_cast<int>(isa)];
}

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

// Rows per work item of the pool. One token: 16 rows of k = 4096 are 128 KiB of bf16, enough
// to stream at full speed, small enough (256 items for a 4096-row product) to balance 16
// threads. Batches are bound by arithmetic rather than memory, and their kernels work on
// blocks of 12 (AVX2) or 8 (AVX-512) rows that reuse each input load: 24 rows, so that no
// block is cut short. Which thread computes a row never changes how it is computed.
int rows_per_item(int n) { return n >= 4 ? 24 : 16; }

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::avx512_bf16: return "avx512-bf16";
  }
  return "?";
}

bool isa_from_name(const std::string& name, Isa* out) {
  for (Isa isa : kAllIsas)
    if (name == isa_name(isa)) {
      *out = isa;
      return true;
    }
  return false;
}

bool isa_available(Isa isa) {
  const int i = static_cast<int>(isa);
  return i >= 0 && i < 4 && tables().available[i];
}

Isa isa_best() {
  static const Isa best = [] {
    if (const char* env = std::getenv("CLLM_CPU_ISA"); env && *env) {
      std::string names;
      for (Isa isa : kAllIsas)
        if (isa_available(isa)) names += cat(names.empty() ? "" : ", ", isa_name(isa));
      Isa isa;
      if (!isa_from_name(env, &isa)) fail("CLLM_CPU_ISA=", env, ": unknown instruction set (available here: ", names, ")");
      if (!isa_available(isa)) fail("CLLM_CPU_ISA=", env, ": not available on this CPU or build (available here: ", names, ")");
      return isa;
    }
    Isa b = Isa::scalar;
    for (Isa isa : kAllIsas)
      if (isa_available(isa)) b = isa;
    return b;
  }();
  return best;
}

void round_to_dtype(DType t, const float* x, float* out, size_t n, Isa isa) {
  const IsaKernels& k = table(isa);
  switch (t) {
    case DType::F32: std::copy(x, x + n, out); return;
    case DType::BF16: k.round_bf16(x, out, nullptr, n); return;
    case DType::F16: k.round_f16(x, out, nullptr, n); return;
    default: fail("round_to_dtype: ", dtype_name(t), " is not a float type");
  }
}

void matmul16(float* y, int ldy, const float* x, const void* w, DType wt, int n, int k, int d, ThreadPool* pool,
              bool accumulate, Isa isa) {
  Product16 p;
  p.w = w;
  p.d = d;
  p.y = y;
  p.ldy = ldy;
  p.accumulate = accumulate;
  matmul16_multi(&p, 1, x, wt, n, k, pool, isa);
}

void matmul16_multi(const Product16* products, int count, const float* x, DType wt, int n, int k, ThreadPool* pool,
                    Isa isa) {
  CLLM_CHECK(wt == DType::BF16 || wt == DType::F16, "matmul16: weights are ", dtype_name(wt),
             ", expected bf16 or f16");
  CLLM_CHECK(n >= 1 && k >= 1, "matmul16: ", n, " tokens of ", k, " inputs (both must be >= 1)");
  for (int i = 0; i < count; ++i) {
    const Product16& p = products[i];
    CLLM_CHECK(p.w && p.y && p.d >= 1 && p.ldy >= p.d, "matmul16: product ", i, " has d = ", p.d, ", ldy = ", p.ldy,
               (p.w ? "" : ", no weights"), (p.y ? "" : ", no output"), " (need weights, an output, d >= 1, ldy >= d)");
  }
  const IsaKernels& kern = table(isa);
  const bool bf16 = wt == DType::BF16;
  const kernels::RowsFn rows = bf16 ? kern.rows_bf16 : kern.rows_f16;
  const bool want_bits = bf16 && kern.needs_bf16_input;

  // The inputs rounded to the weights' dtype, rows padded with zeros to a multiple of 8 (and
  // as bf16 bits padded to 32 for vdpbf16ps). Per calling thread, reused across calls.
  thread_local std::vector<float> xr;
  thread_local std::vector<uint16_t> xh;
  const size_t kx = round_up(k, 8), kh = round_up(k, 32);
  xr.assign(static_cast<size_t>(n) * kx, 0.0f);
  if (want_bits) xh.assign(static_cast<size_t>(n) * kh, 0);
  const kernels::RoundFn round = bf16 ? kern.round_bf16 : kern.round_f16;
  for (int t = 0; t < n; ++t)
    round(x + static_cast<size_t>(t) * k, xr.data() + t * kx, want_bits ? xh.data() + t * kh : nullptr, k);

  RowsArgs base;
  base.k = k;
  base.x = xr.data();
  base.kx = static_cast<int>(kx);
  base.xh = want_bits ? xh.data() : nullptr;
  base.kh = static_cast<int>(kh);
  base.n = n;

  // Work items: each product's rows in chunks of `rows` rows, products one after another.
  const int per_item = rows_per_item(n);
  std::vector<size_t> first_item(count + 1, 0);
  for (int i = 0; i < count; ++i)
    first_item[i + 1] = first_item[i] + (static_cast<size_t>(products[i].d) + per_item - 1) / per_item;
  const double cost = static_cast<double>(per_item) * k * n;
  parallel_for(pool, first_item[count], cost, [&](size_t item) {
    int i = 0;
    while (item >= first_item[i + 1]) ++i;
    const Product16& p = products[i];
    RowsArgs a = base;
    a.w = static_cast<const uint16_t*>(p.w);
    a.y = p.y;
    a.ldy = p.ldy;
    a.accumulate = p.accumulate;
    const int r0 = static_cast<int>(item - first_item[i]) * per_item;
    rows(a, r0, std::min(p.d, r0 + per_item));
  });
}

void attention_head_f16(float* out, const float* q, const uint16_t* k, const uint16_t* v, int n_pos, int kv_stride,
                        int head_dim, float* scores, Isa isa) {
  const IsaKernels& kern = table(isa);
  // As cpu::attention_head: scaled scores, softmax with the maximum subtracted, weighted sum.
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  kern.scores_f16(scores, q, k, n_pos, kv_stride, head_dim, scale);
  float max_score = -INFINITY;
  for (int p = 0; p < n_pos; ++p) max_score = std::max(max_score, scores[p]);
  float sum = 0.0f;
  for (int p = 0; p < n_pos; ++p) {
    scores[p] = std::exp(scores[p] - max_score);
    sum += scores[p];
  }
  kern.weighted_sum_f16(out, scores, sum, v, n_pos, kv_stride, head_dim);
}

}  // namespace cllm::cpu
