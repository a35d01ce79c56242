#include "model/cpu_ops.h"

#include <algorithm>
#include <cmath>

namespace cllm::cpu {

namespace {

constexpr int L = kDotLanes;

// The fixed reduction of the lanes: a tree, so that it vectorises and never depends on n.
inline float reduce_lanes(const float* a) {
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}
static_assert(L == 8, "reduce_lanes is written for 8 lanes");

// R rows of w times T rows of x: R*T dot products over k, each in the lane order of dot().
// Plain arrays of lanes so that GCC's SLP vectoriser maps each row of acc onto SIMD registers.
template <int R, int T>
inline void dot_block(const float* w, const float* x, int k, float* y, int ldy) {
  float acc[T][R][L];
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r)
      for (int l = 0; l < L; ++l) acc[t][r][l] = 0.0f;
  const int k_main = k - k % L;
  for (int i = 0; i < k_main; i += L)
    for (int t = 0; t < T; ++t)
      for (int r = 0; r < R; ++r)
        for (int l = 0; l < L; ++l) acc[t][r][l] += x[t * k + i + l] * w[r * k + i + l];
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) {
      float* a = acc[t][r];
      for (int i = k_main; i < k; ++i) a[i - k_main] += x[t * k + i] * w[r * k + i];
      y[static_cast<size_t>(t) * ldy + r] = reduce_lanes(a);
    }
}

// Rows [r0, r1) of w against all n rows of x.
void matmul_rows(float* y, int ldy, const float* x, const float* w, int n, int k, int r0, int r1) {
  constexpr int R = 4, T = 4;  // 4x4 dot products share each load of w and x
  const size_t K = static_cast<size_t>(k);
  // Tokens in blocks of T: the block's x rows (T x k) stay in L1/L2 while w's rows stream past.
  int t = 0;
  for (; t + T <= n; t += T) {
    const float* xt = x + t * K;
    float* yt = y + static_cast<size_t>(t) * ldy;
    int r = r0;
    for (; r + R <= r1; r += R) dot_block<R, T>(w + r * K, xt, k, yt + r, ldy);
    for (; r < r1; ++r) dot_block<1, T>(w + r * K, xt, k, yt + r, ldy);
  }
  for (; t < n; ++t) {
    const float* xt = x + t * K;
    float* yt = y + static_cast<size_t>(t) * ldy;
    int r = r0;
    for (; r + R <= r1; r += R) dot_block<R, 1>(w + r * K, xt, k, yt + r, ldy);
    for (; r < r1; ++r) dot_block<1, 1>(w + r * K, xt, k, yt + r, ldy);
  }
}

// Below this many multiply-adds a parallel_for costs more than it saves: waking the pool and
// joining it takes ~10 us (median, 2 threads), the time of ~50K multiply-adds on one core.
constexpr double kMinParallelWork = 128 * 1024;

}  // namespace

float dot(const float* a, const float* b, int n) {
  float y;
  dot_block<1, 1>(b, a, n, &y, 1);
  return y;
}

void parallel_for(ThreadPool* pool, size_t n, double cost_per_item, const std::function<void(size_t)>& fn) {
  if (pool && pool->size() > 1 && n > 1 && static_cast<double>(n) * cost_per_item >= kMinParallelWork) {
    pool->parallel_for(n, fn);
  } else {
    for (size_t i = 0; i < n; ++i) fn(i);
  }
}

void matmul(float* y, int ldy, const float* x, const float* w, int n, int k, int d, ThreadPool* pool) {
  // Chunks of 16 rows: 64 KiB of w at k = 1024, small enough to balance the threads, large
  // enough for the 4-row blocks. The chunking changes which thread computes a row, not how.
  constexpr int kRowsPerItem = 16;
  const size_t items = (static_cast<size_t>(d) + kRowsPerItem - 1) / kRowsPerItem;
  parallel_for(pool, items, static_cast<double>(kRowsPerItem) * k * n, [&](size_t i) {
    const int r0 = static_cast<int>(i) * kRowsPerItem;
    matmul_rows(y, ldy, x, w, n, k, r0, std::min(d, r0 + kRowsPerItem));
  });
}

void rmsnorm(float* out, const float* x, const float* w, int dim, float eps) {
  const float ss = dot(x, x, dim) / static_cast<float>(dim);
  const float r = 1.0f / std::sqrt(ss + eps);
  for (int i = 0; i < dim; ++i) out[i] = (x[i] * r) * w[i];
}

void rmsnorm_unit_offset(float* out, const float* x, const float* w, int dim, float eps) {
  const float ss = dot(x, x, dim) / static_cast<float>(dim);
  const float r = 1.0f / std::sqrt(ss + eps);
  for (int i = 0; i < dim; ++i) out[i] = (x[i] * r) * (1.0f + w[i]);
}

void softcap(float* v, size_t n, float cap) {
  for (size_t i = 0; i < n; ++i) v[i] = std::tanh(v[i] / cap) * cap;
}

