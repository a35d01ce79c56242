// Specification of the transformer's GPU kernels (cuda/kernels.h, cuda/blas.h), one at a time,
// against the CPU ops (src/model/cpu_ops.h), their oracle, on random inputs of a small model's
// odd shapes: dim 576, 9 heads and 3 KV heads of 64, ffn 1536 (SmolLM-135M's), with 1, 63 and
// 65 tokens. Attention has its own tests (test-gpu-attention.cpp). [gpu] tests skip, visibly,
// where no CUDA device exists.
//
// Tolerances. Where the math is exact (gathers, copies, the KV cache's v rows, rounding to a
// dtype) the tests ask for the same bits. Elsewhere both sides compute in fp32 from the same
// inputs (the inputs of linear layers rounded to the weights' dtype first, as the GPU stores
// them), in another order, with fused multiply-adds, or with CUDA's expf; u = 2^-24 is fp32's
// unit roundoff, and each bound below is the sum of the two sides' worst-case error bounds:
// - a sum of k terms in any order is within k·u·Σ|term| of the exact sum, on each side; cuBLAS's
//   tensor cores may truncate instead of rounding (2u per addition): 4·(k+1)·u·Σ|w_i x_i|
//   (+|y| when accumulating) covers both sides, and is still well below the size of one
//   missing, doubled or misplaced term.
// - RMSNorm: a sum of dim squares (positive terms: dim·u relative), halved by the square root,
//   and a few roundings: (dim + 16)·u relative.
// - RoPE: x0·c - x1·s with |c|, |s| <= 1, rounded twice (or fused once): 4u·(|x0| + |x1|).
// - SwiGLU: expf is within 2 ulp on the GPU (CUDA's programming guide), 1 on the CPU; then an
//   addition, a division and a product, each rounded: 32u relative.
// An output stored in bf16 or f16 must lie between the roundings of want - tol and want + tol
// (rounding to nearest is monotone, so every fp32 value within the tolerance rounds in there).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/thread_pool.h"
#include "model/cpu_ops.h"
#include "model/llama_config.h"
#include "tests/test_util.h"
#if CLLM_HAVE_CUDA
#include "cuda/blas.h"
#include "cuda/device_buffer.h"
#include "cuda/kernels.h"
#endif

using namespace cllm;

