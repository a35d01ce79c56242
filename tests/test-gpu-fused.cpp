// Specification of the fused layout's GPU kernels (cuda/fused_matvec.h) against the CPU
// reference (src/codec/fused_layout.h, fused_dot.h): the decoder gives back every bf16 bit
// pattern; the products for 1..8 tokens have, token by token, the bits of cuda::matvec over the
// decoded bf16 weights (the same reduction order, so fused mode can match full mode bit for
// bit); cuda::matvec has the bits of the CPU emulation of its order; and the GPU encoder
// writes the CPU encoder's planes byte for byte. [gpu] tests skip,
// visibly, where no CUDA device exists.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include "codec/fused_dot.h"
#include "codec/fused_layout.h"
#include "common/dtype.h"
#include "tests/test_util.h"
#if CLLM_HAVE_CUDA
#include "cuda/device_buffer.h"
#include "cuda/fused_encode.h"
#include "cuda/fused_matvec.h"
#include "cuda/kernels.h"
#endif

using namespace cllm;
using namespace cllm::codec::fused;

namespace {
#if CLLM_HAVE_CUDA

using cuda::DeviceBuffer;

// A fused matrix's planes in device memory and the view the kernels take.
struct DeviceFused {
  DeviceBuffer<uint8_t> bytes, bases;
  DeviceBuffer<uint32_t> codes, escape_start, escapes;
  cuda::FusedWeights view{};

  explicit DeviceFused(const FusedMatrix& m) {
    bytes.upload(m.bytes);
    bases.upload(m.bases);
    codes.upload(m.codes);
    escape_start.upload(m.escape_start);
    escapes.upload(m.escapes.empty() ? std::vector<uint32_t>{0} : m.escapes);
    view = {bytes.data(), codes.data(), bases.data(), escape_start.data(), escapes.data(),
            static_cast<int>(m.rows), static_cast<int>(m.cols), static_cast<int>(m.stride), static_cast<int>(m.group)};
  }
};

void sync() { CLLM_CUDA_CHECK(cudaDeviceSynchronize()); }

std::vector<uint32_t> bits_of(const std::vector<float>& v) {
  std::vector<uint32_t> b(v.size());
  std::memcpy(b.data(), v.data(), v.size() * 4);
  return b;
}

// Gaussian weights with escapes planted: tiny exponents (3) and a large one (140) in rows 0
// and 1; rows 2, 3 and 4 get 32, 33 and 200 escapes (a warp holds up to 32 of a row's entries
// in its lanes and searches global memory beyond), row 4's first chunk all 8.
std::vector<uint16_t> weights_with_escapes(uint32_t rows, uint32_t cols, uint64_t seed) {
  std::vector<uint16_t> w = test::gaussian_bf16(static_cast<size_t>(rows) * cols, 0.02f, seed);
  w[0] = static_cast<uint16_t>(3 << 7 | 5);
  w[cols / 2] = static_cast<uint16_t>(1u << 15 | 140 << 7 | 9);
  if (rows > 1) w[cols + cols - 1] = static_cast<uint16_t>(3 << 7);
  const uint32_t crowded[][2] = {{2, 32}, {3, 33}, {4, 200}};  // row, escapes
  for (const auto& [row, count] : crowded) {
    if (row >= rows) break;
    uint16_t* r = w.data() + static_cast<size_t>(row) * cols;
    for (uint32_t k = 0; k < std::min(count, cols); ++k)  // columns 37 k mod cols: distinct (cols prime to 37)
      r[static_cast<size_t>(k) * 37 % cols] = static_cast<uint16_t>((k & 1) << 15 | 3 << 7 | (k & 0x7F));
    if (count == 200)
      for (uint32_t c = 0; c < std::min(8u, cols); ++c) r[c] = static_cast<uint16_t>(2 << 7 | c);
  }
  return w;
}

struct Shape {
  uint32_t rows, cols;
  const char* what;
};
const Shape kShapes[] = {{64, 4096, "4096-wide rows"}, {37, 1000, "odd rows"}, {1536, 576, "SmolLM's ffn"},
                         {40, 14336, "long rows"},     {13, 77, "k % 8 != 0 (element path)"}, {3, 7, "tiny"}};

#endif
}  // namespace

