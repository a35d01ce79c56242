// Micro-benchmark of the CPU kernels on 16-bit weights (src/model/cpu_kernels_bf16.h) against
// the machine's memory read bandwidth: the numbers the hybrid planner (issue 8) needs and the
// issue's target (>= 70% of the host's read bandwidth on Llama-3.1-8B's layer shapes).
//
//   bench-cpu-kernels [--threads 1,2,4] [--batches 1,4,16] [--isa NAME] [--dtype bf16|f16]
//                     [--mem-mib 1024] [--seconds 0.5] [--no-layer] [--no-products]
//                     [--depths 4096,32768] [--att-tokens 1,8] [--no-attention] [--att-baseline]
//
// Prints markdown tables on stdout:
// - memory read bandwidth: a multi-threaded sum of 64-bit words over --mem-mib MiB, best of 5;
// - each product (d x k) at each batch and thread count: ms per call and GB/s of weight bytes
//   read (d * k * 2 / time), cycling through enough copies of the weights (>= --mem-mib) that
//   none is still in cache, and that as a share of the read bandwidth at the same thread count;
// - a whole 8B-shaped layer through CpuLayerForward (seven products, attention at position 0);
// - attention (cpu_attention.h) of Llama-3.1-8B's shape (32 query heads over 8 kv heads of 128,
//   f16 cache) for --att-tokens new tokens after --depths cached positions: ms per call and
//   GB/s of keys and values read (2 x positions x 8 x 128 x 2 bytes / time), cycling through
//   enough caches (>= --mem-mib) that none is still in cache; --att-baseline adds the
//   per-(token, head) loop over cpu::attention_head_f16 that it replaced.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "model/cpu_attention.h"
#include "model/cpu_kernels_bf16.h"
#include "model/cpu_layer.h"

using namespace cllm;

namespace {

struct Options {
  std::vector<int> threads;
  std::vector<int> batches = {1, 4, 16};
  cpu::Isa isa = cpu::isa_best();
  DType dtype = DType::BF16;
  size_t mem_bytes = size_t{1} << 30;
  double seconds = 0.5;
  bool layer = true;
  bool products = true;
  bool attention = true;
  bool att_baseline = false;
  std::vector<int> depths = {4096, 32768};
  std::vector<int> att_tokens = {1, 8};
};

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> v;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t comma = std::min(s.find(',', at), s.size());
    v.push_back(std::stoi(s.substr(at, comma - at)));
    at = comma + 1;
  }
  return v;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// 64-bit words filled with small random bf16 pairs (finite, normal: no slow paths).
void fill(uint16_t* p, size_t n, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    p[i] = static_cast<uint16_t>(0x3C00u | (s & 0x83FFu));  // +-[2^-7, 2^-6) in bf16, ~0.4..0.8 in f16
  }
}

// The read bandwidth of threads threads: each sums its share of buf; best of 5 passes.
double read_bandwidth(const std::vector<uint64_t>& buf, int threads) {
  ThreadPool pool(threads);
  constexpr size_t kChunk = size_t{1} << 20;  // 8 MiB of words per work item
  const size_t items = (buf.size() + kChunk - 1) / kChunk;
  std::vector<uint64_t> sums(items);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    Timer t;
    pool.parallel_for(items, [&](size_t i) {
      const uint64_t* p = buf.data() + i * kChunk;
      const size_t n = std::min(kChunk, buf.size() - i * kChunk);
      uint64_t a = 0, b = 0, c = 0, d = 0;
      for (size_t j = 0; j + 4 <= n; j += 4) a += p[j], b += p[j + 1], c += p[j + 2], d += p[j + 3];
      sums[i] = a + b + c + d;
    });
    best = std::max(best, buf.size() * 8.0 / t.seconds() / 1e9);
  }
  uint64_t total = 0;
  for (uint64_t s : sums) total += s;
  if (total == 42) std::printf(" ");  // keeps the sums alive
  return best;
}

struct Shape {
  const char* name;
  int d, k;
};

