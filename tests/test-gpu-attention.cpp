// Specification of the GPU attention kernels (cuda/attention.h): causal GQA attention over one
// layer's KV cache against a double-precision CPU reference, for decoding (1 .. 16 new
// tokens: split-K over fixed chunks and a combine) and prompts (17 .. 512 tokens: tensor
// cores), f16 and f32 caches, bf16 and f32 outputs; a decode captured in a CUDA graph with the
// position in device memory gives the direct launch's bits; repeated runs give identical bits;
// a 131072-row context works with a bounded workspace; sliding windows (Mistral) of 1 to 1000
// rows, through every path and prompt variant, match the reference over the window's rows, and
// a window that shortens no query's range gives full attention's bits. Every variant of the prompt kernel
// (cuda::attention_prefill_variants, chosen by CLLM_PREFILL_VARIANT) is checked on every
// prompt case, in-process, and for repeatability. [gpu] tests skip, visibly, where no
// CUDA device exists.
//
// Tolerances: relative L2 error of one output row (one token, one head, head_dim values)
// against the reference computed in double from the same cache values:
// - f16 cache, f32 output: 3e-3. Q is rounded to f16 after scaling (at most 2^-11 relative an
//   element, RMS ~2.8e-4); with q ~ N(0, 2^2) and k ~ N(0, 1) a score moves by ~6e-4 and the
//   row, a softmax-weighted mean of V, by about the same relative amount whatever the spread of
//   the weights; P's rounding to f16 adds ~1.5e-4. Worst rows over thousands reach ~3x the RMS.
//   An indexing or masking bug gives errors of order 1.
// - f16 cache, bf16 output: 8e-3. The output's own rounding is up to 2^-9 relative an element
//   (RMS ~1.1e-3 over a row), on top of the above.
// - f32 cache (the fp32 CUDA-core kernels), f32 output: 1e-5 (fp32 summation order only);
//   bf16 output: 8e-3 as above.
// Each test prints the largest error it saw per path, so a run shows the margins.
// Rows of the cache at and past pos + n are filled with NaN: any read of them shows up as a NaN
// output.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "tests/test_util.h"
#if CLLM_HAVE_CUDA
#include "cuda/attention.h"
#include "cuda/device_buffer.h"
#endif

using namespace cllm;

