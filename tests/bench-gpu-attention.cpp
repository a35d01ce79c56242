// Micro-benchmark of the GPU attention kernels (cuda/attention.h) on Llama-3.1-8B's shapes
// (32 query heads, 8 kv heads, head_dim 128, f16 cache, bf16 output):
//
//   bench-gpu-attention [--context N] [--reps 20] [--prompt N@D]
//
// Prints markdown tables on stdout:
// - a device-to-device cudaMemcpy of 1 GiB: GB/s counted as bytes read + bytes written;
// - decoding one token at depths 4096, 16384, 32768, 131072 (the cache's context is the depth,
//   or --context): µs per layer, GB/s of K and V read (2 x depth x kv_dim x 2 bytes) and that
//   over the memcpy's GB/s; the same for the previous one-block-per-head kernel. Each timing
//   cycles through enough layers' caches (>= 512 MiB) that none is still in L2;
// - prompt attention, 512 tokens at depth 0, 4096, 16384 and 32768 and 16384 tokens from 0,
//   under every variant of the prompt kernel (attention_prefill_f16_variant), attention()
//   (the default variant, CLLM_PREFILL_VARIANT) and the fp32 kernel (up to depth 4096): ms and
//   TFLOP/s counting 4 x head_dim x n_heads x (keys each query sees) flops; then a summary,
//   TFLOP/s per variant and prompt.
// --prompt N@D times only an N-token prompt at depth D, without the decode table (for profilers).
// Times are medians over --reps runs after a warm-up, from CUDA events.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "common/error.h"
#include "cuda/attention.h"
#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "gpu_timing.h"

using namespace cllm;
using cllm::bench::median_ms;

namespace {

constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128;
constexpr size_t kKvDim = size_t{kKvHeads} * kHeadDim;

// Random f16 values in [-1, 1) (bits made on the host, once).
void fill_f16(cuda::DeviceBuffer<uint8_t>& buf) {
  std::vector<uint16_t> h(buf.size() / 2);
  uint32_t x = 12345;
  for (auto& v : h) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<uint16_t>(0x3800 | ((x >> 16) & 0x83ff));  // |v| in [0.5, 1)
  }
  CLLM_CUDA_CHECK(cudaMemcpy(buf.data(), h.data(), buf.size(), cudaMemcpyHostToDevice));
}

}  // namespace