namespace {
#if CLLM_HAVE_CUDA

using cuda::DeviceBuffer;

constexpr int kDim = 576, kHeads = 9, kKvHeads = 3, kHeadDim = 64, kFfn = 1536;
constexpr int kQDim = kHeads * kHeadDim, kKvDim = kKvHeads * kHeadDim;
constexpr int kTokenCounts[] = {1, 63, 65};
constexpr DType kDtypes[] = {DType::BF16, DType::F16, DType::F32};
constexpr double kU = 1.0 / (1 << 24);  // fp32 unit roundoff

// Values stored in a dtype: the bytes the GPU reads, and exactly those values in fp32 for the CPU.
struct Stored {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

Stored store(const std::vector<float>& v, DType dt) {
  Stored s{std::vector<uint8_t>(v.size() * dtype_size(dt)), std::vector<float>(v.size())};
  for (size_t i = 0; i < v.size(); ++i) {
    if (dt == DType::F32) {
      std::memcpy(&s.bytes[4 * i], &v[i], 4);
    } else {
      const uint16_t h = dt == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      std::memcpy(&s.bytes[2 * i], &h, 2);
    }
  }
  to_f32(dt, s.bytes.data(), s.values.data(), v.size());
  return s;
}

// v rounded to dt, as fp32.
float round_to(DType dt, float v) {
  if (dt == DType::BF16) return bf16_to_f32(f32_to_bf16(v));
  if (dt == DType::F16) return f16_to_f32(f32_to_f16(v));
  return v;
}

std::vector<float> as_f32(const std::vector<uint8_t>& bytes, DType dt) {
  std::vector<float> f(bytes.size() / dtype_size(dt));
  to_f32(dt, bytes.data(), f.data(), f.size());
  return f;
}

std::vector<float> random_vector(size_t n, float stddev, std::mt19937_64& rng) {
  return test::gaussian(n, 0.0f, stddev, rng);
}

DeviceBuffer<uint8_t> upload_bytes(const std::vector<uint8_t>& b) {
  DeviceBuffer<uint8_t> d;
  d.upload(b);
  return d;
}

DeviceBuffer<float> upload_floats(const std::vector<float>& f) {
  DeviceBuffer<float> d;
  d.upload(f);
  return d;
}

void sync() { CLLM_CUDA_CHECK(cudaDeviceSynchronize()); }

// got (the GPU's outputs, stored in dt, read back as fp32) against want (the CPU's fp32
// results): got[i] must lie between the roundings to dt of want[i] -/+ tol[i]. One CHECK
// for the lot, naming the first few outliers.
void check_near(const std::vector<float>& got, DType dt, const std::vector<float>& want, const std::vector<double>& tol,
                const std::string& what) {
  REQUIRE(got.size() == want.size());
  REQUIRE(tol.size() == want.size());
  size_t bad = 0;
  std::ostringstream first;
  for (size_t i = 0; i < want.size(); ++i) {
    const float lo = round_to(dt, static_cast<float>(want[i] - tol[i]));
    const float hi = round_to(dt, static_cast<float>(want[i] + tol[i]));
    if (got[i] >= lo && got[i] <= hi) continue;  // false for NaN
    if (++bad <= 4)
      first << "\n  [" << i << "] gpu " << got[i] << ", cpu " << want[i] << " +- " << tol[i] << " (allowed " << lo
            << " .. " << hi << ")";
  }
  INFO(what << " (" << dtype_name(dt) << "): " << bad << " of " << want.size() << " values out of tolerance"
            << first.str());
  CHECK(bad == 0);
}

// tol[i] = rel * |want[i]|.
std::vector<double> relative(const std::vector<float>& want, double rel) {
  std::vector<double> tol(want.size());
  for (size_t i = 0; i < want.size(); ++i) tol[i] = rel * std::fabs(want[i]);
  return tol;
}

// The CPU's y (n, d) = x (n, k) W^T (+ y0), and each element's tolerance (see the top of the
// file): 4 (k+1) u (sum_j |w_rj x_tj| + |y0|).
struct Product {
  std::vector<float> y;
  std::vector<double> tol;
};
Product cpu_product(const std::vector<float>& w, const std::vector<float>& x, const std::vector<float>* y0, int n,
                    int k, int d, ThreadPool& pool) {
  Product p{std::vector<float>(static_cast<size_t>(n) * d), std::vector<double>(static_cast<size_t>(n) * d)};
  cpu::matmul(p.y.data(), d, x.data(), w.data(), n, k, d, &pool);
  for (int t = 0; t < n; ++t)
    for (int r = 0; r < d; ++r) {
      const size_t i = static_cast<size_t>(t) * d + r;
      double mag = 0;
      for (int j = 0; j < k; ++j) mag += std::fabs(static_cast<double>(w[static_cast<size_t>(r) * k + j]) * x[static_cast<size_t>(t) * k + j]);
      if (y0) {
        mag += std::fabs((*y0)[i]);
        p.y[i] = (*y0)[i] + p.y[i];
      }
      p.tol[i] = 4.0 * (k + 1) * kU * mag;
    }
  return p;
}

// Bytes of a dtype-typed device buffer starting `offset` elements in: for inputs that must not
// be 16-byte aligned (the matrix-vector kernels' scalar path).
DeviceBuffer<uint8_t> upload_at(const std::vector<uint8_t>& b, DType dt, size_t offset) {
  std::vector<uint8_t> padded(offset * dtype_size(dt), 0);
  padded.insert(padded.end(), b.begin(), b.end());
  return upload_bytes(padded);
}

// Positions of the pair partner of element i of a head (RoPE).
int rope_partner(int i, bool neox) {
  const int j = i % kHeadDim, half = kHeadDim / 2;
  if (neox) return j < half ? i + half : i - half;
  return i ^ 1;
}

#endif
}  // namespace

TEST_CASE("gpu kernels: gather_rows_f32 copies table rows exactly (bf16 f16 f32 tables)", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  constexpr int kVocab = 997;
  std::mt19937_64 rng(1);
  for (DType dt : kDtypes) {
    const Stored table = store(random_vector(static_cast<size_t>(kVocab) * kDim, 1.0f, rng), dt);
    const auto d_table = upload_bytes(table.bytes);
    for (int n : kTokenCounts) {
      for (bool with_ids : {true, false}) {
        INFO(dtype_name(dt) << " table, " << n << " tokens, " << (with_ids ? "token ids" : "rows 0..n-1"));
        std::vector<int> ids(n);
        std::uniform_int_distribution<int> pick(0, kVocab - 1);
        for (int t = 0; t < n; ++t) ids[t] = pick(rng);
        ids[0] = kVocab - 1;  // the last row, and (below) the first
        if (n > 1) ids[n - 1] = 0;
        DeviceBuffer<int> d_ids;
        d_ids.upload(ids);
        DeviceBuffer<float> d_x(static_cast<size_t>(n) * kDim);
        d_x.fill_bytes(0xFF);  // NaN: every value must be written
        cuda::gather_rows_f32(d_table.data(), dt, kDim, with_ids ? d_ids.data() : nullptr, n, d_x.data(), nullptr);
        sync();
        const auto got = d_x.download();
        std::vector<float> want(got.size());
        for (int t = 0; t < n; ++t) {
          const size_t row = with_ids ? static_cast<size_t>(ids[t]) : static_cast<size_t>(t);
          std::memcpy(&want[static_cast<size_t>(t) * kDim], &table.values[row * kDim], sizeof(float) * kDim);
        }
        CHECK(std::memcmp(got.data(), want.data(), sizeof(float) * want.size()) == 0);
      }
    }
  }
#endif
}

TEST_CASE("gpu kernels: rmsnorm matches cpu::rmsnorm for every weight and output dtype", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  std::mt19937_64 rng(2);
  const float eps = 1e-5f;
  for (int dim : {kDim, 4099}) {  // 4099: 1024 threads, an odd tail
    for (int n : kTokenCounts) {
      // Rows of very different scales: eps matters for the small ones.
      std::vector<float> x = random_vector(static_cast<size_t>(n) * dim, 1.0f, rng);
      for (int t = 0; t < n; ++t)
        for (int i = 0; i < dim; ++i) x[static_cast<size_t>(t) * dim + i] *= std::pow(10.0f, static_cast<float>(t % 5 - 2));
      const auto d_x = upload_floats(x);
      for (DType w_dt : kDtypes) {
        std::vector<float> w = test::gaussian(dim, 1.0f, 0.1f, rng);
        const Stored ws = store(w, w_dt);
        const auto d_w = upload_bytes(ws.bytes);
        std::vector<float> want(x.size());
        for (int t = 0; t < n; ++t)
          cpu::rmsnorm(&want[static_cast<size_t>(t) * dim], &x[static_cast<size_t>(t) * dim], ws.values.data(), dim, eps);
        for (DType out_dt : kDtypes) {
          INFO("dim " << dim << ", " << n << " tokens, weights " << dtype_name(w_dt) << ", out " << dtype_name(out_dt));
          DeviceBuffer<uint8_t> d_out(x.size() * dtype_size(out_dt));
          d_out.fill_bytes(0xFF);
          cuda::rmsnorm(d_x.data(), d_w.data(), w_dt, d_out.data(), out_dt, n, dim, eps, nullptr);
          sync();
          check_near(as_f32(d_out.download(), out_dt), out_dt, want, relative(want, (dim + 16) * kU), "rmsnorm");
        }
      }
    }
  }
#endif
}

TEST_CASE("gpu kernels: Gemma's (1 + w) rmsnorm and add_rmsnorm match the CPU's", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  std::mt19937_64 rng(12);
  const float eps = 1e-6f;
  for (int dim : {kDim, 4099}) {
    for (int n : kTokenCounts) {
      const std::vector<float> x = random_vector(static_cast<size_t>(n) * dim, 3.0f, rng);
      std::vector<float> base = random_vector(x.size(), 1.0f, rng);
      const auto d_x = upload_floats(x);
      for (DType w_dt : kDtypes) {
        const Stored ws = store(test::gaussian(dim, 0.0f, 0.2f, rng), w_dt);  // Gemma's weights sit near 0
        const auto d_w = upload_bytes(ws.bytes);
        std::vector<float> normed(x.size()), want(x.size());
        for (int t = 0; t < n; ++t)
          cpu::rmsnorm_unit_offset(&normed[static_cast<size_t>(t) * dim], &x[static_cast<size_t>(t) * dim],
                                   ws.values.data(), dim, eps);
        for (size_t i = 0; i < want.size(); ++i) want[i] = base[i] + normed[i];
        INFO("dim " << dim << ", " << n << " tokens, weights " << dtype_name(w_dt));
        DeviceBuffer<uint8_t> d_out(x.size() * 4);
        cuda::rmsnorm(d_x.data(), d_w.data(), w_dt, d_out.data(), DType::F32, n, dim, eps, nullptr, true);
        auto d_acc = upload_floats(base);
        cuda::add_rmsnorm(d_acc.data(), d_x.data(), d_w.data(), w_dt, n, dim, eps, true, nullptr);
        sync();
        check_near(as_f32(d_out.download(), DType::F32), DType::F32, normed, relative(normed, (dim + 16) * kU),
                   "rmsnorm (1 + w)");
        // base + normed may cancel: the sum's tolerance is the normed term's error (relative to
        // |normed|, not to the small sum) plus one rounding of the operands' magnitude.
        std::vector<double> sum_tol = relative(normed, (dim + 16) * kU);
        for (size_t i = 0; i < sum_tol.size(); ++i) sum_tol[i] += 2 * kU * (std::fabs(base[i]) + std::fabs(normed[i]));
        check_near(d_acc.download(), DType::F32, want, sum_tol, "add_rmsnorm");
      }
    }
  }
#endif
}

TEST_CASE("gpu kernels: scale_f32 and softcap_f32 follow the CPU's embedding scale and cpu::softcap", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  std::mt19937_64 rng(13);
  const auto x = random_vector(100003, 40.0f, rng);
  std::vector<float> scaled = x, capped = x;
  for (float& v : scaled) v *= std::sqrt(64.0f);
  cpu::softcap(capped.data(), capped.size(), 30.0f);
  auto d_scaled = upload_floats(x), d_capped = upload_floats(x);
  cuda::scale_f32(d_scaled.data(), x.size(), std::sqrt(64.0f), nullptr);  // a power of 2: exact
  cuda::softcap_f32(d_capped.data(), x.size(), 30.0f, nullptr);
  sync();
  CHECK(d_scaled.download() == scaled);
  check_near(d_capped.download(), DType::F32, capped, relative(capped, 8 * kU), "softcap");  // tanhf vs std::tanh
#endif
}

TEST_CASE("gpu kernels: rope_store_kv rotates q and k like cpu::rope and writes the cache rows pos..", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  constexpr int kContext = 160;  // > the last position written (37 + 65)
  constexpr uint8_t kPoison = 0x5A;
  std::mt19937_64 rng(3);
  RopeScaling llama3;
  llama3.type = "llama3";
  llama3.factor = 8.0f;
  llama3.low_freq_factor = 1.0f;
  llama3.high_freq_factor = 4.0f;
  llama3.original_context = 8192;
  struct Rope {
    const char* name;
    float theta;
    RopeScaling scaling;
  };
  // theta 5e5 with head_dim 64: wavelengths from 6 to 2e6 positions, so llama3 scaling takes
  // all three of its branches (kept, blended, divided by factor).
  const Rope ropes[] = {{"theta 1e4", 10000.0f, RopeScaling{}}, {"llama3 scaling, theta 5e5", 500000.0f, llama3}};
  for (const Rope& rope : ropes) {
    const cpu::RopeTable table = cpu::rope_table(cpu::rope_frequencies(kHeadDim, rope.theta, rope.scaling), kContext);
    const auto d_cos = upload_floats(table.cos), d_sin = upload_floats(table.sin);
    for (RopeLayout layout : {RopeLayout::interleaved, RopeLayout::neox}) {
      const bool neox = layout == RopeLayout::neox;
      const cuda::RopeArgs args{kHeads, kKvHeads, kHeadDim, neox, d_cos.data(), d_sin.data()};
      for (DType kv_dt : kDtypes) {
        for (int n : kTokenCounts) {
          for (int how = 0; how < 3; ++how) {  // pos 0; pos 37; pos 37 read from device memory
            const int pos = how == 0 ? 0 : 37;
            const char* hows[] = {"pos 0", "pos 37", "pos 37 from device memory"};
            INFO(rope.name << ", " << rope_layout_name(layout) << ", kv " << dtype_name(kv_dt) << ", " << n
                           << " tokens, " << hows[how]);
            const auto q = random_vector(static_cast<size_t>(n) * kQDim, 1.0f, rng);
            const auto k = random_vector(static_cast<size_t>(n) * kKvDim, 1.0f, rng);
            const auto v = random_vector(static_cast<size_t>(n) * kKvDim, 1.0f, rng);
            auto d_q = upload_floats(q);
            const auto d_k = upload_floats(k), d_v = upload_floats(v);
            const size_t cache_bytes = static_cast<size_t>(kContext) * kKvDim * dtype_size(kv_dt);
            DeviceBuffer<uint8_t> d_kc(cache_bytes), d_vc(cache_bytes);
            d_kc.fill_bytes(kPoison);
            d_vc.fill_bytes(kPoison);
            DeviceBuffer<int> d_pos;
            d_pos.upload(std::vector<int>{pos});
            // With d_pos, the pos argument must be ignored: 0 would put the rows elsewhere.
            cuda::rope_store_kv(d_q.data(), d_k.data(), d_v.data(), d_kc.data(), d_vc.data(), kv_dt, n,
                                how == 2 ? 0 : pos, how == 2 ? d_pos.data() : nullptr, args, nullptr);
            sync();

            std::vector<float> want_q = q, want_k = k;
            for (int t = 0; t < n; ++t) {
              cpu::rope(&want_q[static_cast<size_t>(t) * kQDim], kHeads, kHeadDim, layout, table.cos_at(pos + t),
                        table.sin_at(pos + t));
              cpu::rope(&want_k[static_cast<size_t>(t) * kKvDim], kKvHeads, kHeadDim, layout, table.cos_at(pos + t),
                        table.sin_at(pos + t));
            }
            auto rope_tol = [&](const std::vector<float>& in) {
              std::vector<double> tol(in.size());
              for (size_t i = 0; i < in.size(); ++i) {
                const size_t row = i / kHeadDim * kHeadDim;  // (rows are whole heads)
                const size_t partner = row + rope_partner(static_cast<int>(i - row), neox);
                tol[i] = 4 * kU * (std::fabs(in[i]) + std::fabs(in[partner]));
              }
              return tol;
            };
            check_near(d_q.download(), DType::F32, want_q, rope_tol(q), "q");

            const auto kc = d_kc.download(), vc = d_vc.download();
            const size_t row_bytes = kKvDim * dtype_size(kv_dt), first = pos * row_bytes, last = (pos + n) * row_bytes;
            std::vector<uint8_t> k_rows(kc.begin() + first, kc.begin() + last);
            check_near(as_f32(k_rows, kv_dt), kv_dt, want_k, rope_tol(k), "k cache rows");
            // v is stored as it is: rounding to the cache's dtype is exact arithmetic.
            CHECK(std::equal(vc.begin() + first, vc.begin() + last, store(v, kv_dt).bytes.begin()));
            // Nothing outside rows pos .. pos+n-1.
            size_t touched = 0;
            for (size_t b = 0; b < cache_bytes; ++b)
              if ((b < first || b >= last) && (kc[b] != kPoison || vc[b] != kPoison)) ++touched;
            CHECK(touched == 0);
          }
        }
      }
    }
  }
#endif
}

TEST_CASE("gpu kernels: rope_store_kv with partial rotary (Phi-3) and without RoPE (SmolLM3) follows cpu::rope",
          "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  constexpr int kContext = 64, kRopeDim = kHeadDim * 3 / 4, n = 5, pos = 20;
  std::mt19937_64 rng(31);
  const cpu::RopeTable table = cpu::rope_table(cpu::rope_frequencies(kRopeDim, 10000.0f, {}), kContext, 1.08f);
  const auto d_cos = upload_floats(table.cos), d_sin = upload_floats(table.sin);
  for (bool rotate : {true, false}) {
    INFO((rotate ? "RoPE on the first 48 of 64 values (neox), cos and sin scaled by 1.08" : "a layer without RoPE"));
    cuda::RopeArgs args{kHeads, kKvHeads, kHeadDim, true, d_cos.data(), d_sin.data()};
    args.rotate = rotate;
    args.rope_dim = kRopeDim;
    const auto q = random_vector(static_cast<size_t>(n) * kQDim, 1.0f, rng);
    const auto k = random_vector(static_cast<size_t>(n) * kKvDim, 1.0f, rng);
    const auto v = random_vector(static_cast<size_t>(n) * kKvDim, 1.0f, rng);
    auto d_q = upload_floats(q);
    const auto d_k = upload_floats(k), d_v = upload_floats(v);
    DeviceBuffer<uint8_t> d_kc(static_cast<size_t>(kContext) * kKvDim * 4), d_vc(d_kc.size());
    cuda::rope_store_kv(d_q.data(), d_k.data(), d_v.data(), d_kc.data(), d_vc.data(), DType::F32, n, pos, nullptr,
                        args, nullptr);
    sync();
    std::vector<float> want_q = q, want_k = k;
    for (int t = 0; t < n && rotate; ++t) {
      cpu::rope(&want_q[static_cast<size_t>(t) * kQDim], kHeads, kHeadDim, RopeLayout::neox, table.cos_at(pos + t),
                table.sin_at(pos + t), kRopeDim);
      cpu::rope(&want_k[static_cast<size_t>(t) * kKvDim], kKvHeads, kHeadDim, RopeLayout::neox, table.cos_at(pos + t),
                table.sin_at(pos + t), kRopeDim);
    }
    // A rotated value is two products and a sum of values below 1 in size (the same formula
    // as the CPU's, FMA contraction aside): a few units of fp32 rounding; the others exact.
    const auto tol = [&](const std::vector<float>& want) {
      std::vector<double> t(want.size());
      for (size_t i = 0; i < want.size(); ++i)
        t[i] = rotate && static_cast<int>(i % kHeadDim) < kRopeDim ? 8 * kU * (2 + std::fabs(want[i])) : 0.0;
      return t;
    };
    check_near(d_q.download(), DType::F32, want_q, tol(want_q), "q");
    const auto kc = d_kc.download(), vc = d_vc.download();
    const size_t first = static_cast<size_t>(pos) * kKvDim * 4, last = first + static_cast<size_t>(n) * kKvDim * 4;
    check_near(as_f32(std::vector<uint8_t>(kc.begin() + first, kc.begin() + last), DType::F32), DType::F32, want_k,
               tol(want_k), "k cache rows");
    CHECK(as_f32(std::vector<uint8_t>(vc.begin() + first, vc.begin() + last), DType::F32) == v);
  }
#endif
}

TEST_CASE("gpu kernels: add_bias adds a bf16, f16 or f32 bias to every row, as the CPU does", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  std::mt19937_64 rng(32);
  for (DType b_dt : kDtypes)
    for (int n : {1, 7, 300}) {
      INFO(dtype_name(b_dt) << " bias, " << n << " rows");
      const int d = kKvDim;
      const auto y = random_vector(static_cast<size_t>(n) * d, 1.0f, rng);
      const auto b = store(random_vector(d, 1.0f, rng), b_dt);
      auto d_y = upload_floats(y);
      DeviceBuffer<uint8_t> d_b;
      d_b.upload(b.bytes);
      cuda::add_bias(d_y.data(), d_b.data(), b_dt, n, d, nullptr);
      sync();
      std::vector<float> want = y;
      for (int t = 0; t < n; ++t)
        for (int i = 0; i < d; ++i) want[static_cast<size_t>(t) * d + i] += b.values[i];  // one fp32 add: exact match
      CHECK(d_y.download() == want);
    }
#endif
}

TEST_CASE("gpu kernels: matvec matches cpu::matmul in bf16 f16 and f32 with accumulate on and off on the vector and scalar paths",
          "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  ThreadPool pool(4);
  std::mt19937_64 rng(4);
  struct Shape {
    int d, k;
    size_t x_offset;  // elements: != 0 misaligns x, which takes the scalar path
    const char* what;
  };
  const Shape shapes[] = {
      {kQDim, kDim, 0, "wq"},          {kKvDim, kDim, 0, "wk"},
      {kFfn, kDim, 0, "w_gate"},       {kDim, kFfn, 0, "w_down"},
      {997, kDim, 0, "odd rows"},      {40, 14336, 0, "long rows (f32: x over 48 KiB of shared memory)"},
      {61, 579, 0, "odd k (scalar)"},  {kQDim, kDim, 1, "misaligned x (scalar)"},
  };
  for (DType dt : kDtypes) {
    for (const Shape& s : shapes) {
      const Stored w = store(random_vector(static_cast<size_t>(s.d) * s.k, 0.05f, rng), dt);
      const Stored x = store(random_vector(s.k, 1.0f, rng), dt);
      const auto y0 = random_vector(s.d, 1.0f, rng);
      const auto d_w = upload_bytes(w.bytes), d_x = upload_at(x.bytes, dt, s.x_offset);
      const void* x_ptr = d_x.data() + s.x_offset * dtype_size(dt);
      for (bool accumulate : {false, true}) {
        INFO(dtype_name(dt) << ", " << s.what << " (" << s.d << " x " << s.k << "), accumulate " << accumulate);
        auto d_y = upload_floats(y0);
        if (!accumulate) d_y.fill_bytes(0xFF);  // NaN: must be overwritten, never read
        cuda::matvec(d_w.data(), dt, x_ptr, d_y.data(), s.d, s.k, accumulate, nullptr);
        sync();
        const Product want = cpu_product(w.values, x.values, accumulate ? &y0 : nullptr, 1, s.k, s.d, pool);
        check_near(d_y.download(), DType::F32, want.y, want.tol, "matvec");
      }
    }
  }
#endif
}

TEST_CASE("gpu kernels: matvec's three-job form gives each job the bits of matvec alone", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  ThreadPool pool(4);
  std::mt19937_64 rng(5);
  // q, k and v of one token; then rows that do not fill a block, so that job boundaries fall
  // inside the blocks' row ranges; then the scalar path.
  struct Case {
    int d[3], k;
    const char* what;
  };
  const Case cases[] = {{{kQDim, kKvDim, kKvDim}, kDim, "q, k, v"},
                        {{13, 190, 197}, kDim, "odd rows"},
                        {{kQDim, kKvDim, kKvDim}, 579, "odd k (scalar)"}};
  for (DType dt : kDtypes) {
    for (const Case& c : cases) {
      for (int count : {2, 3}) {
        INFO(dtype_name(dt) << ", " << c.what << ", " << count << " jobs");
        const Stored x = store(random_vector(c.k, 1.0f, rng), dt);
        const auto d_x = upload_bytes(x.bytes);
        std::vector<Stored> w;
        std::vector<std::vector<float>> y0;
        std::vector<DeviceBuffer<uint8_t>> d_w;
        std::vector<DeviceBuffer<float>> d_y, d_single;
        cuda::MatVecJobs jobs;
        jobs.count = count;
        for (int j = 0; j < count; ++j) {
          w.push_back(store(random_vector(static_cast<size_t>(c.d[j]) * c.k, 0.05f, rng), dt));
          y0.push_back(random_vector(c.d[j], 1.0f, rng));
          d_w.push_back(upload_bytes(w[j].bytes));
          d_y.push_back(upload_floats(y0[j]));
          d_single.push_back(upload_floats(y0[j]));
        }
        for (int j = 0; j < count; ++j) {
          const bool accumulate = j == 1;  // the middle job adds to y, the others overwrite it
          jobs.job[j] = {d_w[j].data(), d_y[j].data(), c.d[j], accumulate};
          cuda::matvec(d_w[j].data(), dt, d_x.data(), d_single[j].data(), c.d[j], c.k, accumulate, nullptr);
        }
        cuda::matvec(jobs, dt, d_x.data(), c.k, nullptr);
        sync();
        for (int j = 0; j < count; ++j) {
          INFO("job " << j);
          const auto got = d_y[j].download(), single = d_single[j].download();
          CHECK(std::memcmp(got.data(), single.data(), sizeof(float) * got.size()) == 0);
          const Product want = cpu_product(w[j].values, x.values, j == 1 ? &y0[j] : nullptr, 1, c.k, c.d[j], pool);
          check_near(got, DType::F32, want.y, want.tol, "matvec job");
        }
      }
    }
  }
#endif
}

TEST_CASE("gpu kernels: matvec_swiglu gives the bits of matvec twice and swiglu, SwiGLU and GeGLU", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  std::mt19937_64 rng(6);
  struct Shape {
    int d, k;
    size_t x_offset;
    const char* what;
  };
  const Shape shapes[] = {{kFfn, kDim, 0, "ffn"}, {997, kDim, 0, "odd rows"}, {61, 579, 0, "odd k (scalar)"},
                          {kFfn, kDim, 1, "misaligned x (scalar)"}};
  for (DType dt : kDtypes) {
    for (const Shape& s : shapes) {
      for (bool gelu : {false, true}) {
        INFO(dtype_name(dt) << ", " << s.what << " (" << s.d << " x " << s.k << ")" << (gelu ? ", GeGLU" : ""));
        // Gate products of a few units, so that silu sees both its curved part and its tails.
        const Stored gate = store(random_vector(static_cast<size_t>(s.d) * s.k, 0.1f, rng), dt);
        const Stored up = store(random_vector(static_cast<size_t>(s.d) * s.k, 0.05f, rng), dt);
        const Stored x = store(random_vector(s.k, 1.0f, rng), dt);
        const auto d_gate = upload_bytes(gate.bytes), d_up = upload_bytes(up.bytes);
        const auto d_x = upload_at(x.bytes, dt, s.x_offset);
        const void* x_ptr = d_x.data() + s.x_offset * dtype_size(dt);
        DeviceBuffer<uint8_t> d_fused(s.d * dtype_size(dt)), d_apart(s.d * dtype_size(dt));
        DeviceBuffer<float> d_g(s.d), d_u(s.d);
        d_fused.fill_bytes(0xFF);
        d_apart.fill_bytes(0x00);
        cuda::matvec_swiglu(d_gate.data(), d_up.data(), dt, x_ptr, d_fused.data(), s.d, s.k, nullptr, false, gelu);
        cuda::matvec(d_gate.data(), dt, x_ptr, d_g.data(), s.d, s.k, false, nullptr);
        cuda::matvec(d_up.data(), dt, x_ptr, d_u.data(), s.d, s.k, false, nullptr);
        cuda::swiglu(d_g.data(), d_u.data(), d_apart.data(), dt, s.d, nullptr, gelu);
        sync();
        CHECK(d_fused.download() == d_apart.download());
      }
    }
  }
#endif
}

TEST_CASE("gpu kernels: products launched to overlap the kernel before them read its output", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  // Full mode lets one token's products load weights while RMSNorm still runs (sm_90+:
  // programmatic dependent launch); they must still wait for x. RMSNorm writes x here, then
  // each product runs with and without overlap: the same bits. (Older GPUs ignore the flag.)
  std::mt19937_64 rng(7);
  for (DType dt : kDtypes) {
    INFO(dtype_name(dt));
    const auto h = upload_floats(random_vector(kDim, 1.0f, rng));
    const auto norm_w = upload_bytes(store(test::gaussian(kDim, 1.0f, 0.1f, rng), dt).bytes);
    const auto wq = upload_bytes(store(random_vector(static_cast<size_t>(kQDim) * kDim, 0.05f, rng), dt).bytes);
    const auto wk = upload_bytes(store(random_vector(static_cast<size_t>(kKvDim) * kDim, 0.05f, rng), dt).bytes);
    const auto gate = upload_bytes(store(random_vector(static_cast<size_t>(kFfn) * kDim, 0.1f, rng), dt).bytes);
    const auto up = upload_bytes(store(random_vector(static_cast<size_t>(kFfn) * kDim, 0.05f, rng), dt).bytes);
    DeviceBuffer<uint8_t> workspace(32u << 20);
    cuda::Blas blas(nullptr, workspace.data(), workspace.size());
    struct Outputs {
      std::vector<float> q, k, single;
      std::vector<uint8_t> ffn;
    };
    auto run = [&](bool overlap) {
      DeviceBuffer<uint8_t> x(kDim * dtype_size(dt)), ffn(kFfn * dtype_size(dt));
      DeviceBuffer<float> q(kQDim), k(kKvDim), single(kQDim);
      x.fill_bytes(0xFF);  // NaN until RMSNorm writes it: a product that reads early shows it
      blas.overlap_single_token_products(overlap);
      cuda::rmsnorm(h.data(), norm_w.data(), dt, x.data(), dt, 1, kDim, 1e-5f, nullptr);
      cuda::MatVecJobs jobs;
      jobs.job[0] = {wq.data(), q.data(), kQDim, false};
      jobs.job[1] = {wk.data(), k.data(), kKvDim, false};
      jobs.count = 2;
      jobs.overlap_previous = overlap;
      cuda::matvec(jobs, dt, x.data(), kDim, nullptr);
      cuda::rmsnorm(h.data(), norm_w.data(), dt, x.data(), dt, 1, kDim, 1e-5f, nullptr);
      blas.linear(wq.data(), dt, x.data(), single.data(), kQDim, 1, kDim, kQDim, false);
      cuda::rmsnorm(h.data(), norm_w.data(), dt, x.data(), dt, 1, kDim, 1e-5f, nullptr);
      cuda::matvec_swiglu(gate.data(), up.data(), dt, x.data(), ffn.data(), kFfn, kDim, nullptr, overlap);
      sync();
      return Outputs{q.download(), k.download(), single.download(), ffn.download()};
    };
    const Outputs plain = run(false), overlapped = run(true);
    for (float v : plain.q) REQUIRE(std::isfinite(v));
    CHECK(overlapped.q == plain.q);
    CHECK(overlapped.k == plain.k);
    CHECK(overlapped.single == plain.single);
    CHECK(overlapped.single == plain.q);  // Blas::linear of one token is the matrix-vector kernel
    CHECK(overlapped.ffn == plain.ffn);
  }
#endif
}

TEST_CASE("gpu kernels: Blas::linear matches cpu::matmul for 1 63 and 65 tokens", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  ThreadPool pool(4);
  std::mt19937_64 rng(8);
  DeviceBuffer<uint8_t> workspace(32u << 20);
  cuda::Blas blas(nullptr, workspace.data(), workspace.size());
  const int shapes[][2] = {{kQDim, kDim}, {kKvDim, kDim}, {kFfn, kDim}, {kDim, kFfn}, {997, kDim}};
  for (DType dt : kDtypes) {
    for (const auto& s : shapes) {
      const int d = s[0], k = s[1];
      const Stored w = store(random_vector(static_cast<size_t>(d) * k, 0.05f, rng), dt);
      const auto d_w = upload_bytes(w.bytes);
      for (int n : kTokenCounts) {
        const Stored x = store(random_vector(static_cast<size_t>(n) * k, 1.0f, rng), dt);
        const auto d_x = upload_bytes(x.bytes);
        const Product plain = cpu_product(w.values, x.values, nullptr, n, k, d, pool);
        // Overwriting rows d apart; then accumulating into rows d + 5 apart (as the runtime's
        // wider buffers), whose 5 extra columns must be left alone.
        for (bool accumulate : {false, true}) {
          const int ldy = accumulate ? d + 5 : d;
          INFO(dtype_name(dt) << ", " << d << " x " << k << ", " << n << " tokens, accumulate " << accumulate
                              << ", ldy " << ldy);
          std::vector<float> y0 = random_vector(static_cast<size_t>(n) * ldy, 1.0f, rng);
          auto d_y = upload_floats(y0);
          if (!accumulate) d_y.fill_bytes(0xFF);  // beta = 0: never read
          blas.linear(d_w.data(), dt, d_x.data(), d_y.data(), ldy, n, k, d, accumulate);
          sync();
          const auto y = d_y.download();
          std::vector<float> got(static_cast<size_t>(n) * d), y0_rows(got.size());
          size_t pad_changed = 0;
          for (int t = 0; t < n; ++t) {
            for (int r = 0; r < d; ++r) {
              got[static_cast<size_t>(t) * d + r] = y[static_cast<size_t>(t) * ldy + r];
              y0_rows[static_cast<size_t>(t) * d + r] = y0[static_cast<size_t>(t) * ldy + r];
            }
            for (int r = d; r < ldy; ++r)
              if (std::memcmp(&y[static_cast<size_t>(t) * ldy + r], &y0[static_cast<size_t>(t) * ldy + r], 4) != 0)
                ++pad_changed;
          }
          if (accumulate) {
            const Product want = cpu_product(w.values, x.values, &y0_rows, n, k, d, pool);
            check_near(got, DType::F32, want.y, want.tol, "linear");
          } else {
            check_near(got, DType::F32, plain.y, plain.tol, "linear");
          }
          CHECK(pad_changed == 0);
        }
      }
    }
  }
#endif
}

TEST_CASE("gpu kernels: swiglu matches cpu::swiglu in every output dtype", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  std::mt19937_64 rng(9);
  // One token, 63 and 65 tokens of ffn 1536, and more than the 65536 x 256 threads of one
  // launch (each thread then takes several elements).
  const size_t counts[] = {kFfn, 63 * kFfn, 65 * kFfn, (size_t{65536} * 256) + 1001};
  for (size_t count : counts) {
    const auto gate = random_vector(count, 2.0f, rng), up = random_vector(count, 1.0f, rng);
    const auto d_gate = upload_floats(gate), d_up = upload_floats(up);
    std::vector<float> want = gate;
    cpu::swiglu(want.data(), up.data(), count);
    for (DType out_dt : kDtypes) {
      INFO(count << " values, out " << dtype_name(out_dt));
      DeviceBuffer<uint8_t> d_out(count * dtype_size(out_dt));
      d_out.fill_bytes(0xFF);
      cuda::swiglu(d_gate.data(), d_up.data(), d_out.data(), out_dt, count, nullptr);
      sync();
      check_near(as_f32(d_out.download(), out_dt), out_dt, want, relative(want, 32 * kU), "swiglu");
    }
  }
#endif
}

TEST_CASE("gpu kernels: swiglu's GeGLU form matches cpu::geglu_tanh", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  std::mt19937_64 rng(14);
  const size_t count = 65 * kFfn;
  const auto gate = random_vector(count, 3.0f, rng), up = random_vector(count, 1.0f, rng);
  const auto d_gate = upload_floats(gate), d_up = upload_floats(up);
  std::vector<float> want = gate;
  cpu::geglu_tanh(want.data(), up.data(), count);
  DeviceBuffer<uint8_t> d_out(count * 4);
  cuda::swiglu(d_gate.data(), d_up.data(), d_out.data(), DType::F32, count, nullptr, true);
  sync();
  // gelu(g) = g (1 + tanh(..)) / 2 cancels for negative g: 1 + tanh is then off by a rounding of 1,
  // so the error is relative to |g u|, not to the small result.
  std::vector<double> tol = relative(want, 32 * kU);
  for (size_t i = 0; i < count; ++i) tol[i] += 4 * kU * std::fabs(static_cast<double>(gate[i]) * up[i]);
  check_near(as_f32(d_out.download(), DType::F32), DType::F32, want, tol, "geglu");
#endif
}

TEST_CASE("gpu kernels: copy_f32 copies exactly between device and mapped pinned host memory", "[gpu][kernels]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  std::mt19937_64 rng(10);
  // 1 value, a few blocks, and more than the 1024 x 256 threads of one launch.
  for (size_t count : {size_t{1}, size_t{1000}, size_t{3 * 262144 + 5}}) {
    INFO(count << " values");
    const auto src = random_vector(count, 1.0f, rng);
    const auto d_src = upload_floats(src);
    DeviceBuffer<float> d_dst(count);
    d_dst.fill_bytes(0xFF);
    cuda::copy_f32(d_dst.data(), d_src.data(), count, nullptr);
    sync();
    CHECK(d_dst.download() == src);

    // Device -> mapped host, then mapped host -> device (the hybrid runtime's hand-overs).
    float* host = nullptr;
    CLLM_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host), count * sizeof(float), cudaHostAllocMapped));
    std::memset(host, 0xFF, count * sizeof(float));
    float* host_dev = nullptr;
    CLLM_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&host_dev), host, 0));
    cuda::copy_f32(host_dev, d_src.data(), count, nullptr);
    sync();
    CHECK(std::memcmp(host, src.data(), count * sizeof(float)) == 0);
    d_dst.fill_bytes(0xFF);
    cuda::copy_f32(d_dst.data(), host_dev, count, nullptr);
    sync();
    CHECK(d_dst.download() == src);
    CLLM_CUDA_CHECK(cudaFreeHost(host));
  }
#endif
}