#if CLLM_HAVE_CUDA
namespace {

struct Shape {
  int n_heads, n_kv_heads, head_dim;
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

const Shape kShapes[] = {
    {4, 4, 64},    // GQA ratio 1
    {8, 2, 128},   // ratio 4
    {16, 2, 128},  // ratio 8 (Llama-3 8B's ratio, head_dim 128)
    {16, 2, 64},   // ratio 8, head_dim 64
    {9, 3, 64},    // an odd shape: 3 heads a group
};

std::string describe(const Shape& s, DType kv, int n, int pos, int context) {
  std::ostringstream o;
  o << "heads " << s.n_heads << "/" << s.n_kv_heads << " head_dim " << s.head_dim << ", " << dtype_name(kv)
    << " cache, n " << n << " pos " << pos << " context " << context;
  return o.str();
}

// A layer's cache as the engine holds it: (context, kv_dim) in kv_dt, rows 0 .. valid-1 drawn
// from N(0, 1), the rest NaN. values: the valid rows as the kernels see them (after rounding).
struct Cache {
  std::vector<uint8_t> k_raw, v_raw;
  std::vector<float> k, v;  // (valid, kv_dim)
};

Cache make_cache(const Shape& s, DType kv, int valid, int context, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Cache c;
  const size_t row = s.kv_dim(), esize = dtype_size(kv);
  c.k_raw.resize(static_cast<size_t>(context) * row * esize);
  c.v_raw.resize(c.k_raw.size());
  c.k = test::gaussian(static_cast<size_t>(valid) * row, 0.0f, 1.0f, rng);
  c.v = test::gaussian(static_cast<size_t>(valid) * row, 0.0f, 1.0f, rng);
  for (int which = 0; which < 2; ++which) {
    std::vector<float>& vals = which ? c.v : c.k;
    uint8_t* raw = which ? c.v_raw.data() : c.k_raw.data();
    for (size_t i = 0; i < static_cast<size_t>(context) * row; ++i) {
      const bool in = i < vals.size();
      if (kv == DType::F16) {
        const uint16_t h = in ? f32_to_f16(vals[i]) : uint16_t{0x7e00};  // NaN
        if (in) vals[i] = f16_to_f32(h);
        std::memcpy(raw + i * 2, &h, 2);
      } else {
        const float f = in ? vals[i] : NAN;
        std::memcpy(raw + i * 4, &f, 4);
      }
    }
  }
  return c;
}

// out (n, n_heads, head_dim) in double: query t of head h over rows 0 .. pos+t (with a window
// w > 0, rows pos+t-w+1 .. pos+t); scores q.k times scores.scale (0: 1/sqrt(head_dim)), then
// soft-capped when scores.softcap > 0.
std::vector<double> reference(const Shape& s, const std::vector<float>& q, const Cache& c, int n, int pos,
                              int window = 0, const cuda::AttentionScores& scores = {}) {
  const int group = s.n_heads / s.n_kv_heads, hd = s.head_dim;
  const double scale = scores.scale > 0 ? scores.scale : 1.0 / std::sqrt(static_cast<double>(hd));
  const double cap = scores.softcap;
  std::vector<double> out(static_cast<size_t>(n) * s.q_dim(), 0.0), p;
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < s.n_heads; ++h) {
      const float* qv = q.data() + (static_cast<size_t>(t) * s.n_heads + h) * hd;
      const size_t off = static_cast<size_t>(h / group) * hd;
      const int keys = pos + t + 1, first = window > 0 ? std::max(0, keys - window) : 0;
      p.assign(keys, 0.0);
      double mx = -INFINITY;
      for (int j = first; j < keys; ++j) {
        const float* kr = c.k.data() + static_cast<size_t>(j) * s.kv_dim() + off;
        double d = 0.0;
        for (int i = 0; i < hd; ++i) d += static_cast<double>(qv[i]) * kr[i];
        p[j] = cap > 0 ? cap * std::tanh(d * scale / cap) : d * scale;
        mx = std::max(mx, p[j]);
      }
      double sum = 0.0;
      for (int j = first; j < keys; ++j) sum += (p[j] = std::exp(p[j] - mx));
      double* o = out.data() + (static_cast<size_t>(t) * s.n_heads + h) * hd;
      for (int j = first; j < keys; ++j) {
        const float* vr = c.v.data() + static_cast<size_t>(j) * s.kv_dim() + off;
        const double w = p[j] / sum;
        for (int i = 0; i < hd; ++i) o[i] += w * vr[i];
      }
    }
  return out;
}

// The device side of one case: the caches, q, a workspace for the context and an output.
struct DeviceCase {
  Shape s;
  DType kv;
  int context;
  int window = 0;  // passed to every launch
  cuda::AttentionScores scores;  // likewise
  cuda::DeviceBuffer<uint8_t> k, v, ws;
  cuda::DeviceBuffer<float> q;
  cuda::DeviceBuffer<uint8_t> out;