TEST_CASE("gpu fused: the decoder gives back every bf16 pattern and odd shapes bit for bit", "[gpu][fused]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  std::vector<uint16_t> all(65536);
  std::iota(all.begin(), all.end(), uint16_t{0});
  struct Case {
    std::vector<uint16_t> w;
    uint32_t rows, cols, group;
  };
  std::vector<Case> cases = {{all, 256, 256, 64}, {all, 4096, 16, 0}, {all, 65536, 1, 8}, {all, 1, 65536, 0}};
  for (const Shape& s : kShapes) cases.push_back({weights_with_escapes(s.rows, s.cols, s.cols), s.rows, s.cols, 0});
  for (const Case& c : cases) {
    INFO(c.rows << " x " << c.cols << ", group " << c.group);
    const FusedMatrix m = encode_fused(c.w.data(), c.rows, c.cols, c.group);
    const DeviceFused d(m);
    DeviceBuffer<uint16_t> out(c.w.size());
    out.fill_bytes(0xFF);
    cuda::fused_decode(d.view, out.data(), nullptr);
    sync();
    REQUIRE(out.download() == c.w);
  }
#endif
}

TEST_CASE("gpu fused: one launch decodes a step's matrices, each into its own place", "[gpu][fused]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  // More jobs than one launch takes (kFusedDecodeJobs), of every shape above, and an empty one.
  std::vector<std::vector<uint16_t>> want;
  std::vector<std::unique_ptr<DeviceFused>> fused;
  std::vector<DeviceBuffer<uint16_t>> outs;
  std::vector<cuda::FusedDecodeJob> jobs;
  for (int round = 0; round < 2; ++round)
    for (const Shape& s : kShapes) {
      want.push_back(weights_with_escapes(s.rows, s.cols, 11 * s.cols + round));
      fused.push_back(std::make_unique<DeviceFused>(encode_fused(want.back().data(), s.rows, s.cols, round ? 64 : 0)));
      outs.emplace_back(want.back().size());
      outs.back().fill_bytes(0xFF);
    }
  for (size_t k = 0; k < fused.size(); ++k) jobs.push_back({fused[k]->view, outs[k].data()});
  REQUIRE(jobs.size() > static_cast<size_t>(cuda::kFusedDecodeJobs));
  cuda::FusedDecodeJob empty = jobs[0];
  empty.w.rows = 0;
  jobs.insert(jobs.begin() + 3, empty);
  cuda::fused_decode(jobs.data(), static_cast<int>(jobs.size()), nullptr);
  sync();
  for (size_t k = 0; k < want.size(); ++k) {
    INFO("job " << k << ": " << kShapes[k % std::size(kShapes)].what);
    REQUIRE(outs[k].download() == want[k]);
  }
#endif
}

TEST_CASE("gpu fused: products for 1..8 tokens have the bits of matvec over the decoded weights", "[gpu][fused]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  for (const Shape& s : kShapes) {
    const std::vector<uint16_t> w = weights_with_escapes(s.rows, s.cols, 7 * s.cols);
    const DeviceFused fused(encode_fused(w.data(), s.rows, s.cols));
    DeviceBuffer<uint16_t> d_w;
    d_w.upload(w);
    const std::vector<uint16_t> x = test::gaussian_bf16(static_cast<size_t>(cuda::kFusedMaxTokens) * s.cols, 1.0f, 3);
    DeviceBuffer<uint16_t> d_x;
    d_x.upload(x);
    const std::vector<float> y0(static_cast<size_t>(8) * s.rows, 0.25f);
    for (int n = 1; n <= 8; ++n)
      for (bool accumulate : {false, true}) {
        INFO(s.what << " (" << s.rows << " x " << s.cols << "), " << n << " tokens, accumulate " << accumulate);
        DeviceBuffer<float> got, want;
        got.upload(y0);
        want.upload(y0);
        cuda::fused_matvec(fused.view, d_x.data(), n, got.data(), static_cast<int>(s.rows), accumulate, nullptr);
        for (int t = 0; t < n; ++t)
          cuda::matvec(d_w.data(), DType::BF16, d_x.data() + static_cast<size_t>(t) * s.cols,
                       want.data() + static_cast<size_t>(t) * s.rows, static_cast<int>(s.rows),
                       static_cast<int>(s.cols), accumulate, nullptr);
        sync();
        REQUIRE(bits_of(got.download()) == bits_of(want.download()));
      }
  }
