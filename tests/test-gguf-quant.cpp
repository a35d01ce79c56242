// Specification of quantized GGUF import: each block type dequantizes hand-made blocks to the
// values its layout defines (convert/gguf_dequant.h), bad sizes are refused, and a GGUF with
// quantized tensors imports, compresses and verifies exactly to its dequantized values, stored
// in the narrowest of bf16, f16 and f32 that holds them all.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>

#include "common/dtype.h"
#include "common/error.h"
#include "common/file_io.h"
#include "convert/gguf_dequant.h"
#include "convert/gguf_reader.h"
#include "convert/source_model.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Contains;

namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("expected a cllm::Error");
  return "";
}

void put_f16(std::vector<uint8_t>& b, size_t at, float x) {
  const uint16_t h = f32_to_f16(x);
  REQUIRE(f16_to_f32(h) == x);  // the test's scales are exact in f16
  std::memcpy(b.data() + at, &h, 2);
}

std::vector<float> dequantize(uint32_t type, const std::vector<uint8_t>& blocks, uint64_t n) {
  std::vector<float> w(n);
  dequantize_ggml(type, blocks.data(), blocks.size(), w.data(), n, "test");
  return w;
}

// w as the layout defines it: the products are exact, so the value is the exact result
// (computed in double, where these small operands are exact) rounded once to f32.
float expect(double exact) { return static_cast<float>(exact); }

void check_bits(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("weight " << i << ": got " << got[i] << ", want " << want[i]);
    REQUIRE(f32_bits(got[i]) == f32_bits(want[i]));
  }
}

// Packs 8 six-bit scales and mins into the 12 bytes of a Q4_K/Q5_K block: bytes 0-3 scales 0-3
// with the top 2 bits of scales 4-7 above them, bytes 4-7 the same for the mins, bytes 8-11
// the low 4 bits of scale (low nibble) and min (high nibble) 4-7.
void pack_k_scales(const int sc[8], const int mn[8], uint8_t* out) {
  for (int i = 0; i < 4; ++i) {
    out[i] = static_cast<uint8_t>(sc[i] | ((sc[i + 4] >> 4) << 6));
    out[i + 4] = static_cast<uint8_t>(mn[i] | ((mn[i + 4] >> 4) << 6));
    out[i + 8] = static_cast<uint8_t>((sc[i + 4] & 15) | ((mn[i + 4] & 15) << 4));
  }
}

}  // namespace

TEST_CASE("Q8_0: w = d * q for signed 8-bit q, negative scales, an all-zero block", "[gguf-quant]") {
  std::vector<uint8_t> b(3 * 34, 0);  // block 2 stays all zero
  std::vector<float> want(96, 0.0f);
  put_f16(b, 0, 0.5f);
  put_f16(b, 34, -2.0f);
  for (int j = 0; j < 32; ++j) {
    const int q0 = j == 31 ? 127 : 8 * j - 128, q1 = 15 - j;
    b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q0));
    b[36 + j] = static_cast<uint8_t>(static_cast<int8_t>(q1));
    want[j] = expect(0.5 * q0);
    want[32 + j] = expect(-2.0 * q1);
  }
  check_bits(dequantize(kGgmlQ8_0, b, 96), want);
}

