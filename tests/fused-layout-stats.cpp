// What the fused layout (src/codec/fused_layout.h) costs on real and synthetic weights: the
// measurements behind the group size chosen in docs/codec.md "The fused layout (mode 3)".
//
//   fused-layout-stats [--gaussian] [MODEL ...]
//
// MODEL: anything the importers read (llama2.c .bin, GGUF, HF folder); its 2-D tensors are
// rounded to bf16 (f32 -> bf16 to nearest even; GGUF quantized weights are dequantized by the
// importer first). --gaussian: N(0, 0.02^2) bf16 matrices as `codecllm synth` makes them, in the
// shapes of one Llama-3.1-8B layer, of 16384 rows of its output projection, and of one
// TinyLlama-1.1B layer. Prints a markdown table on stdout: per data set and group size, the
// layout's bits per weight (planes, bases, escape offsets and entries, 16-byte alignment of each
// part), the share of weights that are escapes, the share of rows holding any (a warp per row
// takes the slow path once per escape) and the most in one row, and for context the order-0
// bound 8 + H of the exponents (what the rANS container approaches).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "codec/fused_layout.h"
#include "common/dtype.h"
#include "common/error.h"
#include "convert/source_model.h"
#include "convert/synth.h"

using namespace cllm;
using namespace cllm::codec::fused;

namespace {

struct Matrix {
  std::string name;
  uint32_t rows, cols;
  std::vector<uint16_t> w;  // bf16
};

const uint32_t kGroups[] = {32, 64, 128, 256, 512, kRowGroup};

std::vector<uint16_t> to_bf16(const SourceTensor& t) {
  const size_t n = t.size / dtype_size(t.dtype);
  std::vector<uint16_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    float f;
    switch (t.dtype) {
      case DType::BF16: std::memcpy(&h, t.data + 2 * i, 2); out[i] = h; break;
      case DType::F16: std::memcpy(&h, t.data + 2 * i, 2); out[i] = f32_to_bf16(f16_to_f32(h)); break;
      case DType::F32: std::memcpy(&f, t.data + 4 * i, 4); out[i] = f32_to_bf16(f); break;
      default: fail("tensor '", t.name, "': dtype ", dtype_name(t.dtype), " (expected f32, f16 or bf16)");
    }
  }
  return out;
}

std::vector<Matrix> model_matrices(const std::string& path) {
  const SourceModel m = open_source_model(path);
  std::vector<Matrix> out;
  for (const SourceTensor& t : m.tensors)
    if (t.shape.size() == 2)
      out.push_back({t.name, static_cast<uint32_t>(t.shape[0]), static_cast<uint32_t>(t.shape[1]), to_bf16(t)});
  return out;
}

Matrix gaussian(const std::string& name, uint32_t rows, uint32_t cols, uint64_t seed) {
  Matrix m{name, rows, cols, std::vector<uint16_t>(static_cast<size_t>(rows) * cols)};
  fill_gaussian_bf16(m.w.data(), m.w.size(), 0.0, 0.02, seed);
  return m;
}

// Order-0 entropy of the exponent field over all matrices, bits per weight.
double exponent_entropy(const std::vector<Matrix>& ms) {
  std::vector<double> hist(256, 0.0);
  double n = 0;
  for (const Matrix& m : ms)
    for (uint16_t v : m.w) hist[(v >> 7) & 0xFF] += 1, n += 1;
  double h = 0;
  for (double c : hist)
    if (c > 0) h -= c / n * std::log2(c / n);
  return h;
}

void report(const std::string& data, const std::vector<Matrix>& ms) {
  uint64_t weights = 0;
  for (const Matrix& m : ms) weights += m.w.size();
  const double h = exponent_entropy(ms);
  for (uint32_t group : kGroups) {
    FusedStats s;
    uint64_t rows = 0, rows_with_escapes = 0, most_in_a_row = 0;  // a warp per row pays for each escape
    for (const Matrix& m : ms) {
      const FusedMatrix f = encode_fused(m.w.data(), m.rows, m.cols, group);
      s += fused_stats(f);
      rows += f.rows;
      for (uint32_t r = 0; r < f.rows; ++r) {
        const uint64_t n = f.escape_start[r + 1] - f.escape_start[r];
        rows_with_escapes += n > 0;
        most_in_a_row = std::max(most_in_a_row, n);
      }
    }
    const std::string g = group == kRowGroup ? "row" : std::to_string(group);
    std::printf("| %s | %llu | %s | %.4f | %.4f%% | %.1f%% | %llu | %.3f |\n", data.c_str(),
                static_cast<unsigned long long>(weights), g.c_str(), s.bits_per_weight(), 100.0 * s.escape_rate(),
                100.0 * rows_with_escapes / rows, static_cast<unsigned long long>(most_in_a_row), 8.0 + h);
    std::fflush(stdout);
  }
}

void report_gaussian() {
  std::vector<Matrix> layer8b = {gaussian("q", 4096, 4096, 1), gaussian("k", 1024, 4096, 2), gaussian("v", 1024, 4096, 3),
                                 gaussian("o", 4096, 4096, 4), gaussian("gate", 14336, 4096, 5),
                                 gaussian("up", 14336, 4096, 6), gaussian("down", 4096, 14336, 7)};
  report("Gaussian std 0.02, one Llama-3.1-8B layer", layer8b);
  layer8b.clear();
  report("Gaussian std 0.02, 16384 rows of the 8B output projection (x 4096)", {gaussian("lm_head", 16384, 4096, 8)});
  report("Gaussian std 0.02, one TinyLlama-1.1B layer",
         {gaussian("q", 2048, 2048, 9), gaussian("k", 256, 2048, 10), gaussian("v", 256, 2048, 11),
          gaussian("o", 2048, 2048, 12), gaussian("gate", 5632, 2048, 13), gaussian("up", 5632, 2048, 14),
          gaussian("down", 2048, 5632, 15)});
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::printf("| data | weights | group | bits/weight | escapes | rows with escapes | most in a row | 8 + H |\n"
                "|---|---|---|---|---|---|---|---|\n");
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--gaussian") report_gaussian();
      else report(a + " (2-D tensors, to bf16)", model_matrices(a));
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fused-layout-stats: %s\n", e.what());
    return 1;
  }
}