#endif
}

TEST_CASE("gpu fused: the three-job product gives each job the bits of fused_matvec alone", "[gpu][fused]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  // q, k, v of one token: rows of different counts, one x; the 16-byte and element paths
  for (uint32_t cols : {4096u, 576u, 77u}) {
    const uint32_t rows[3] = {64, 16, 9};
    std::vector<std::vector<uint16_t>> w;
    std::vector<std::unique_ptr<DeviceFused>> fused;
    for (int j = 0; j < 3; ++j) {
      w.push_back(weights_with_escapes(rows[j], cols, 5 + j));
      fused.push_back(std::make_unique<DeviceFused>(encode_fused(w[j].data(), rows[j], cols)));
    }
    DeviceBuffer<uint16_t> d_x;
    d_x.upload(test::gaussian_bf16(cols, 1.0f, 9));
    for (bool accumulate : {false, true}) {
      INFO(cols << " columns, accumulate " << accumulate);
      DeviceBuffer<float> got[3], want[3];
      cuda::FusedJobs jobs;
      for (int j = 0; j < 3; ++j) {
        const std::vector<float> y0(rows[j], 0.5f * j);
        got[j].upload(y0);
        want[j].upload(y0);
        jobs.job[j] = {fused[j]->view, got[j].data(), accumulate};
        cuda::fused_matvec(fused[j]->view, d_x.data(), 1, want[j].data(), static_cast<int>(rows[j]), accumulate, nullptr);
      }
      jobs.count = 3;
      cuda::fused_matvec(jobs, d_x.data(), nullptr);
      sync();
      for (int j = 0; j < 3; ++j) {
        INFO("job " << j);
        REQUIRE(bits_of(got[j].download()) == bits_of(want[j].download()));
      }
    }
  }
#endif
}

TEST_CASE("gpu fused: the gate/up product gives matvec_swiglu's bits over the decoded weights, SwiGLU and GeGLU",
          "[gpu][fused]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  for (const Shape& s : kShapes) {
    const std::vector<uint16_t> gate = weights_with_escapes(s.rows, s.cols, 21), up = weights_with_escapes(s.rows, s.cols, 22);
    const DeviceFused fused_gate(encode_fused(gate.data(), s.rows, s.cols)), fused_up(encode_fused(up.data(), s.rows, s.cols));
    DeviceBuffer<uint16_t> d_gate, d_up, d_x, got(s.rows), want(s.rows), two(s.rows);
    d_gate.upload(gate);
    d_up.upload(up);
    d_x.upload(test::gaussian_bf16(s.cols, 1.0f, 13));
    DeviceBuffer<float> g(s.rows), u(s.rows);
    for (bool gelu : {false, true}) {
      INFO(s.what << " (" << s.rows << " x " << s.cols << "), " << (gelu ? "GeGLU" : "SwiGLU"));
      const int rows = static_cast<int>(s.rows), cols = static_cast<int>(s.cols);
      cuda::fused_matvec_swiglu(fused_gate.view, fused_up.view, d_x.data(), got.data(), nullptr, gelu);
      cuda::matvec_swiglu(d_gate.data(), d_up.data(), DType::BF16, d_x.data(), want.data(), rows, cols, nullptr, false, gelu);
      // and the per-matrix route fused mode takes when only one of the two is fused
      cuda::fused_matvec(fused_gate.view, d_x.data(), 1, g.data(), rows, false, nullptr);
      cuda::fused_matvec(fused_up.view, d_x.data(), 1, u.data(), rows, false, nullptr);
      cuda::swiglu(g.data(), u.data(), two.data(), DType::BF16, s.rows, nullptr, gelu);
      sync();
      REQUIRE(got.download() == want.download());
      REQUIRE(two.download() == want.download());
    }
  }
