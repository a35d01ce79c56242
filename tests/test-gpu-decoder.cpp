// Specification of the GPU tile decoder (cuda/decode_tiles.cu): for every tile the CPU encoder
// can write, it produces exactly the bytes of the CPU reference decoder. [gpu] tests skip,
// visibly, where no CUDA device exists.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cstring>
#include <random>

#include "codec/codec.h"
#include "common/dtype.h"
#include "common/file_io.h"
#include "runtime/decode_plan.h"
#include "tests/test_util.h"
#if CLLM_HAVE_CUDA
#include "cuda/decode_tiles.h"
#include "cuda/device_buffer.h"
#endif

using namespace cllm;

namespace {
#if CLLM_HAVE_CUDA

struct TestTile {
  DType dtype;
  std::vector<uint8_t> values;  // n * dtype_size bytes: the expected output
  size_t n;
};

TestTile make_tile(DType t, size_t n, const std::string& kind, uint64_t seed) {
  TestTile tile{t, std::vector<uint8_t>(n * dtype_size(t)), n};
  std::mt19937_64 rng(seed);
  if (kind == "bits") {
    for (auto& b : tile.values) b = static_cast<uint8_t>(rng());
    return tile;
  }
  const float stddev = kind == "narrow" ? 1e-3f : kind == "wide" ? 1.0f : 0.02f;
  const auto f = test::gaussian_f32(n, stddev, seed);
  for (size_t i = 0; i < n; ++i) {
    if (t == DType::F32) std::memcpy(&tile.values[4 * i], &f[i], 4);
    if (t == DType::BF16) { const uint16_t h = f32_to_bf16(f[i]); std::memcpy(&tile.values[2 * i], &h, 2); }
    if (t == DType::F16) { const uint16_t h = f32_to_f16(f[i]); std::memcpy(&tile.values[2 * i], &h, 2); }
    if (t == DType::U8) tile.values[i] = static_cast<uint8_t>(f[i] * 1000);
  }
  return tile;
}

// Encodes the tiles on the CPU, lays them out like a .cllm group, decodes them all in one
// launch on the GPU, and returns the decoded bytes per tile (and the kernel's error flag).
std::vector<std::vector<uint8_t>> gpu_decode(const std::vector<TestTile>& tiles, int* error_flag,
                                             std::vector<uint8_t>* src_out = nullptr,
                                             const std::vector<uint8_t>* src_override = nullptr) {
  std::vector<uint8_t> src;
  std::vector<cuda::TileTask> tasks;
  uint64_t dst_bytes = 0;
  for (const auto& t : tiles) {
    std::vector<uint8_t> enc;
    codec::encode_tile(t.dtype, t.values.data(), t.n, enc);
    codec::parse_tile_layout(t.dtype, enc.data(), enc.size());  // what the runtime checks on the host
    src.resize((src.size() + 63) / 64 * 64);
    tasks.push_back({src.size(), dst_bytes, static_cast<uint32_t>(t.n), static_cast<uint32_t>(dtype_size(t.dtype))});
    src.insert(src.end(), enc.begin(), enc.end());
    dst_bytes = (dst_bytes + t.values.size() + 15) / 16 * 16;
  }
  if (src_out) *src_out = src;
  if (src_override) src = *src_override;
  const auto blocks = plan_blocks(tasks);
  cuda::DeviceBuffer<uint8_t> d_src, d_dst(dst_bytes + 16);
  cuda::DeviceBuffer<cuda::TileTask> d_tasks;
  cuda::DeviceBuffer<cuda::BlockTask> d_blocks;
  cuda::DeviceBuffer<int> d_error(1);
  d_src.upload(src);
  d_tasks.upload(tasks);
  d_blocks.upload(blocks);
  d_dst.fill_bytes(0xCD);  // poison: every output byte must be written
  d_error.fill_bytes(0);
  cuda::decode_tiles(d_src.data(), d_dst.data(), d_tasks.data(), d_blocks.data(),
                     static_cast<uint32_t>(blocks.size()), d_error.data(), nullptr);
  CLLM_CUDA_CHECK(cudaDeviceSynchronize());
  *error_flag = d_error.download()[0];
  const auto dst = d_dst.download();
  std::vector<std::vector<uint8_t>> out;
  for (size_t i = 0; i < tiles.size(); ++i)
    out.emplace_back(dst.begin() + static_cast<long>(tasks[i].dst),
                     dst.begin() + static_cast<long>(tasks[i].dst + tiles[i].values.size()));
  return out;
}
#endif

}  // namespace

TEST_CASE("GPU decoder reproduces every tile bit for bit: sizes x data x dtypes", "[gpu][decoder]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  const std::vector<size_t> sizes = {1, 31, 32, 33, 1000, 32767, 32768, 32769, 65535, 65537, 262144 + 5, 1u << 20};
  for (DType t : {DType::BF16, DType::F16, DType::F32}) {
    for (const char* kind : {"narrow", "normal", "wide", "bits"}) {
      std::vector<TestTile> tiles;
      uint64_t seed = 1;
      for (size_t n : sizes) tiles.push_back(make_tile(t, n, kind, seed++));
      int err = -1;
      const auto got = gpu_decode(tiles, &err);
      INFO("dtype " << dtype_name(t) << ", data " << kind);
      REQUIRE(err == 0);
      for (size_t i = 0; i < tiles.size(); ++i) {
        INFO("tile of " << tiles[i].n << " elements");
        REQUIRE(got[i] == tiles[i].values);
      }
    }
  }
#endif
}