  DeviceCase(const Shape& shape, DType kv_dt, const Cache& c, const std::vector<float>& q_host, int ctx)
      : s(shape), kv(kv_dt), context(ctx) {
    k.upload(c.k_raw);
    v.upload(c.v_raw);
    q.upload(q_host);
    ws.resize(cuda::attention_workspace_bytes(s.n_heads, s.head_dim, context));
    ws.fill_bytes(0xff);  // NaN everywhere: a partial read before it is written shows
  }
  // Runs attention into out (as out_dt) and returns its bytes. prefill_variant >= 0: a prompt
  // (f16 cache, n > kMaxDecodeTokens) through that variant of the prompt kernel.
  std::vector<uint8_t> run(int n, int pos, DType out_dt, const int* d_pos = nullptr, cudaStream_t st = nullptr,
                           int prefill_variant = -1) {
    launch(n, pos, out_dt, d_pos, st, prefill_variant);
    CLLM_CUDA_CHECK(cudaStreamSynchronize(st));
    return out.download();
  }
  void launch(int n, int pos, DType out_dt, const int* d_pos, cudaStream_t st, int prefill_variant = -1) {
    out.resize(static_cast<size_t>(n) * s.q_dim() * dtype_size(out_dt));
    if (prefill_variant >= 0) {
      out.fill_bytes(0xff);  // NaN (f32 and bf16): an output the variant fails to write shows
      cuda::attention_prefill_f16_variant(prefill_variant, q.data(), k.data(), v.data(), out.data(), out_dt, n, pos,
                                          s.n_heads, s.n_kv_heads, s.head_dim, reinterpret_cast<float*>(ws.data()),
                                          ws.size(), st, window);
    } else {
      cuda::attention(q.data(), k.data(), v.data(), kv, out.data(), out_dt, n, pos, d_pos, s.n_heads, s.n_kv_heads,
                      s.head_dim, context, reinterpret_cast<float*>(ws.data()), ws.size(), st, window, scores);
    }
  }
};

std::vector<float> to_f32(const std::vector<uint8_t>& raw, DType dt) {
  std::vector<float> f(raw.size() / dtype_size(dt));
  for (size_t i = 0; i < f.size(); ++i) {
    if (dt == DType::BF16) {
      uint16_t h;
      std::memcpy(&h, raw.data() + 2 * i, 2);
      f[i] = bf16_to_f32(h);
    } else {
      std::memcpy(&f[i], raw.data() + 4 * i, 4);
    }
  }
  return f;
}

double tolerance(DType kv, DType out) {
  if (out == DType::BF16) return 8e-3;
  return kv == DType::F16 ? 3e-3 : 1e-5;
}

// The largest error seen per (cache dtype, output dtype) in the current test, printed at its end.
struct WorstErrors {
  double err[2][2] = {{0, 0}, {0, 0}};
  void add(DType kv, DType out, double e) {
    double& w = err[kv == DType::F16][out == DType::BF16];
    w = std::max(w, e);
  }
  void print(const char* test) const {
    std::printf("%s: largest row error, f16 cache: %.3g (f32 out) %.3g (bf16 out); f32 cache: %.3g (f32 out) "
                "%.3g (bf16 out)\n",
                test, err[1][0], err[1][1], err[0][0], err[0][1]);
  }
};
WorstErrors worst;
double worst_variant[64] = {};  // per prompt-kernel variant, every output dtype

// The largest relative L2 error over the rows (t, h); NaN anywhere gives infinity.
double max_row_error(const std::vector<float>& got, const std::vector<double>& want, int head_dim, int* worst_row) {
  double worst = 0.0;
  *worst_row = -1;
  for (size_t r = 0; r * head_dim < want.size(); ++r) {
    double num = 0.0, den = 0.0;
    for (int i = 0; i < head_dim; ++i) {
      const double g = got[r * head_dim + i], w = want[r * head_dim + i];
      num += (g - w) * (g - w);
      den += w * w;
    }
    double e = std::sqrt(num / std::max(den, 1e-30));
    if (!std::isfinite(e)) e = INFINITY;
    if (e > worst || *worst_row < 0) {
      worst = e;
      *worst_row = static_cast<int>(r);
    }
  }
  return worst;
}

// One (shape, cache dtype, n, pos, context, window, scores): both output dtypes against the reference.
void check_case(const Shape& s, DType kv, int n, int pos, int context, uint64_t seed, int window = 0,
                const cuda::AttentionScores& scores = {}) {
  const Cache c = make_cache(s, kv, pos + n, context, seed);
  std::mt19937_64 rng(seed * 31 + 7);
  // q ~ N(0, 2^2): scores q.k/sqrt(hd) have standard deviation ~2, softmaxes that are neither
  // flat nor one-hot.
  const std::vector<float> q = test::gaussian(static_cast<size_t>(n) * s.q_dim(), 0.0f, 2.0f, rng);
  const std::vector<double> want = reference(s, q, c, n, pos, window, scores);
  DeviceCase dc(s, kv, c, q, context);
  dc.window = window;
  dc.scores = scores;
  // f16 prompts: attention() (the default variant), then every variant of the prompt kernel
  // (which know only the default scores)
  const bool default_scores = scores.scale == 0 && scores.softcap == 0;
  const bool prompt = kv == DType::F16 && n > cuda::kMaxDecodeTokens &&
                      cuda::attention_flash_supported(kv, s.head_dim) && default_scores;
  const int variants = prompt ? cuda::attention_prefill_variants() : 0;
  for (int variant = -1; variant < variants; ++variant)
    for (DType out_dt : {DType::F32, DType::BF16}) {
      int row = 0;
      const double err =
          max_row_error(to_f32(dc.run(n, pos, out_dt, nullptr, nullptr, variant), out_dt), want, s.head_dim, &row);
      INFO(describe(s, kv, n, pos, context)
           << ", window " << window << ", " << dtype_name(out_dt) << " out, "
           << (variant < 0 ? std::string("attention()") : cuda::attention_prefill_variant_name(variant))
           << ": worst row t " << row / s.n_heads << " head " << row % s.n_heads << ", error " << err);
      CHECK(err <= tolerance(kv, out_dt));
      worst.add(kv, out_dt, err);
      if (variant >= 0) worst_variant[variant] = std::max(worst_variant[variant], err);
    }
}

}  // namespace
#endif

