// Micro-benchmark of the fused layout's kernels (cuda/fused_matvec.h, cuda/fused_encode.h) on
// Llama-3.1-8B's matrix shapes, with Gaussian bf16 weights (std 0.02):
//
//   bench-gpu-fused [--reps 20] [--tokens 1,2,4,8]
//
// Prints markdown tables on stdout:
// - per matrix (d x k) and token count: µs per product for full mode's path (bf16 weights
//   through Blas::linear: the matrix-vector kernel at 1 token, cuBLAS above) and for
//   fused_matvec, GB/s of weight bytes read (bf16: 2 d k; fused: the layout's bytes), and the
//   speed-up; then one whole 8B token (32 layers of the seven products and the classifier) at
//   each token count, summed from the rows;
// - one token's products chained as the engine launches them (per layer: q/k/v in one launch,
//   o, an RMSNorm, gate/up with SwiGLU in one launch, down, an RMSNorm; each an overlap launch,
//   runtime/gpu_forward.cpp), 32 layers of their own weights, without attention: what the
//   launches' overlap and the tails between products cost, beside the sum of the rows;
// - per matrix: the GPU encoder's time (both passes, with the read-back of the escape total)
//   and fused_decode's, GB/s of bf16 written.
// Times are medians over --reps runs after a warm-up, from CUDA events; each product timing
// cycles through enough copies of the matrix (>= 512 MiB of bf16) that none is still in L2.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "convert/synth.h"
#include "cuda/blas.h"
#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "gpu_timing.h"
#include "cuda/fused_encode.h"
#include "cuda/fused_matvec.h"
#include "cuda/kernels.h"

using namespace cllm;
using cllm::bench::median_ms;
using cuda::DeviceBuffer;