TEST_CASE("GPU decoder handles special values, constant tiles and u8 raw tiles", "[gpu][decoder]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  std::vector<TestTile> tiles;
  // Every bf16 and f16 bit pattern, twice over in a shuffled order.
  for (DType t : {DType::BF16, DType::F16}) {
    TestTile tile{t, std::vector<uint8_t>(2 * 131072), 131072};
    std::vector<uint16_t> v(131072);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint16_t>(i);
    std::shuffle(v.begin(), v.end(), std::mt19937(7));
    std::memcpy(tile.values.data(), v.data(), tile.values.size());
    tiles.push_back(tile);
  }
  // f32 specials: zeros, subnormals, infinities, NaN payloads, mixed with normal values.
  {
    const uint32_t specials[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x807FFFFFu, 0x7F800000u, 0xFF800000u,
                                 0x7FC00000u, 0x7F800001u, 0xFFFFFFFFu, 0x3F800000u, 0x00400000u};
    TestTile tile{DType::F32, std::vector<uint8_t>(4 * 50000), 50000};
    for (size_t i = 0; i < tile.n; ++i) std::memcpy(&tile.values[4 * i], &specials[i % 11], 4);
    tiles.push_back(tile);
  }
  // Constant tiles (one symbol: frequency 2^P, no renormalisation at all), with sign and
  // mantissa still varying, in each float type; the decoder takes a separate path for them.
  {
    TestTile tile{DType::BF16, std::vector<uint8_t>(2 * 70000), 70000};
    for (size_t i = 0; i < tile.n; ++i) { tile.values[2 * i] = 0x80; tile.values[2 * i + 1] = 0x3F; }
    tiles.push_back(tile);
    TestTile half{DType::F16, std::vector<uint8_t>(2 * 65543), 65543};
    for (size_t i = 0; i < half.n; ++i) { half.values[2 * i] = static_cast<uint8_t>((i * 7) & 0x7F); half.values[2 * i + 1] = (i & 1) ? 0xBC : 0x3C; }
    tiles.push_back(half);
    TestTile single{DType::F32, std::vector<uint8_t>(4 * 40000), 40000};
    for (size_t i = 0; i < single.n; ++i) {
      const uint32_t v = 0x3F800000u | (static_cast<uint32_t>(i * 2654435761u) >> 9) | (i % 3 == 0 ? 0x80000000u : 0u);
      std::memcpy(&single.values[4 * i], &v, 4);
    }
    tiles.push_back(single);
  }
  tiles.push_back(make_tile(DType::U8, 12345, "bits", 3));
  tiles.push_back(make_tile(DType::U8, 100000, "bits", 4));
  int err = -1;
  const auto got = gpu_decode(tiles, &err);
  REQUIRE(err == 0);
  for (size_t i = 0; i < tiles.size(); ++i) {
    INFO("tile " << i << ": " << dtype_name(tiles[i].dtype) << " x " << tiles[i].n);
    REQUIRE(got[i] == tiles[i].values);
  }
#endif
}

TEST_CASE("GPU decoder reproduces the real stories260K weights in bf16, f16 and f32", "[gpu][decoder]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  const auto bin = read_file(test::shared_model("stories260K.bin"));
  const size_t n = (bin.size() - 28) / 4;
  std::vector<float> w(n);
  std::memcpy(w.data(), bin.data() + 28, n * 4);
  for (DType t : {DType::BF16, DType::F16, DType::F32}) {
    TestTile tile{t, std::vector<uint8_t>(n * dtype_size(t)), n};
    for (size_t i = 0; i < n; ++i) {
      if (t == DType::F32) std::memcpy(&tile.values[4 * i], &w[i], 4);
      else { const uint16_t h = t == DType::BF16 ? f32_to_bf16(w[i]) : f32_to_f16(w[i]); std::memcpy(&tile.values[2 * i], &h, 2); }
    }
    int err = -1;
    const auto got = gpu_decode({tile}, &err);
    INFO("dtype " << dtype_name(t));
    REQUIRE(err == 0);
    REQUIRE(got[0] == tile.values);
  }
#endif
}

TEST_CASE("GPU decoder flags a chunk whose states were corrupted", "[gpu][decoder]") {
  CLLM_REQUIRE_GPU();
#if CLLM_HAVE_CUDA
  const std::vector<TestTile> tiles = {make_tile(DType::BF16, 100000, "normal", 11)};
  std::vector<uint8_t> src;
  int err = -1;
  gpu_decode(tiles, &err, &src);
  REQUIRE(err == 0);
  const auto layout = codec::parse_tile_layout(DType::BF16, src.data(), src.size());
  std::vector<uint8_t> bad = src;
  for (uint32_t i = 0; i < 128; ++i) bad[layout.stream_offset + i] ^= 0x5A;  // chunk 0's states
  gpu_decode(tiles, &err, nullptr, &bad);
  CHECK(err != 0);

  // A constant tile's states never move, so any change to them must be caught as well.
  TestTile constant{DType::BF16, std::vector<uint8_t>(2 * 50000), 50000};
  for (size_t i = 0; i < constant.n; ++i) { constant.values[2 * i] = static_cast<uint8_t>(0x80 | (i & 0x7F)); constant.values[2 * i + 1] = (i & 1) ? 0xBF : 0x3F; }
  gpu_decode({constant}, &err, &src);
  REQUIRE(err == 0);
  const auto clayout = codec::parse_tile_layout(DType::BF16, src.data(), src.size());
  REQUIRE(clayout.sym_count == 1);
  bad = src;
  bad[clayout.stream_offset + 4 * 5] ^= 0x01;  // lane 5's state: 2^16 + 1
  gpu_decode({constant}, &err, nullptr, &bad);
  CHECK(err != 0);
#endif
}