TEST_CASE("gpu attention: the decode chunk depends on the context only and the workspace stays bounded", "[gpu]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  CHECK(cuda::attention_decode_chunk(1) == 64);
  CHECK(cuda::attention_decode_chunk(4096) == 64);
  CHECK(cuda::attention_decode_chunk(8192) == 64);
  CHECK(cuda::attention_decode_chunk(8193) == 128);
  CHECK(cuda::attention_decode_chunk(16384) == 128);
  CHECK(cuda::attention_decode_chunk(131072) == 1024);
  for (int context : {1, 4096, 8193, 32768, 131072, 1 << 20}) {
    const int chunk = cuda::attention_decode_chunk(context);
    CHECK((context + chunk - 1) / chunk <= cuda::kMaxDecodeChunks);
  }
  // Llama-3.1-8B's 32 heads of 128 at its longest context: tens of MB, not more.
  CHECK(cuda::attention_workspace_bytes(32, 128, 131072) <= size_t{40} << 20);
#endif
}

// n x group query rows pick the decode kernel's row groups: <= 16 rows one group (4 key slots),
// <= 32 two (n 4 or 7 with 8 or 4 heads a group, n 7 with 3), more four (n 16, n 7 with 8);
// rows that do not fill the last group (3 heads a group) leave padding warps.
TEST_CASE("gpu attention: decoding 1, 2, 4, 7 and 16 tokens matches a double-precision reference", "[gpu]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  uint64_t seed = 1;
  for (const Shape& s : kShapes)
    for (DType kv : {DType::F16, DType::F32})
      for (int total : {1, 63, 64, 65, 4097})
        for (int n : {1, 2, 4, 7, 16}) {
          if (n > total) continue;
          // the context itself, then a longer one (another chunk size: 64 -> 512 rows at 4097);
          // the fp32 kernels do not depend on the context
          check_case(s, kv, n, total - n, total, seed++);
          if (kv == DType::F16) check_case(s, kv, n, total - n, total * 8 + 100, seed++);
        }
  worst.print("decode");
#endif
}

