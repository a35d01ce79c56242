// Specification of the fused layout (src/codec/fused_layout.h, docs/codec.md "The fused layout
// (mode 3)"): every bf16 bit pattern round-trips in every shape and group size, escapes hold
// exactly the exponents outside their group's window, the checker refuses damaged layouts,
// and the reference product over the layout gives the bits of cuda/matvec.cu's order.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <numeric>
#include <random>

#include "codec/fused_dot.h"
#include "codec/fused_layout.h"
#include "common/dtype.h"
#include "common/error.h"
#include "tests/test_util.h"

using namespace cllm;
using namespace cllm::codec::fused;
using Catch::Contains;

namespace {

// Encodes w, checks the layout and decodes it: the bit patterns must come back.
FusedMatrix require_round_trip(const std::vector<uint16_t>& w, uint32_t rows, uint32_t cols, uint32_t group) {
  INFO(rows << " x " << cols << ", group " << group);
  FusedMatrix m = encode_fused(w.data(), rows, cols, group);
  REQUIRE_NOTHROW(check_fused(m));
  std::vector<uint16_t> back(w.size(), 0xDEAD);
  decode_fused(m, back.data());
  REQUIRE(back == w);
  return m;
}

std::vector<uint16_t> all_bf16_patterns() {
  std::vector<uint16_t> w(65536);
  std::iota(w.begin(), w.end(), uint16_t{0});
  return w;
}

uint16_t bf16_with_exponent(uint32_t sign, uint32_t exponent, uint32_t mantissa) {
  return static_cast<uint16_t>(sign << 15 | exponent << 7 | mantissa);
}

std::string error_of(const FusedMatrix& m) {
  try {
    check_fused(m);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("every bf16 bit pattern round-trips through the fused layout", "[fused]") {
  std::vector<uint16_t> w = all_bf16_patterns();
  const std::pair<uint32_t, uint32_t> shapes[] = {{256, 256}, {1, 65536}, {4096, 16}, {65536, 1}, {128, 512}};
  for (const auto& [rows, cols] : shapes)
    for (uint32_t group : {8u, 64u, 1u << 20}) require_round_trip(w, rows, cols, group);
  // Shuffled, so that every group mixes zeros, subnormals, Inf, NaN payloads and normal values.
  std::shuffle(w.begin(), w.end(), std::mt19937_64(17));
  for (uint32_t group : {8u, 32u, 64u, 256u}) require_round_trip(w, 512, 128, group);
  require_round_trip(w, 1024, 64, 0);
}

TEST_CASE("odd shapes: rows of any length, groups that do not divide the row", "[fused]") {
  const std::pair<uint32_t, uint32_t> shapes[] = {{1, 1}, {3, 7}, {5, 9}, {2, 13}, {7, 63}, {3, 65}, {4, 100}, {2, 1001}};
  uint64_t seed = 1;
  for (const auto& [rows, cols] : shapes)
    for (uint32_t group : {8u, 24u, 64u, 128u, 1u << 20}) {
      const std::vector<uint16_t> w = test::gaussian_bf16(static_cast<size_t>(rows) * cols, 0.02f, seed++);
      const FusedMatrix m = require_round_trip(w, rows, cols, group);
      CHECK(m.stride == (cols + 7) / 8 * 8);
      CHECK(m.group == std::min(group, m.stride));
    }
}

TEST_CASE("exponents outside the group's window are escapes listed with their real exponent", "[fused]") {
  // One row, two groups of 64: weights with exponents 118..124 (a window of 15 holds them all),
  // and in the second group four far away: zero/subnormal (0), 50, 200 and a NaN (255).
  std::vector<uint16_t> w(128);
  for (uint32_t c = 0; c < 128; ++c) w[c] = bf16_with_exponent(c & 1, 118 + c % 7, c % 128);
  const std::pair<uint32_t, uint32_t> far[] = {{70, 0}, {71, 50}, {100, 200}, {127, 255}};
  for (const auto& [col, exponent] : far) w[col] = bf16_with_exponent(1, exponent, 5);
  const FusedMatrix m = require_round_trip(w, 1, 128, 64);
  REQUIRE(m.escapes.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    CHECK(escape_col(m.escapes[i]) == far[i].first);
    CHECK(escape_exponent(m.escapes[i]) == far[i].second);
  }
  // Both windows cover 118..124: the bases are at most 118 and at least 124 - 14.
  for (uint8_t b : m.bases) CHECK((b <= 118 && b >= 110));
}

TEST_CASE("a whole row of escapes (Inf and NaN, exponent 255, lies above every window)", "[fused]") {
  const uint32_t rows = 3, cols = 77;
  std::vector<uint16_t> w = test::gaussian_bf16(rows * cols, 0.02f, 9);
  for (uint32_t c = 0; c < cols; ++c) w[cols + c] = bf16_with_exponent(c & 1, 255, c % 128);  // row 1
  const FusedMatrix m = require_round_trip(w, rows, cols, 32);
  CHECK(m.escape_start[2] - m.escape_start[1] == cols);
  for (uint32_t c = 0; c < cols; ++c) CHECK(fused_exponent(m, 1, c) == 255);
}

TEST_CASE("Gaussian weights (std 0.02, a 4096-wide row) cost about 12.1 bits and few escapes", "[fused]") {
  // Rows of Llama-3.1-8B's q projection; the measured table is in docs/codec.md.
  const uint32_t rows = 64, cols = 4096;
  const std::vector<uint16_t> w = test::gaussian_bf16(rows * cols, 0.02f, 3);
  for (uint32_t group : {64u, 1u << 20}) {
    const FusedMatrix m = require_round_trip(w, rows, cols, group);
    const FusedStats s = fused_stats(m);
    WARN("group " << m.group << ": " << s.bits_per_weight() << " bits/weight, escapes " << 100 * s.escape_rate()
                  << "% of weights");
    CHECK(s.bits_per_weight() > 12.0);
    CHECK(s.bits_per_weight() < 12.2);
    CHECK(s.escape_rate() < 0.001);  // about 2^-13 of N(0, s) lies 15 binades below its largest
  }
}

TEST_CASE("the fused layout's checker refuses damaged layouts, saying what is wrong", "[fused]") {
  std::vector<uint16_t> w = test::gaussian_bf16(4 * 21, 0.02f, 5);
  w[5] = 0x7FC1;  // a NaN: an escape in row 0
  const FusedMatrix good = encode_fused(w.data(), 4, 21, 8);
  REQUIRE(error_of(good).empty());
  REQUIRE(!good.escapes.empty());
  FusedMatrix m = good;
  m.codes[0] |= 0xF;  // weight 0 coded as an escape with no entry (unless it was one)
  if ((good.codes[0] & 0xF) == kEscape) m.codes[0] &= ~0xFu;
  CHECK_THAT(error_of(m), Contains("row 0 has"));
  m = good;
  m.escapes.pop_back();
  CHECK_THAT(error_of(m), Contains("escape offsets run from 0 to"));
  m = good;
  m.bases[1] = 241;
  CHECK_THAT(error_of(m), Contains("base 1 is 241 (expected <= 240)"));
  m = good;
  m.codes[2] |= 1u << 28;  // row 0's padding weight 23 (stride 24): code 1
  CHECK_THAT(error_of(m), Contains("padding weight 23"));
  m = good;
  m.group = 12;
  CHECK_THAT(error_of(m), Contains("group of 12 weights"));
  m = good;
  m.bytes.pop_back();
  CHECK_THAT(error_of(m), Contains("planes of 95 bytes"));
}

TEST_CASE("matvec's order: lanes take every 32nd chunk, and the warp sums in a butterfly", "[fused]") {
  // Exact in the order of cuda/matvec.cu, different from a plain left-to-right sum.
  std::vector<uint16_t> x(512, f32_to_bf16(1.0f)), w(512, 0);
  w[0] = f32_to_bf16(16777216.0f);        // chunk 0: lane 0
  w[8] = f32_to_bf16(1.0f);               // chunk 1: lane 1
  w[32 * 8] = f32_to_bf16(-16777216.0f);  // chunk 32: lane 0 again, cancelling chunk 0 before lane 1 adds
  CHECK(matvec_order_dot(w.data(), x.data(), 512) == 1.0f);  // left to right: 2^24 + 1 rounds to 2^24, then 0
  // Lanes 0, 16 and 1: the butterfly adds lane 16 to lane 0 first (2^24 + 1 rounds to 2^24),
  // then lane 1 (-2^24): 0, where a sum over lanes in order gives 1.
  std::fill(w.begin(), w.end(), 0);
  w[0] = f32_to_bf16(16777216.0f);
  w[16 * 8] = f32_to_bf16(1.0f);
  w[8] = f32_to_bf16(-16777216.0f);
  CHECK(matvec_order_dot(w.data(), x.data(), 512) == 0.0f);
  // A row not a multiple of 8 goes weight by weight: lane 0 holds weights 0 and 32.
  std::vector<uint16_t> x9(33, f32_to_bf16(1.0f)), w9(33, 0);
  w9[0] = f32_to_bf16(16777216.0f);
  w9[1] = f32_to_bf16(1.0f);
  w9[32] = f32_to_bf16(-16777216.0f);
  CHECK(matvec_order_dot(w9.data(), x9.data(), 33) == 1.0f);
}

TEST_CASE("the product over the fused layout has the bits of matvec's order over bf16", "[fused]") {
  const std::pair<uint32_t, uint32_t> shapes[] = {{5, 4096}, {3, 1000}, {4, 77}, {2, 8}, {3, 7}};
  uint64_t seed = 100;
  for (const auto& [rows, cols] : shapes) {
    std::vector<uint16_t> w = test::gaussian_bf16(static_cast<size_t>(rows) * cols, 0.02f, seed++);
    w[cols / 2] = bf16_with_exponent(0, 3, 1);  // an escape (a tiny subnormal-range weight) in row 0
    const std::vector<uint16_t> x = test::gaussian_bf16(cols, 1.0f, seed++);
    const FusedMatrix m = encode_fused(w.data(), rows, cols, 64);
    for (uint32_t r = 0; r < rows; ++r) {
      INFO(rows << " x " << cols << " row " << r);
      const float want = matvec_order_dot(w.data() + static_cast<size_t>(r) * cols, x.data(), cols);
      CHECK(f32_bits(fused_row_dot(m, r, x.data())) == f32_bits(want));
    }
  }
}