int main(int argc, char** argv) try {
  int fixed_context = 0, reps = 20, only_n = 0, only_depth = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--context" && i + 1 < argc) fixed_context = std::atoi(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--prompt" && i + 1 < argc && std::sscanf(argv[++i], "%d@%d", &only_n, &only_depth) == 2 && only_n > 0)
      continue;
    else {
      std::fprintf(stderr, "usage: bench-gpu-attention [--context N] [--reps 20] [--prompt N@D]\n");
      return 1;
    }
  }
  cudaDeviceProp prop{};
  CLLM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# %s, %d SMs\n\n", prop.name, prop.multiProcessorCount);

  // Device-to-device copy of 1 GiB.
  const size_t copy_bytes = size_t{1} << 30;
  double copy_gbs = 0;
  {
    cuda::DeviceBuffer<uint8_t> a(copy_bytes), b(copy_bytes);
    a.fill_bytes(1);
    const double ms = median_ms(reps, [&] {
      CLLM_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), copy_bytes, cudaMemcpyDeviceToDevice));
    });
    copy_gbs = 2.0 * copy_bytes / (ms * 1e6);
    std::printf("| memcpy D2D 1 GiB | %.3f ms | %.0f GB/s (read + write) |\n\n", ms, copy_gbs);
  }

  cuda::DeviceBuffer<float> q(size_t{16384} * kHeads * kHeadDim);
  {
    std::vector<float> h(q.size());
    uint32_t x = 777;
    for (auto& v : h) {
      x = x * 1664525u + 1013904223u;
      v = static_cast<float>(static_cast<int32_t>(x)) * (2.0f / 2147483648.0f);
    }
    q.upload(h);
  }
  cuda::DeviceBuffer<uint8_t> out(size_t{16384} * kHeads * kHeadDim * 2);

  std::printf("| decode n=1 | context | chunk | layers | µs/layer | KV GB/s | of memcpy | old kernel µs | old GB/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int depth : {4096, 16384, 32768, 131072}) {
    if (only_n) break;
    const int context = std::max(depth, fixed_context);
    const size_t layer_bytes = static_cast<size_t>(context) * kKvDim * 2;
    const int layers = static_cast<int>(std::max<size_t>(1, (size_t{512} << 20) / layer_bytes));
    cuda::DeviceBuffer<uint8_t> k(layer_bytes * layers), v(layer_bytes * layers);
    fill_f16(k);
    fill_f16(v);
    cuda::DeviceBuffer<uint8_t> ws(cuda::attention_workspace_bytes(kHeads, kHeadDim, context));
    const int pos = depth - 1;
    auto run = [&](bool legacy) {
      for (int l = 0; l < layers; ++l) {
        const uint8_t* kl = k.data() + l * layer_bytes;
        const uint8_t* vl = v.data() + l * layer_bytes;
        if (legacy)
          cuda::attention(q.data(), kl, vl, DType::F16, out.data(), DType::BF16, 1, pos, nullptr, kHeads, kKvHeads,
                          kHeadDim, nullptr);
        else
          cuda::attention(q.data(), kl, vl, DType::F16, out.data(), DType::BF16, 1, pos, nullptr, kHeads, kKvHeads,
                          kHeadDim, context, reinterpret_cast<float*>(ws.data()), ws.size(), nullptr);
      }
    };
    const double us = median_ms(reps, [&] { run(false); }) * 1e3 / layers;
    const double old_us = median_ms(std::min(reps, 5), [&] { run(true); }) * 1e3 / layers;
    const double read = 2.0 * depth * kKvDim * 2;
    std::printf("| %d | %d | %d | %d | %.1f | %.0f | %.2f | %.1f | %.0f |\n", depth, context,
                cuda::attention_decode_chunk(context), layers, us, read / (us * 1e3), read / (us * 1e3) / copy_gbs,
                old_us, read / (old_us * 1e3));
    std::fflush(stdout);
  }

  // Prompts: every variant of the prompt kernel (attention_prefill_f16_variant), then the
  // default's choice (CLLM_PREFILL_VARIANT) through attention() and the fp32 kernel.
  const int n_variants = cuda::attention_prefill_variants();
  std::printf("\nprompt kernel variants (default now: %d, CLLM_PREFILL_VARIANT picks):\n\n",
              cuda::attention_prefill_default_variant());
  std::printf("| prompt | tokens | depth | variant | ms | TFLOP/s | vs variant 0 |\n|---|---|---|---|---|---|---|\n");
  struct Prompt {
    int n, depth;
  };
  const Prompt prompts[] = {{512, 0}, {512, 4096}, {16384, 0}, {512, 16384}, {512, 32768}};
  std::vector<std::vector<double>> tf(std::size(prompts));
  const size_t n_prompts = only_n ? 1 : std::size(prompts);
  for (size_t pi = 0; pi < n_prompts; ++pi) {
    const Prompt p = only_n ? Prompt{only_n, only_depth} : prompts[pi];
    const size_t rows = static_cast<size_t>(p.depth + p.n);
    cuda::DeviceBuffer<uint8_t> k(rows * kKvDim * 2), v(rows * kKvDim * 2);
    cuda::DeviceBuffer<uint8_t> ws(cuda::attention_workspace_bytes(kHeads, kHeadDim, static_cast<int>(rows)));
    float* wsf = reinterpret_cast<float*>(ws.data());
    fill_f16(k);
    fill_f16(v);
    double keys = 0;  // keys seen, summed over the queries
    for (int t = 0; t < p.n; ++t) keys += p.depth + t + 1;
    const double flops = 4.0 * kHeadDim * kHeads * keys;
    const int r = p.n > 4096 ? std::min(reps, 5) : reps;
    double base_ms = 0;
    for (int var = 0; var < n_variants; ++var) {
      const double ms = median_ms(r, [&] {
        cuda::attention_prefill_f16_variant(var, q.data(), k.data(), v.data(), out.data(), DType::BF16, p.n, p.depth,
                                            kHeads, kKvHeads, kHeadDim, wsf, ws.size(), nullptr);
      });
      if (var == 0) base_ms = ms;
      tf[pi].push_back(flops / (ms * 1e9));
      std::printf("| pp%d | %d | %d | %s | %.3f | %.1f | %.2fx |\n", p.n, p.n, p.depth,
                  cuda::attention_prefill_variant_name(var), ms, flops / (ms * 1e9), base_ms / ms);
      std::fflush(stdout);
    }
    const double ms = median_ms(r, [&] {
      cuda::attention(q.data(), k.data(), v.data(), DType::F16, out.data(), DType::BF16, p.n, p.depth, nullptr, kHeads,
                      kKvHeads, kHeadDim, static_cast<int>(rows), wsf, ws.size(), nullptr);
    });
    std::printf("| pp%d | %d | %d | attention() (default %d) | %.3f | %.1f | %.2fx |\n", p.n, p.n, p.depth,
                cuda::attention_prefill_default_variant(), ms, flops / (ms * 1e9), base_ms / ms);
    if (p.depth <= 4096 && p.n <= 4096) {
      const double old_ms = median_ms(std::min(r, 3), [&] {
        cuda::attention(q.data(), k.data(), v.data(), DType::F16, out.data(), DType::BF16, p.n, p.depth, nullptr,
                        kHeads, kKvHeads, kHeadDim, nullptr);
      });
      std::printf("| pp%d | %d | %d | fp32 kernel | %.3f | %.1f | %.2fx |\n", p.n, p.n, p.depth, old_ms,
                  flops / (old_ms * 1e9), base_ms / old_ms);
    }
    std::fflush(stdout);
  }
  if (only_n) return 0;
  // One line per variant: TFLOP/s on each prompt, to pick the default from.
  std::printf("\n| variant |");
  for (const Prompt p : prompts) std::printf(" pp%d@%d |", p.n, p.depth);
  std::printf("\n|---|");
  for (size_t pi = 0; pi < std::size(prompts); ++pi) std::printf("---|");
  std::printf("\n");
  for (int var = 0; var < n_variants; ++var) {
    std::printf("| %s |", cuda::attention_prefill_variant_name(var));
    for (size_t pi = 0; pi < std::size(prompts); ++pi) std::printf(" %.1f |", tf[pi][var]);
    std::printf("\n");
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench-gpu-attention: %s\n", e.what());
  return 1;
}