TEST_CASE("gpu attention: prompts of 17 to 512 tokens, from 0 and after cached tokens, match the reference",
          "[gpu]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  uint64_t seed = 1000;
  for (const Shape& s : kShapes)
    for (DType kv : {DType::F16, DType::F32})
      for (int n : {17, 63, 64, 65, 512})
        for (int pos : {0, 37, 130}) {
          if (n == 512 && pos == 37) continue;  // the CPU reference's time
          check_case(s, kv, n, pos, pos + n + 3, seed++);
        }
  // a 512-token prompt ending at row 4096 (total 4097): tiles far from the diagonal
  check_case({8, 2, 128}, DType::F16, 512, 4097 - 512, 4097, seed++);
  check_case({16, 2, 64}, DType::F16, 512, 4097 - 512, 4200, seed++);
  // Llama-3 8B's shape (32/8 heads of 128): 128- and 256-row blocks over several kv heads
  check_case({32, 8, 128}, DType::F16, 300, 700, 1000, seed++);
  // Deep enough for the split-key variant: 2, 3 and 4 splits of 1088 keys, whose boundaries
  // cut through row tiles and through the batch's own diagonal (rows see 1 or 2 splits)
  check_case({8, 2, 128}, DType::F16, 65, 2040, 2110, seed++);
  check_case({32, 8, 128}, DType::F16, 100, 3000, 3100, seed++);
  check_case({16, 2, 64}, DType::F16, 17, 4300, 4317, seed++);
  worst.print("prompt");
  for (int v = 0; v < cuda::attention_prefill_variants(); ++v)
    std::printf("prompt variant %s: largest row error %.3g\n", cuda::attention_prefill_variant_name(v),
                worst_variant[v]);
#endif
}

TEST_CASE("gpu attention: f16 caches with head_dim other than 64 and 128 take the fp32 kernels", "[gpu]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  CHECK(cuda::attention_flash_supported(DType::F16, 64));
  CHECK(cuda::attention_flash_supported(DType::F16, 128));
  CHECK_FALSE(cuda::attention_flash_supported(DType::F16, 96));
  CHECK_FALSE(cuda::attention_flash_supported(DType::F32, 128));
  uint64_t seed = 5000;
  for (const Shape& s : {Shape{4, 2, 96}, Shape{6, 3, 32}})
    for (int n : {1, 16, 17, 65}) check_case(s, DType::F16, n, 70, 70 + n, seed++);
  worst.print("fallback");
#endif
}

TEST_CASE("gpu attention: a decode captured in a CUDA graph with pos in device memory gives the direct launch's bits",
          "[gpu]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  for (const Shape& s : {Shape{32, 8, 128}, Shape{9, 3, 64}}) {
    const int context = 8192 + 64;  // chunk 128: 65 chunks, the last one partial
    const Cache c = make_cache(s, DType::F16, context, context, 77);
    std::mt19937_64 rng(78);
    const std::vector<float> q = test::gaussian(s.q_dim(), 0.0f, 2.0f, rng);
    DeviceCase dc(s, DType::F16, c, q, context);
    cudaStream_t st;
    CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cuda::DeviceBuffer<int> d_pos(1);
    for (DType out_dt : {DType::BF16, DType::F32}) {
      dc.out.resize(static_cast<size_t>(s.q_dim()) * dtype_size(out_dt));  // the graph's output buffer
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      CLLM_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      dc.launch(1, 0, out_dt, d_pos.data(), st);
      CLLM_CUDA_CHECK(cudaStreamEndCapture(st, &graph));
      CLLM_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      for (int pos : {0, 1, 63, 64, 127, 128, 1000, 4095, 8191, context - 1}) {
        INFO(describe(s, DType::F16, 1, pos, context) << ", " << dtype_name(out_dt) << " out");
        CLLM_CUDA_CHECK(cudaMemcpyAsync(d_pos.data(), &pos, sizeof(int), cudaMemcpyHostToDevice, st));
        CLLM_CUDA_CHECK(cudaGraphLaunch(exec, st));
        CLLM_CUDA_CHECK(cudaStreamSynchronize(st));
        const std::vector<uint8_t> graphed = dc.out.download();
        const std::vector<uint8_t> direct = dc.run(1, pos, out_dt, nullptr, st);
        const std::vector<uint8_t> direct_dpos = dc.run(1, 0, out_dt, d_pos.data(), st);  // uncaptured, d_pos
        CHECK(graphed == direct);
        CHECK(direct_dpos == direct);
        // and it is right (the reference reads rows 0 .. pos only)
        int row = 0;
        const double err = max_row_error(to_f32(direct, out_dt), reference(s, q, c, 1, pos), s.head_dim, &row);
        INFO("error " << err << " at head " << row);
        CHECK(err <= tolerance(DType::F16, out_dt));
      }
      CLLM_CUDA_CHECK(cudaGraphExecDestroy(exec));
      CLLM_CUDA_CHECK(cudaGraphDestroy(graph));
    }
    CLLM_CUDA_CHECK(cudaStreamDestroy(st));
  }