std::vector<float> rope_frequencies(int head_dim, float theta, const RopeScaling& s) {
  // In fp32 like HF (inv_freq is a float32 tensor) and llama2.c (powf).
  std::vector<float> f(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i)
    f[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
  if (s.type == "linear")  // positions divided by factor (transformers divides inv_freq)
    for (auto& freq : f) freq /= s.factor;
  if (s.type != "llama3") return f;
  // llama3: keep high frequencies (short wavelengths), divide low ones by factor, and blend
  // linearly in wavelength space between the two thresholds.
  const float ctx = static_cast<float>(s.original_context);
  const float low_wavelen = ctx / s.low_freq_factor;    // longer than this: scaled by 1/factor
  const float high_wavelen = ctx / s.high_freq_factor;  // shorter than this: unchanged
  const float two_pi = 6.283185307179586f;
  for (auto& freq : f) {
    const float wavelen = two_pi / freq;
    if (wavelen < high_wavelen) continue;
    if (wavelen > low_wavelen) {
      freq = freq / s.factor;
      continue;
    }
    const float smooth = (ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    freq = (1.0f - smooth) * freq / s.factor + smooth * freq;
  }
  return f;
}

void rope_tokens(float* q, float* k, int n, int pos, const LlamaConfig& c, const RopeTable& table) {
  const size_t qd = c.q_dim(), kvd = c.kv_dim();
  for (int t = 0; t < n; ++t) {
    const float* cs = table.cos_at(pos + t);
    const float* sn = table.sin_at(pos + t);
    rope(q + t * qd, c.n_heads, c.head_dim, c.rope_layout, cs, sn, c.rotary_dim());
    rope(k + t * kvd, c.n_kv_heads, c.head_dim, c.rope_layout, cs, sn, c.rotary_dim());
  }
}

RopeTable model_rope_table(const LlamaConfig& c, int n_pos, bool local) {
  if (local) return rope_table(rope_frequencies(c.rotary_dim(), c.rope_local_theta, RopeScaling{}), n_pos);
  const RopeScaling& s = c.rope_scaling;
  std::vector<float> f = rope_frequencies(c.rotary_dim(), c.rope_theta, s);
  if (s.type != "longrope") return rope_table(f, n_pos);
  // longrope: 1 / (factor_i * theta^(2i/d)), as transformers' _compute_longrope_parameters
  const std::vector<float>& factor = n_pos > s.original_context ? s.long_factor : s.short_factor;
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = 1.0f / (factor[i] * std::pow(c.rope_theta, static_cast<float>(2 * i) / static_cast<float>(c.rotary_dim())));
  return rope_table(f, n_pos, s.attention_factor);
}

RopeTable rope_table(const std::vector<float>& freqs, int n_pos, float scale) {
  RopeTable t;
  t.n_pos = n_pos;
  t.half = static_cast<int>(freqs.size());
  t.cos.resize(static_cast<size_t>(n_pos) * t.half);
  t.sin.resize(t.cos.size());
  for (int p = 0; p < n_pos; ++p)
    for (int i = 0; i < t.half; ++i) {
      const float angle = static_cast<float>(p) * freqs[i];  // fp32 angle, as llama2.c and HF
      t.cos[static_cast<size_t>(p) * t.half + i] = std::cos(angle) * scale;
      t.sin[static_cast<size_t>(p) * t.half + i] = std::sin(angle) * scale;
    }
  return t;
}

void rope(float* v, int n_heads, int head_dim, RopeLayout layout, const float* c, const float* s, int rope_dim) {
  const int half = (rope_dim > 0 ? rope_dim : head_dim) / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* x = v + static_cast<size_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      // The pair rotated by angle i: adjacent (llama2.c, GGUF) or half a head apart (HF).
      const int a = layout == RopeLayout::interleaved ? 2 * i : i;
      const int b = layout == RopeLayout::interleaved ? 2 * i + 1 : i + half;
      const float x0 = x[a], x1 = x[b];
      x[a] = x0 * c[i] - x1 * s[i];
      x[b] = x0 * s[i] + x1 * c[i];
    }
  }
}

void attention_head(float* out, const float* q, const float* k, const float* v, int n_pos,
                    int kv_stride, int head_dim, float* scores) {
  // scores_p = q . k_p / sqrt(head_dim)
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  float max_score = -INFINITY;
  for (int p = 0; p < n_pos; ++p) {
    float d;
    dot_block<1, 1>(k + static_cast<size_t>(p) * kv_stride, q, head_dim, &d, 1);  // == dot(q, k_p)
    scores[p] = d * scale;
    max_score = std::max(max_score, scores[p]);
  }
  // softmax over the positions (max subtracted for range)
  float sum = 0.0f;
  for (int p = 0; p < n_pos; ++p) {
    scores[p] = std::exp(scores[p] - max_score);
    sum += scores[p];
  }
  // out = sum_p softmax_p * v_p
  for (int i = 0; i < head_dim; ++i) out[i] = 0.0f;
  for (int p = 0; p < n_pos; ++p) {
    const float a = scores[p] / sum;
    const float* vp = v + static_cast<size_t>(p) * kv_stride;
    for (int i = 0; i < head_dim; ++i) out[i] += a * vp[i];
  }
}

void swiglu(float* h, const float* up, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float g = h[i];
    h[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void geglu_tanh(float* h, const float* up, size_t n) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  for (size_t i = 0; i < n; ++i) {
    const float g = h[i];
    h[i] = 0.5f * g * (1.0f + std::tanh(k * (g + 0.044715f * g * g * g))) * up[i];
  }
}

}  // namespace cllm::cpu