#endif
}

TEST_CASE("gpu fused: matvec's bits are those of the CPU emulation of its order (codec/fused_dot.h)", "[gpu][fused]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  for (const Shape& s : kShapes) {
    INFO(s.what << " (" << s.rows << " x " << s.cols << ")");
    const std::vector<uint16_t> w = weights_with_escapes(s.rows, s.cols, s.rows);
    const std::vector<uint16_t> x = test::gaussian_bf16(s.cols, 1.0f, 11);
    DeviceBuffer<uint16_t> d_w, d_x;
    d_w.upload(w);
    d_x.upload(x);
    DeviceBuffer<float> y(s.rows);
    cuda::matvec(d_w.data(), DType::BF16, d_x.data(), y.data(), static_cast<int>(s.rows), static_cast<int>(s.cols),
                 false, nullptr);
    sync();
    std::vector<float> want(s.rows);
    for (uint32_t r = 0; r < s.rows; ++r) want[r] = matvec_order_dot(w.data() + static_cast<size_t>(r) * s.cols, x.data(), s.cols);
    REQUIRE(bits_of(y.download()) == bits_of(want));
  }
#endif
}

TEST_CASE("gpu fused: the GPU encoder writes the CPU encoder's planes byte for byte", "[gpu][fused]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  std::vector<uint16_t> all(65536);
  std::iota(all.begin(), all.end(), uint16_t{0});
  struct Case {
    std::vector<uint16_t> w;
    uint32_t rows, cols, group;
  };
  std::vector<Case> cases = {{all, 256, 256, 64}, {all, 4096, 16, 8}, {all, 65536, 1, 0}, {all, 1, 65536, 0}};
  for (const Shape& s : kShapes)
    for (uint32_t group : {0u, 8u, 64u}) cases.push_back({weights_with_escapes(s.rows, s.cols, s.rows), s.rows, s.cols, group});
  for (const Case& c : cases) {
    INFO(c.rows << " x " << c.cols << ", group " << c.group);
    const FusedMatrix want = encode_fused(c.w.data(), c.rows, c.cols, c.group);
    DeviceBuffer<uint16_t> d_w;
    d_w.upload(c.w);
    DeviceBuffer<uint8_t> bytes(want.bytes.size()), bases(want.bases.size());
    DeviceBuffer<uint32_t> codes(want.codes.size()), start(want.escape_start.size());
    const cuda::FusedPlanes planes{bytes.data(), codes.data(), bases.data(), start.data(), static_cast<int>(want.rows),
                                   static_cast<int>(want.cols), static_cast<int>(want.stride), static_cast<int>(want.group)};
    cuda::fused_encode_bases(d_w.data(), planes, nullptr);
    const std::vector<uint32_t> got_start = start.download();
    REQUIRE(got_start == want.escape_start);
    DeviceBuffer<uint32_t> escapes(std::max<size_t>(got_start.back(), 1));
    cuda::fused_encode_planes(d_w.data(), planes, escapes.data(), nullptr);
    sync();
    CHECK(bases.download() == want.bases);
    CHECK(bytes.download() == want.bytes);
    CHECK(codes.download() == want.codes);
    std::vector<uint32_t> got_escapes = escapes.download();
    got_escapes.resize(want.escapes.size());
    CHECK(got_escapes == want.escapes);
  }
#endif
}