#endif
}

// Windows whose starts fall inside and across decode chunks (64 rows, 512 at the longer
// context), prompt tiles (64 keys) and the fp32 kernels' tiles (128 and 32 keys).
TEST_CASE("gpu attention: sliding windows match the reference over the window's rows, on every path", "[gpu]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  uint64_t seed = 7000;
  for (const Shape& s : {Shape{8, 2, 128}, Shape{9, 3, 64}, Shape{4, 2, 96}})
    for (DType kv : {DType::F16, DType::F32})
      for (int window : {1, 8, 64, 100, 1000})
        for (auto [n, total] : {std::pair{1, 40}, {1, 1200}, {7, 300}, {16, 1100}, {17, 90}, {130, 700}, {65, 1200}}) {
          check_case(s, kv, n, total - n, total, seed++, window);
          if (kv == DType::F16 && n <= cuda::kMaxDecodeTokens)  // another decode chunk size
            check_case(s, kv, n, total - n, total * 8 + 100, seed++, window);
        }
  worst.print("sliding window");
#endif
}

TEST_CASE("gpu attention: Gemma's query scale and soft-capped scores match the reference, windowed or not", "[gpu]") {
  // query_pre_attn_scalar 144 with head_dim 128 (Gemma 2 27B), 256 (Gemma 2 and 3); a softcap
  // of 50 (Gemma 2's) and of 2, low enough to bend these scores. Any of them takes the fp32
  // kernels, f16 cache or not.
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  const cuda::AttentionScores kScores[] = {{1.0f / 12.0f, 0.0f}, {0.0f, 2.0f}, {0.0625f, 50.0f}};
  uint64_t seed = 9000;
  for (const Shape& s : {Shape{8, 4, 256}, Shape{8, 2, 128}})
    for (const cuda::AttentionScores& scores : kScores)
      for (DType kv : {DType::F16, DType::F32})
        for (int window : {0, 8})
          for (auto [n, total] : {std::pair{1, 40}, {7, 300}, {65, 200}})
            check_case(s, kv, n, total - n, total, seed++, window, scores);
  worst.print("query scale and softcap");
#endif
}

TEST_CASE("gpu attention: a window that shortens no query's range gives full attention's bits", "[gpu]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  const Shape s{8, 2, 128};
  const int context = 1200;
  for (DType kv : {DType::F16, DType::F32}) {
    const Cache c = make_cache(s, kv, context, context, 93);
    std::mt19937_64 rng(94);
    const std::vector<float> q = test::gaussian(static_cast<size_t>(300) * s.q_dim(), 0.0f, 2.0f, rng);
    DeviceCase dc(s, kv, c, q, context);
    for (int n : {1, 16, 17, 300}) {
      const int pos = context - n;
      dc.window = 0;
      const std::vector<uint8_t> full = dc.run(n, pos, DType::BF16);
      for (int window : {context, context + 5000}) {  // the last query's window starts at row 0
        INFO(dtype_name(kv) << " cache, n " << n << ", window " << window);
        dc.window = window;
        CHECK(dc.run(n, pos, DType::BF16) == full);
      }
    }
  }
#endif
}