// Attention of Llama-3.1-8B's shape over an f16 cache, per depth, token count and thread count.
void bench_attention(const Options& opt, const std::vector<double>& bw) {
  constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128, kKvDim = kKvHeads * kHeadDim, kQDim = kHeads * kHeadDim;
  const int max_tokens = *std::max_element(opt.att_tokens.begin(), opt.att_tokens.end());
  std::printf("\n| attention 32/8 heads of 128, f16 cache | depth | tokens | threads | ms | GB/s of K+V | %% of read BW "
              "(same threads) |\n|---|---:|---:|---:|---:|---:|---:|\n");
  std::vector<float> q(static_cast<size_t>(max_tokens) * kQDim), out(q.size());
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
  for (int depth : opt.depths) {
    const int ctx = depth + max_tokens;
    const size_t elems = static_cast<size_t>(ctx) * kKvDim, cache_bytes = 2 * elems * 2;
    const int copies = static_cast<int>(std::max<size_t>(2, (opt.mem_bytes + cache_bytes - 1) / cache_bytes));
    std::vector<uint16_t> kv(2 * elems * copies);
    fill(kv.data(), kv.size(), 3);
    std::vector<float> scores(opt.att_baseline ? static_cast<size_t>(max_tokens) * kHeads * ctx : 0);
    for (int n : opt.att_tokens)
      for (int variant = 0; variant < (opt.att_baseline ? 2 : 1); ++variant)
        for (size_t ti = 0; ti < opt.threads.size(); ++ti) {
          ThreadPool pool(opt.threads[ti]);
          const auto call = [&](int c) {
            const uint16_t* k = kv.data() + 2 * elems * c;
            const uint16_t* v = k + elems;
            if (variant == 0) {
              cpu::AttentionArgs a;
              a.out = out.data();
              a.out_stride = kQDim;
              a.q = q.data();
              a.q_stride = kQDim;
              a.k = k;
              a.v = v;
              a.kv_dtype = DType::F16;
              a.kv_stride = kKvDim;
              a.n_tokens = n;
              a.pos = depth;
              a.n_heads = kHeads;
              a.n_kv_heads = kKvHeads;
              a.head_dim = kHeadDim;
              cpu::attention(a, &pool, opt.isa);
            } else {  // the loop CpuLayerForward ran before cpu_attention.h
              pool.parallel_for(static_cast<size_t>(n) * kHeads, [&](size_t i) {
                const int t = static_cast<int>(i / kHeads), h = static_cast<int>(i % kHeads);
                const size_t at = static_cast<size_t>(t) * kQDim + static_cast<size_t>(h) * kHeadDim;
                const size_t head = static_cast<size_t>(h / (kHeads / kKvHeads)) * kHeadDim;
                cpu::attention_head_f16(out.data() + at, q.data() + at, k + head, v + head, depth + t + 1, kKvDim,
                                        kHeadDim, scores.data() + i * ctx, opt.isa);
              });
            }
          };
          call(0);  // warm-up (scratch, pool)
          int calls = 0;
          Timer t;
          while (calls < copies || t.seconds() < opt.seconds) call(calls++ % copies);
          const double sec = t.seconds() / calls;
          const double gbs = 2.0 * (depth + n) * kKvDim * 2 / sec / 1e9;
          std::printf("| %s | %d | %d | %d | %.3f | %.1f | %.0f%% |\n", variant ? "per-head (before)" : "cpu::attention",
                      depth, n, opt.threads[ti], sec * 1e3, gbs, 100 * gbs / bw[ti]);
          std::fflush(stdout);
        }
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options opt;
    opt.threads.clear();
    for (int t = 1; t <= hardware_threads(); t *= 2) opt.threads.push_back(t);
    if (opt.threads.back() != hardware_threads()) opt.threads.push_back(hardware_threads());
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      const auto value = [&]() -> std::string {
        if (i + 1 >= argc) fail(a, " needs a value");
        return argv[++i];
      };
      if (a == "--threads") opt.threads = parse_list(value());
      else if (a == "--batches") opt.batches = parse_list(value());
      else if (a == "--isa") {
        const std::string v = value();
        if (!cpu::isa_from_name(v, &opt.isa)) fail("--isa ", v, ": unknown (scalar, avx2, avx512, avx512-bf16)");
      } else if (a == "--dtype") {
        const std::string v = value();
        if (!dtype_from_name(v, &opt.dtype) || (opt.dtype != DType::BF16 && opt.dtype != DType::F16))
          fail("--dtype ", v, ": expected bf16 or f16");
      } else if (a == "--mem-mib") opt.mem_bytes = static_cast<size_t>(std::stoull(value())) << 20;
      else if (a == "--seconds") opt.seconds = std::stod(value());
      else if (a == "--no-layer") opt.layer = false;
      else if (a == "--no-products") opt.products = false;
      else if (a == "--no-attention") opt.attention = false;
      else if (a == "--att-baseline") opt.att_baseline = true;
      else if (a == "--depths") opt.depths = parse_list(value());
      else if (a == "--att-tokens") opt.att_tokens = parse_list(value());
      else fail("unknown option ", a, " (see the comment at the top of tests/bench-cpu-kernels.cpp)");
    }
    if (!cpu::isa_available(opt.isa)) fail("--isa ", cpu::isa_name(opt.isa), ": not available on this CPU");

    std::string avail;
    for (cpu::Isa isa : {cpu::Isa::scalar, cpu::Isa::avx2, cpu::Isa::avx512, cpu::Isa::avx512_bf16})
      if (cpu::isa_available(isa)) avail += cat(avail.empty() ? "" : ", ", cpu::isa_name(isa));
    std::printf("CPU: %s, %d hardware threads; kernels: %s (available: %s); weights %s\n\n", cpu_model().c_str(),
                hardware_threads(), cpu::isa_name(opt.isa), avail.c_str(), dtype_name(opt.dtype));

    // Memory read bandwidth per thread count.
    std::vector<double> bw(opt.threads.size());
    {
      std::vector<uint64_t> buf(opt.mem_bytes / 8);
      for (size_t i = 0; i < buf.size(); ++i) buf[i] = i * 0x9E3779B97F4A7C15ull;
      std::printf("| memory read (sum of %zu MiB) | threads | GB/s |\n|---|---:|---:|\n", opt.mem_bytes >> 20);
      for (size_t i = 0; i < opt.threads.size(); ++i) {
        bw[i] = read_bandwidth(buf, opt.threads[i]);
        std::printf("| | %d | %.1f |\n", opt.threads[i], bw[i]);
      }
    }
    const double best_bw = *std::max_element(bw.begin(), bw.end());
    std::printf("\n");

    // Products of Llama-3.1-8B's layer shapes: (d, k) = (rows, inputs).
    const Shape shapes[] = {{"q/o 4096x4096", 4096, 4096},
                            {"gate/up 14336x4096", 14336, 4096},
                            {"down 4096x14336", 4096, 14336},
                            {"k/v 1024x4096", 1024, 4096}};
    const int max_batch = *std::max_element(opt.batches.begin(), opt.batches.end());
    if (opt.products) {
      std::printf("| product (%s) | batch | threads | ms | GB/s of weights | %% of read BW (same threads) | %% of best read BW |\n",
                  dtype_name(opt.dtype));
      std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
    }
    for (const Shape& s : shapes) {
      if (!opt.products) break;
      const size_t elems = static_cast<size_t>(s.d) * s.k, bytes = elems * 2;
      const int copies = static_cast<int>(std::max<size_t>(2, (opt.mem_bytes + bytes - 1) / bytes));
      std::vector<uint16_t> w(elems * copies);
      fill(w.data(), w.size(), 1);
      std::vector<float> x(static_cast<size_t>(max_batch) * s.k), y(static_cast<size_t>(max_batch) * s.d);
      for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 101) / 101.0f - 0.5f;
      for (int n : opt.batches)
        for (size_t ti = 0; ti < opt.threads.size(); ++ti) {
          ThreadPool pool(opt.threads[ti]);
          const auto call = [&](int c) {
            cpu::matmul16(y.data(), s.d, x.data(), w.data() + elems * c, opt.dtype, n, s.k, s.d, &pool, false, opt.isa);
          };
          call(0);  // warm-up (scratch, pool)
          int calls = 0;
          Timer t;
          while (calls < copies || t.seconds() < opt.seconds) call(calls++ % copies);
          const double sec = t.seconds() / calls, gbs = bytes / sec / 1e9;
          std::printf("| %s | %d | %d | %.2f | %.1f | %.0f%% | %.0f%% |\n", s.name, n, opt.threads[ti], sec * 1e3, gbs,
                      100 * gbs / bw[ti], 100 * gbs / best_bw);
          std::fflush(stdout);
        }
    }

    if (opt.attention) bench_attention(opt, bw);
    if (!opt.layer) return 0;
    // One Llama-3.1-8B layer (436 MiB of bf16, 13x a 32 MiB L3) through CpuLayerForward.
    LlamaConfig c;
    c.dim = 4096;
    c.n_layers = 1;
    c.n_heads = 32;
    c.n_kv_heads = 8;
    c.head_dim = 128;
    c.ffn_dim = 14336;
    c.vocab_size = 128256;
    c.context_length = 256;
    c.rope_theta = 500000.0f;
    const size_t dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.ffn_dim;
    const size_t sizes[] = {dim, qd * dim, kvd * dim, kvd * dim, dim * qd, dim, ffn * dim, ffn * dim, dim * ffn};
    CpuSlotLayout layout;  // the Llama layer's nine tensors, no biases
    std::array<uint64_t, kLayerTensors>& offset = layout.offset;
    uint64_t at = 0, weight_bytes = 0;
    for (int i = 0; i < 9; ++i) {
      offset[i] = at;
      layout.dtype[i] = opt.dtype;
      layout.present[i] = true;
      at = (at + sizes[i] * 2 + 255) / 256 * 256;
      weight_bytes += sizes[i] * 2;
    }
    std::vector<uint16_t> slot(at / 2);
    fill(slot.data(), slot.size(), 2);
    const uint16_t one = opt.dtype == DType::BF16 ? f32_to_bf16(1.0f) : f32_to_f16(1.0f);
    for (int i : {0, 5}) std::fill_n(slot.data() + offset[i] / 2, dim, one);  // norm weights 1
    const CpuLayerWeights lw = cpu_layer_weights_in_slot(slot.data(), layout);
    CpuKvCache kv(1, c.context_length, c.kv_dim(), DType::F16);
    std::printf("\n| Llama-3.1-8B layer (%.0f MiB of %s) | batch | threads | ms | GB/s of weights | %% of read BW (same threads) | "
                "tok/s of 32 such layers |\n|---|---:|---:|---:|---:|---:|---:|\n",
                weight_bytes / 1048576.0, dtype_name(opt.dtype));
    for (int n : opt.batches)
      for (size_t ti = 0; ti < opt.threads.size(); ++ti) {
        ThreadPool pool(opt.threads[ti]);
        CpuLayerForward fwd(c, {c.context_length, max_batch, opt.isa}, &pool);
        std::vector<float> x(static_cast<size_t>(n) * dim);
        const auto call = [&] {
          for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 101) / 101.0f - 0.5f;
          fwd.forward(0, lw, kv.layer(0), x.data(), n, 0);
        };
        call();
        int calls = 0;
        Timer t;
        while (calls < 2 || t.seconds() < opt.seconds) call(), ++calls;
        const double sec = t.seconds() / calls, gbs = weight_bytes / sec / 1e9;
        std::printf("| | %d | %d | %.1f | %.1f | %.0f%% | %.2f |\n", n, opt.threads[ti], sec * 1e3, gbs,
                    100 * gbs / bw[ti], n / (32 * sec));
        std::fflush(stdout);
      }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