namespace {

struct MatrixShape {
  const char* name;
  int d, k, per_token;  // per_token: how many of it one 8B token reads
};
const MatrixShape kShapes[] = {{"q, o", 4096, 4096, 64},    {"k, v", 1024, 4096, 64},        {"gate, up", 14336, 4096, 64},
                               {"down", 4096, 14336, 32}, {"output (classifier)", 128256, 4096, 1}};
constexpr size_t kCycleBytes = size_t{512} << 20;

// One copy of a matrix: bf16 and its fused planes (made by the GPU encoder).
struct Copy {
  DeviceBuffer<uint16_t> w;
  DeviceBuffer<uint8_t> bytes, bases;
  DeviceBuffer<uint32_t> codes, start, escapes;
  cuda::FusedWeights view{};
  size_t fused_bytes = 0;
};

cuda::FusedPlanes planes_of(Copy& c, int d, int k) {
  const int stride = (k + 7) / 8 * 8;
  c.bytes.resize(static_cast<size_t>(d) * stride);
  c.codes.resize(static_cast<size_t>(d) * stride / 8);
  c.bases.resize(static_cast<size_t>(d));  // one base per row (the default group)
  c.start.resize(static_cast<size_t>(d) + 1);
  return {c.bytes.data(), c.codes.data(), c.bases.data(), c.start.data(), d, k, stride, stride};
}

// Encodes c.w into c's planes: both passes and the read-back of the escape total between them.
void encode(Copy& c, const cuda::FusedPlanes& p) {
  cuda::fused_encode_bases(c.w.data(), p, nullptr);
  uint32_t total = 0;
  CLLM_CUDA_CHECK(cudaMemcpy(&total, c.start.data() + p.rows, 4, cudaMemcpyDeviceToHost));
  c.escapes.resize(std::max<uint32_t>(total, 1));
  cuda::fused_encode_planes(c.w.data(), p, c.escapes.data(), nullptr);
  c.view = {c.bytes.data(), c.codes.data(), c.bases.data(), c.start.data(), c.escapes.data(), p.rows, p.cols, p.stride, p.group};
  c.fused_bytes = c.bytes.bytes() + c.codes.bytes() + c.bases.bytes() + c.start.bytes() + size_t{total} * 4;
}

// c as a matrix of shape s, filled from a block of Gaussian weights repeated (each row is an
// independent sample either way), and its planes.
void fill(Copy& c, const MatrixShape& s, const std::vector<uint16_t>& block) {
  const size_t n = static_cast<size_t>(s.d) * s.k;
  c.w.resize(n);
  for (size_t at = 0; at < n; at += block.size())
    CLLM_CUDA_CHECK(cudaMemcpy(c.w.data() + at, block.data(), std::min(block.size(), n - at) * 2, cudaMemcpyHostToDevice));
  encode(c, planes_of(c, s.d, s.k));
}

// Copies of shape s, enough that a cycle through them does not fit L2.
std::vector<Copy> make_copies(const MatrixShape& s, const std::vector<uint16_t>& block) {
  const size_t n = static_cast<size_t>(s.d) * s.k;
  std::vector<Copy> copies(std::max<size_t>(1, (kCycleBytes + 2 * n - 1) / (2 * n)));
  for (Copy& c : copies) fill(c, s, block);
  return copies;
}

// One layer's seven matrices, bf16 and fused: q, k, v, o, gate, up, down.
struct Layer {
  Copy m[7];
};
const int kLayerShape[7] = {0, 1, 1, 0, 2, 2, 3};  // index into kShapes

// 32 layers of one token's products as the engine chains them, full (bf16, matvec) or fused;
// ms per token (median over reps).
double chained_token_ms(std::vector<Layer>& layers, bool fused, int reps) {
  const int dim = kShapes[0].k, ff = kShapes[2].d;
  DeviceBuffer<float> x(dim), q(dim), k(kShapes[1].d), v(kShapes[1].d), norm_w(dim);
  DeviceBuffer<uint16_t> xn(dim), h(ff);
  std::vector<float> ones(dim, 1.0f), x0(dim, 0.5f);
  CLLM_CUDA_CHECK(cudaMemcpy(norm_w.data(), ones.data(), norm_w.bytes(), cudaMemcpyHostToDevice));
  CLLM_CUDA_CHECK(cudaMemcpy(x.data(), x0.data(), x.bytes(), cudaMemcpyHostToDevice));
  const auto norm = [&] { cuda::rmsnorm(x.data(), norm_w.data(), DType::F32, xn.data(), DType::BF16, 1, dim, 1e-5f, nullptr); };
  return median_ms(reps, [&] {
    norm();
    for (Layer& L : layers) {
      if (fused) {
        cuda::FusedJobs qkv;
        qkv.job[0] = {L.m[0].view, q.data(), false};
        qkv.job[1] = {L.m[1].view, k.data(), false};
        qkv.job[2] = {L.m[2].view, v.data(), false};
        qkv.count = 3;
        qkv.overlap_previous = true;
        cuda::fused_matvec(qkv, xn.data(), nullptr);
        cuda::fused_matvec(L.m[3].view, xn.data(), 1, x.data(), dim, true, nullptr, true);
        norm();
        cuda::fused_matvec_swiglu(L.m[4].view, L.m[5].view, xn.data(), h.data(), nullptr, false, true);
        cuda::fused_matvec(L.m[6].view, h.data(), 1, x.data(), dim, true, nullptr, true);
      } else {
        cuda::MatVecJobs qkv;
        qkv.job[0] = {L.m[0].w.data(), q.data(), dim, false};
        qkv.job[1] = {L.m[1].w.data(), k.data(), kShapes[1].d, false};
        qkv.job[2] = {L.m[2].w.data(), v.data(), kShapes[1].d, false};
        qkv.count = 3;
        qkv.overlap_previous = true;
        cuda::matvec(qkv, DType::BF16, xn.data(), dim, nullptr);
        cuda::matvec(L.m[3].w.data(), DType::BF16, xn.data(), x.data(), dim, dim, true, nullptr, true);
        norm();
        cuda::matvec_swiglu(L.m[4].w.data(), L.m[5].w.data(), DType::BF16, xn.data(), h.data(), ff, dim, nullptr, true);
        cuda::matvec(L.m[6].w.data(), DType::BF16, h.data(), x.data(), dim, ff, true, nullptr, true);
      }
      norm();
    }
  });
}

std::vector<Layer> make_layers(const std::vector<uint16_t>& block, int count) {
  std::vector<Layer> layers(count);
  for (Layer& L : layers)
    for (int j = 0; j < 7; ++j) fill(L.m[j], kShapes[kLayerShape[j]], block);
  return layers;
}

struct Options {
  int reps = 20;
  std::vector<int> tokens = {1, 2, 4, 8};
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    CLLM_CHECK(i + 1 < argc, a, " needs a value");
    if (a == "--reps") {
      o.reps = std::stoi(argv[++i]);
    } else if (a == "--tokens") {
      o.tokens.clear();
      for (const char* p = argv[++i]; *p;) {
        o.tokens.push_back(std::atoi(p));
        while (*p && *p != ',') ++p;
        if (*p) ++p;
      }
    } else {
      fail("unknown option ", a, " (known: --reps N, --tokens 1,2,4,8)");
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options opt = parse(argc, argv);
    std::vector<uint16_t> block(size_t{1} << 25);
    fill_gaussian_bf16(block.data(), block.size(), 0.0, 0.02, 42);
    DeviceBuffer<uint8_t> workspace(size_t{32} << 20);
    cuda::Blas blas(nullptr, workspace.data(), workspace.bytes());
    std::vector<double> token_full(opt.tokens.size(), 0.0), token_fused(opt.tokens.size(), 0.0);
    std::printf("| matrix | d x k | tokens | full µs | full GB/s | fused µs | fused GB/s | speed-up |\n"
                "|---|---|---|---|---|---|---|---|\n");
    std::vector<std::string> codec_rows;
    for (const MatrixShape& s : kShapes) {
      std::vector<Copy> copies = make_copies(s, block);
      const double bf16_bytes = 2.0 * s.d * s.k, fused_bytes = static_cast<double>(copies[0].fused_bytes);
      DeviceBuffer<uint16_t> x(static_cast<size_t>(8) * s.k);
      CLLM_CUDA_CHECK(cudaMemcpy(x.data(), block.data(), x.bytes(), cudaMemcpyHostToDevice));
      DeviceBuffer<float> y(static_cast<size_t>(8) * s.d);
      for (size_t ti = 0; ti < opt.tokens.size(); ++ti) {
        const int n = opt.tokens[ti];
        size_t next = 0;
        const double full = median_ms(opt.reps, [&] {
          blas.linear(copies[next++ % copies.size()].w.data(), DType::BF16, x.data(), y.data(), s.d, n, s.k, s.d, false);
        });
        const double fused = median_ms(opt.reps, [&] {
          cuda::fused_matvec(copies[next++ % copies.size()].view, x.data(), n, y.data(), s.d, false, nullptr);
        });
        token_full[ti] += full * s.per_token;
        token_fused[ti] += fused * s.per_token;
        std::printf("| %s | %d x %d | %d | %.1f | %.0f | %.1f | %.0f | %.2f |\n", s.name, s.d, s.k, n, full * 1e3,
                    bf16_bytes / full / 1e6, fused * 1e3, fused_bytes / fused / 1e6, full / fused);
        std::fflush(stdout);
      }
      DeviceBuffer<uint16_t> out(static_cast<size_t>(s.d) * s.k);
      const double dec = median_ms(opt.reps, [&] { cuda::fused_decode(copies[0].view, out.data(), nullptr); });
      const double enc = median_ms(std::max(3, opt.reps / 4), [&] { encode(copies[0], planes_of(copies[0], s.d, s.k)); });
      char row[256];
      std::snprintf(row, sizeof row, "| %s | %d x %d | %.3f | %.2f | %.0f | %.0f |", s.name, s.d, s.k,
                    8.0 * fused_bytes / (static_cast<double>(s.d) * s.k), enc, dec * 1e3, bf16_bytes / dec / 1e6);
      codec_rows.push_back(row);
    }
    std::printf("\n| one 8B token (32 layers + classifier) | tokens | full ms | fused ms | speed-up |\n|---|---|---|---|---|\n");
    for (size_t ti = 0; ti < opt.tokens.size(); ++ti)
      std::printf("| | %d | %.3f | %.3f | %.2f |\n", opt.tokens[ti], token_full[ti], token_fused[ti],
                  token_full[ti] / token_fused[ti]);
    std::printf("\n| matrix | d x k | fused bits/weight | encode ms | decode µs | decode GB/s of bf16 |\n|---|---|---|---|---|---|\n");
    for (const std::string& r : codec_rows) std::printf("%s\n", r.c_str());
    {
      std::vector<Layer> layers = make_layers(block, 32);
      const double full = chained_token_ms(layers, false, opt.reps), fused = chained_token_ms(layers, true, opt.reps);
      std::printf("\n| one token's products chained as the engine launches them (32 layers, no attention) | full ms | fused ms "
                  "| speed-up |\n|---|---|---|---|\n| | %.3f | %.3f | %.2f |\n", full, fused, full / fused);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench-gpu-fused: %s\n", e.what());
    return 1;
  }
}