TEST_CASE("Q4_0: w = d * (q - 8), low nibbles first, negative scales", "[gguf-quant]") {
  std::vector<uint8_t> b(2 * 18, 0);
  std::vector<float> want(64);
  put_f16(b, 0, 0.25f);
  put_f16(b, 18, -1.5f);
  for (int blk = 0; blk < 2; ++blk) {
    const double d = blk == 0 ? 0.25 : -1.5;
    for (int j = 0; j < 16; ++j) {
      b[18 * blk + 2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
      want[32 * blk + j] = expect(d * (j - 8));
      want[32 * blk + 16 + j] = expect(d * (7 - j));
    }
  }
  check_bits(dequantize(kGgmlQ4_0, b, 64), want);
}

TEST_CASE("Q4_1: w = d * q + m, a negative minimum, a subnormal scale whose sum rounds to even", "[gguf-quant]") {
  std::vector<uint8_t> b(2 * 20, 0);
  std::vector<float> want(64);
  const double tiny = std::ldexp(1.0, -24);  // the smallest f16 subnormal
  put_f16(b, 0, 0.5f);
  put_f16(b, 2, -1.5f);
  put_f16(b, 20, static_cast<float>(tiny));
  put_f16(b, 22, 1.0f);
  for (int j = 0; j < 16; ++j) {
    b[4 + j] = b[24 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
    want[j] = expect(0.5 * j - 1.5);
    want[16 + j] = expect(0.5 * (15 - j) - 1.5);
    // 1 + q * 2^-24: f32's spacing at 1 is 2^-23, so odd q lands halfway and rounds to even.
    want[32 + j] = expect(1.0 + j * tiny);
    want[48 + j] = expect(1.0 + (15 - j) * tiny);
  }
  const auto got = dequantize(kGgmlQ4_1, b, 64);
  check_bits(got, want);
  CHECK(got[33] == 1.0f);                                   // 1 + 2^-24: a tie, to even
  CHECK(got[35] == static_cast<float>(1.0 + std::ldexp(1.0, -22)));  // 1 + 3 * 2^-24: a tie, up to even
}

TEST_CASE("Q4_K and Q5_K: 8 sub-blocks of 32 with packed 6-bit scales and mins, negative dmin", "[gguf-quant]") {
  const int sc[8] = {1, 2, 63, 40, 33, 17, 60, 5};
  const int mn[8] = {0, 3, 7, 63, 48, 1, 20, 32};
  const double d = 0.5, dmin = -0.25;
  for (const bool five_bits : {false, true}) {
    INFO((five_bits ? "Q5_K" : "Q4_K"));
    const size_t qs_at = five_bits ? 48 : 16;
    std::vector<uint8_t> b(five_bits ? 176 : 144, 0);
    std::vector<float> want(256);
    put_f16(b, 0, static_cast<float>(d));
    put_f16(b, 2, static_cast<float>(dmin));
    pack_k_scales(sc, mn, b.data() + 4);
    for (int i = 0; i < 8; ++i)
      for (int l = 0; l < 32; ++l) {
        int q = (3 * l + i) & 15;
        b[qs_at + 32 * (i / 2) + l] |= static_cast<uint8_t>(q << (4 * (i % 2)));
        if (five_bits && (l + 2 * i) % 3 == 0) {
          b[16 + l] |= static_cast<uint8_t>(1 << i);  // qh: bit i of byte l
          q += 16;
        }
        want[32 * i + l] = expect(d * sc[i] * q - dmin * mn[i]);
      }
    check_bits(dequantize(five_bits ? kGgmlQ5_K : kGgmlQ4_K, b, 256), want);
  }
}

TEST_CASE("Q6_K: 16 sub-blocks of 16, signed 8-bit scales, 6-bit q split over ql and qh", "[gguf-quant]") {
  std::vector<uint8_t> b(210, 0);
  std::vector<float> want(256);
  const double d = -0.0625;
  put_f16(b, 208, static_cast<float>(d));
  for (int s = 0; s < 16; ++s) b[192 + s] = static_cast<uint8_t>(static_cast<int8_t>(17 * s - 128));  // -128..127
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const int i = 128 * h + 32 * k + l;
        const int q = (37 * i + 11) % 64;
        b[64 * h + 32 * (k % 2) + l] |= static_cast<uint8_t>((q & 15) << (4 * (k / 2)));
        b[128 + 32 * h + l] |= static_cast<uint8_t>((q >> 4) << (2 * k));
        want[i] = expect(d * (17 * (i / 16) - 128) * (q - 32));
      }
  check_bits(dequantize(kGgmlQ6_K, b, 256), want);
}

TEST_CASE("all-zero blocks of every type dequantize to zeros", "[gguf-quant]") {
  for (uint32_t type : {kGgmlQ8_0, kGgmlQ4_0, kGgmlQ4_1, kGgmlQ4_K, kGgmlQ5_K, kGgmlQ6_K}) {
    INFO(ggml_type_name(type));
    const GgmlBlockLayout L = ggml_quant_layout(type);
    for (float w : dequantize(type, std::vector<uint8_t>(2 * L.bytes, 0), 2 * L.elems)) REQUIRE(w == 0.0f);
  }
}

TEST_CASE("sizes that are not whole blocks are refused naming the type and block size", "[gguf-quant]") {
  CHECK_THAT(error_of([] { ggml_quant_bytes(kGgmlQ4_K, 100, 400, "'m.gguf': tensor 'x'"); }),
             Contains("'m.gguf': tensor 'x'") && Contains("100") && Contains("Q4_K") && Contains("256"));
  CHECK(ggml_quant_bytes(kGgmlQ4_1, 64, 640, "x") == 20 * 20);
  std::vector<uint8_t> blocks(144, 0);
  std::vector<float> out(256);
  CHECK_THAT(error_of([&] { dequantize_ggml(kGgmlQ4_K, blocks.data(), 144, out.data(), 255, "t"); }),
             Contains("255") && Contains("Q4_K") && Contains("256"));
  CHECK_THAT(error_of([&] { dequantize_ggml(kGgmlQ4_K, blocks.data(), 143, out.data(), 256, "t"); }),
             Contains("143 bytes") && Contains("expected 144"));
  CHECK_THAT(error_of([&] { dequantize_ggml(16, blocks.data(), 144, out.data(), 256, "t"); }), Contains("IQ2_XXS"));
}