TEST_CASE("gpu attention: a windowed decode in a CUDA graph with pos in device memory gives the direct launch's bits",
          "[gpu]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  const Shape s{8, 2, 128};
  const int context = 8192 + 64;
  const Cache c = make_cache(s, DType::F16, context, context, 95);
  std::mt19937_64 rng(96);
  const std::vector<float> q = test::gaussian(s.q_dim(), 0.0f, 2.0f, rng);
  DeviceCase dc(s, DType::F16, c, q, context);
  dc.window = 1000;
  cuda::DeviceBuffer<int> d_pos(1);
  dc.out.resize(static_cast<size_t>(s.q_dim()) * dtype_size(DType::F32));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaStream_t st;
  CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  CLLM_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  dc.launch(1, 0, DType::F32, d_pos.data(), st);
  CLLM_CUDA_CHECK(cudaStreamEndCapture(st, &graph));
  CLLM_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int pos : {0, 999, 1000, 1100, 4095, context - 1}) {
    INFO("pos " << pos);
    CLLM_CUDA_CHECK(cudaMemcpyAsync(d_pos.data(), &pos, sizeof(int), cudaMemcpyHostToDevice, st));
    CLLM_CUDA_CHECK(cudaGraphLaunch(exec, st));
    CLLM_CUDA_CHECK(cudaStreamSynchronize(st));
    const std::vector<uint8_t> graphed = dc.out.download();
    const std::vector<uint8_t> direct = dc.run(1, pos, DType::F32, nullptr, st);
    CHECK(graphed == direct);
    int row = 0;
    const double err =
        max_row_error(to_f32(direct, DType::F32), reference(s, q, c, 1, pos, dc.window), s.head_dim, &row);
    CHECK(err <= tolerance(DType::F16, DType::F32));
  }
  CLLM_CUDA_CHECK(cudaGraphExecDestroy(exec));
  CLLM_CUDA_CHECK(cudaGraphDestroy(graph));
  CLLM_CUDA_CHECK(cudaStreamDestroy(st));
#endif
}

TEST_CASE("gpu attention: repeated runs give identical bits", "[gpu]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  const Shape s{32, 8, 128};
  const int context = 4096 + 512;
  const Cache c = make_cache(s, DType::F16, context, context, 91);
  std::mt19937_64 rng(92);
  const std::vector<float> q = test::gaussian(static_cast<size_t>(512) * s.q_dim(), 0.0f, 2.0f, rng);
  DeviceCase dc(s, DType::F16, c, q, context);
  for (int n : {1, 16, 17, 512}) {
    const int pos = context - n;
    INFO("n " << n << " pos " << pos);
    const std::vector<uint8_t> first = dc.run(n, pos, DType::BF16);
    for (int i = 0; i < 5; ++i) CHECK(dc.run(n, pos, DType::BF16) == first);
  }
  for (int variant = 0; variant < cuda::attention_prefill_variants(); ++variant)
    for (int n : {17, 512}) {
      const int pos = context - n;
      INFO(cuda::attention_prefill_variant_name(variant) << ", n " << n << " pos " << pos);
      const std::vector<uint8_t> first = dc.run(n, pos, DType::BF16, nullptr, nullptr, variant);
      for (int i = 0; i < 3; ++i) CHECK(dc.run(n, pos, DType::BF16, nullptr, nullptr, variant) == first);
    }
  // attention() runs the default variant
  {
    const int n = 512, pos = context - n;
    CHECK(dc.run(n, pos, DType::BF16) ==
          dc.run(n, pos, DType::BF16, nullptr, nullptr, cuda::attention_prefill_default_variant()));
  }
#endif
}

TEST_CASE("gpu attention: a 131072-row context decodes at position 100000", "[gpu]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  const Shape s{8, 2, 128};
  const int context = 131072;
  for (int n : {1, 4}) {
    const int pos = 100000 - (n - 1);
    const Cache c = make_cache(s, DType::F16, pos + n, context, 123 + n);
    std::mt19937_64 rng(321);
    const std::vector<float> q = test::gaussian(static_cast<size_t>(n) * s.q_dim(), 0.0f, 2.0f, rng);
    DeviceCase dc(s, DType::F16, c, q, context);
    CHECK(dc.ws.size() <= size_t{16} << 20);  // 128 chunks x 16 tokens x 8 heads x 130 floats
    int row = 0;
    const double err = max_row_error(to_f32(dc.run(n, pos, DType::F32), DType::F32), reference(s, q, c, n, pos),
                                      s.head_dim, &row);
    std::printf("context 131072, pos %d, n %d: largest row error %.3g\n", pos, n, err);
    INFO("n " << n << ": error " << err << " at row " << row);
    CHECK(err <= tolerance(DType::F16, DType::F32));
  }
#endif
}
