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
#include <map>
#include <random>

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

using test::error_of;
using test::write_bytes;

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
  std::mt19937 rng(45);
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
        int q = static_cast<int>(rng() % 16);
        b[qs_at + 32 * (i / 2) + l] |= static_cast<uint8_t>(q << (4 * (i % 2)));
        if (five_bits && rng() % 2) {
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
  std::mt19937 rng(6);  // q drawn at random: a regular pattern may repeat where a wrong index reads
  put_f16(b, 208, static_cast<float>(d));
  for (int s = 0; s < 16; ++s) b[192 + s] = static_cast<uint8_t>(static_cast<int8_t>(17 * s - 128));  // -128..127
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const int i = 128 * h + 32 * k + l;
        const int q = static_cast<int>(rng() % 64);
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

// ---------------------------------------------------------------------------------------------
// GGUF files with quantized tensors, rewritten from stories260K-f32.gguf

namespace {

struct Rewritten {
  uint32_t type = kGgmlF32;
  std::vector<uint8_t> bytes;
};
using Rewrite = std::function<Rewritten(const GGUFTensorInfo&, const std::vector<float>&)>;

template <class T>
void append(std::vector<uint8_t>& out, const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

// stories260K-f32.gguf (all F32) with every tensor replaced by rewrite(info, its values): the
// header and metadata are copied byte for byte, the tensor table and data written anew.
std::vector<uint8_t> rewrite_stories(const Rewrite& rewrite, std::map<std::string, Rewritten>* written) {
  const std::string path = test::shared_model("stories260K-f32.gguf");
  const GGUFFile g(path);
  const std::vector<uint8_t> src = read_file(path);
  std::vector<uint8_t> needle;  // the tensor table starts with the first tensor's name
  append(needle, static_cast<uint64_t>(g.tensors().front().name.size()));
  needle.insert(needle.end(), g.tensors().front().name.begin(), g.tensors().front().name.end());
  const auto table = std::search(src.begin() + 24, src.end(), needle.begin(), needle.end());
  REQUIRE(table != src.end());
  std::vector<uint8_t> out(src.begin(), table), data;
  const auto pad = [&](std::vector<uint8_t>& v) { v.resize((v.size() + g.alignment() - 1) / g.alignment() * g.alignment()); };
  for (const auto& t : g.tensors()) {
    REQUIRE(t.type == kGgmlF32);
    std::vector<float> values(t.size / 4);
    std::memcpy(values.data(), t.data, t.size);
    const Rewritten r = rewrite(t, values);
    append(out, static_cast<uint64_t>(t.name.size()));
    out.insert(out.end(), t.name.begin(), t.name.end());
    append(out, static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) append(out, d);
    append(out, r.type);
    append(out, static_cast<uint64_t>(data.size()));
    data.insert(data.end(), r.bytes.begin(), r.bytes.end());
    pad(data);
    (*written)[t.name] = r;
  }
  pad(out);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Simple quantizers (not ggml's: any valid blocks will do). Power-of-two scales make values
// d * q that bf16 (8 significant bits) and f16 (11) hold exactly.
float pow2_at_least(float x) { return x > 0 ? std::ldexp(1.0f, static_cast<int>(std::ceil(std::log2(x)))) : 1.0f; }

Rewritten quantize(uint32_t type, const std::vector<float>& v, bool pow2) {
  const GgmlBlockLayout L = ggml_quant_layout(type);
  Rewritten r{type, std::vector<uint8_t>(v.size() / L.elems * L.bytes, 0)};
  for (size_t blk = 0; blk < v.size() / 32; ++blk) {
    const float* x = v.data() + 32 * blk;
    uint8_t* b = r.bytes.data() + L.bytes * blk;
    const float lo = *std::min_element(x, x + 32), hi = *std::max_element(x, x + 32);
    const float amax = std::max(-lo, hi);
    const float d = type == kGgmlQ8_0 ? (pow2 ? pow2_at_least(amax / 127) : amax / 127)
                  : type == kGgmlQ4_0 ? pow2_at_least(amax / 7)
                                      : f16_to_f32(f32_to_f16((hi - lo) / 15));
    const float m = f16_to_f32(f32_to_f16(lo));
    const uint16_t dh = f32_to_f16(d), mh = f32_to_f16(m);
    std::memcpy(b, &dh, 2);
    for (int j = 0; j < 32; ++j) {
      if (type == kGgmlQ8_0) {
        b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::clamp(std::lround(x[j] / d), -127L, 127L)));
      } else {
        const long q = type == kGgmlQ4_0 ? std::lround(x[j] / d) + 8 : d > 0 ? std::lround((x[j] - m) / d) : 0;
        b[(type == kGgmlQ4_1 ? 4 : 2) + j % 16] |= static_cast<uint8_t>(std::clamp(q, 0L, 15L) << (4 * (j / 16)));
      }
    }
    if (type == kGgmlQ4_1) std::memcpy(b + 2, &mh, 2);
  }
  return r;
}

// Plain F32 tensor bytes, each value first rounded through `through` (F32: unchanged).
Rewritten plain(const std::vector<float>& v, DType through) {
  Rewritten r{kGgmlF32, std::vector<uint8_t>(v.size() * 4)};
  auto* out = reinterpret_cast<float*>(r.bytes.data());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = through == DType::BF16 ? bf16_to_f32(f32_to_bf16(v[i]))
           : through == DType::F16  ? f16_to_f32(f32_to_f16(v[i]))
                                    : v[i];
  return r;
}

bool quantizable(const GGUFTensorInfo& t) { return t.ne.size() == 2 && t.ne[0] % 32 == 0; }

// Every imported tensor holds exactly the values written (dequantized where quantized).
void check_imported_values(const SourceModel& m, const std::map<std::string, Rewritten>& written) {
  for (const SourceTensor& t : m.tensors) {
    INFO("tensor " << t.name);
    const Rewritten& r = written.at(t.name);
    const uint64_t n = t.size / dtype_size(t.dtype);
    std::vector<float> got(n), want(n);
    to_f32(t.dtype, t.data, got.data(), n);
    if (r.type == kGgmlF32) std::memcpy(want.data(), r.bytes.data(), n * 4);
    else dequantize_ggml(r.type, r.bytes.data(), r.bytes.size(), want.data(), n, t.name);
    REQUIRE(std::memcmp(got.data(), want.data(), n * 4) == 0);
  }
}

}  // namespace

TEST_CASE("a GGUF with Q8_0 and Q4_1 matrices imports to their dequantized values, matrices in f32", "[gguf-quant]") {
  test::TempDir dir;
  std::map<std::string, Rewritten> written;
  const auto bytes = rewrite_stories(
      [](const GGUFTensorInfo& t, const std::vector<float>& v) {
        if (!quantizable(t)) return plain(v, DType::F32);  // norms, and ffn_down (rows of 172)
        const bool embedding = t.name == "token_embd.weight" || t.name == "output.weight";
        return quantize(embedding ? kGgmlQ8_0 : kGgmlQ4_1, v, false);
      },
      &written);
  std::ofstream(dir.file("q.gguf"), std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                           static_cast<std::streamsize>(bytes.size()));
  const SourceModel m = open_source_model(dir.file("q.gguf"));
  check_imported_values(m, written);
  CHECK(m.find("blk.0.attn_q.weight")->dtype == DType::F32);   // d * q + m needs f32
  CHECK(m.find("blk.0.ffn_down.weight")->dtype == DType::F32);
  CHECK(m.find("blk.0.attn_norm.weight")->dtype == DType::F32);
  CHECK(m.config.tie_embeddings);  // output.weight, quantized alike, is still a copy of token_embd
  CHECK(m.extra_metadata["general.source.quantization"] == "Q4_1 (30 tensors), Q8_0 (2 tensors)");
  CHECK(m.extra_metadata["general.source.dequantized_dtype"] == "f32");
  CHECK(m.extra_metadata["general.source.file_bytes"] == bytes.size());

  const std::string cllm = dir.file("q.cllm");
  std::string out, err;
  REQUIRE(test::run_cli({"compress", dir.file("q.gguf"), cllm}, &out, &err) == 0);
  CHECK_THAT(err, Contains("quantized source: Q4_1 (30 tensors), Q8_0 (2 tensors)") && Contains("to f32"));
  REQUIRE(test::run_cli({"verify", cllm, dir.file("q.gguf")}, &out, &err) == 0);
  CHECK_THAT(out, Contains("matches the dequantized values of the quantized"));
  REQUIRE(test::run_cli({"info", cllm, "--no-tensors"}, &out, &err) == 0);
  CHECK_THAT(out, Contains("source: a quantized GGUF (Q4_1 (30 tensors), Q8_0 (2 tensors)), dequantized to f32"));
  REQUIRE(test::run_cli({"run", cllm, "-p", "Once upon a time", "-n", "8", "--temp", "0", "--device", "cpu"}, &out, &err) == 0);
  CHECK_THAT(out, Contains("Once upon a time"));  // f32 matrices run in the CPU engine
}

TEST_CASE("matrices are stored in bf16 or f16 when every value of every matrix fits exactly", "[gguf-quant]") {
  for (const DType want : {DType::BF16, DType::F16}) {
    INFO(dtype_name(want));
    test::TempDir dir;
    std::map<std::string, Rewritten> written;
    // bf16: Q8_0 with power-of-two scales (7-bit q) and ffn_down rounded to bf16. f16: Q4_0 with
    // power-of-two scales and ffn_down rounded to f16, which bf16 cannot hold.
    const auto bytes = rewrite_stories(
        [&](const GGUFTensorInfo& t, const std::vector<float>& v) {
          if (t.ne.size() == 1) return plain(v, DType::F32);
          if (!quantizable(t)) return plain(v, want);
          return quantize(want == DType::BF16 ? kGgmlQ8_0 : kGgmlQ4_0, v, true);
        },
        &written);
    std::ofstream(dir.file("q.gguf"), std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                             static_cast<std::streamsize>(bytes.size()));
    const SourceModel m = open_source_model(dir.file("q.gguf"));
    check_imported_values(m, written);
    for (const SourceTensor& t : m.tensors) {
      INFO(t.name);
      CHECK(t.dtype == (t.shape.size() == 2 ? want : DType::F32));  // norms keep their own dtype
    }
    CHECK(m.extra_metadata["general.source.dequantized_dtype"] == dtype_name(want));
  }
}
