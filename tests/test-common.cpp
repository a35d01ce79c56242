// Specification of src/common: checksums, float conversions, atomic output files, threads.
#include <catch2/catch.hpp>
#include <atomic>
#include <cmath>
#include <cstring>

#include "common/crc32c.h"
#include "common/dtype.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/host_memory.h"
#include "common/thread_pool.h"
#include "common/units.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Contains;

TEST_CASE("crc32c matches the standard check value and composes", "[common]") {
  const char* s = "123456789";
  CHECK(crc32c(s, 9) == 0xE3069283u);
  CHECK(crc32c(s + 4, 5, crc32c(s, 4)) == 0xE3069283u);
  CHECK(crc32c(nullptr, 0) == 0u);
  std::vector<uint8_t> big(100003);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 131 + 7);
  uint32_t split = crc32c(big.data() + 50001, big.size() - 50001, crc32c(big.data(), 50001));
  CHECK(split == crc32c(big.data(), big.size()));
}

TEST_CASE("f16 <-> f32 round-trips every f16 bit pattern", "[common]") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    const uint16_t back = f32_to_f16(f);
    if (std::isnan(f)) {
      REQUIRE((back & 0x7C00u) == 0x7C00u);
      REQUIRE((back & 0x3FFu) != 0u);
    } else {
      REQUIRE(back == h);
    }
  }
  CHECK(f32_to_f16(65520.0f) == 0x7C00u);  // rounds up to Inf
  CHECK(f32_to_f16(65504.0f) == 0x7BFFu);
  CHECK(f32_to_f16(1.0f + 1.0f / 2048) == 0x3C00u);  // tie to even
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
}

TEST_CASE("f32 -> bf16 rounds to nearest even and keeps NaN", "[common]") {
  CHECK(f32_to_bf16(1.0f) == 0x3F80u);
  CHECK(f32_to_bf16(f32_from_bits(0x3F808000u)) == 0x3F80u);  // tie, even stays
  CHECK(f32_to_bf16(f32_from_bits(0x3F818000u)) == 0x3F82u);  // tie, odd rounds up
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  CHECK(bf16_to_f32(0xC000u) == -2.0f);
}

TEST_CASE("to_f32 of zero values touches no pointer, null ones included (an empty tensor)", "[common]") {
  // CI's fuzzer found an empty f32 tensor reaching memcpy with null pointers: undefined even
  // for 0 bytes, and the sanitized build (-fno-sanitize-recover) stops on it.
  for (DType t : {DType::F32, DType::BF16, DType::F16}) REQUIRE_NOTHROW(to_f32(t, nullptr, nullptr, 0));
  const uint16_t one_bf16 = 0x3F80;
  float out = 0;
  to_f32(DType::BF16, &one_bf16, &out, 1);
  CHECK(out == 1.0f);
}

TEST_CASE("AtomicOutputFile appears only on commit and never replaces without overwrite", "[common]") {
  test::TempDir dir;
  const std::string path = dir.file("out.bin");
  {
    AtomicOutputFile f(path, false);
    f.write("abc", 3);
    CHECK_FALSE(path_exists(path));
  }
  CHECK_FALSE(path_exists(path));  // destroyed without commit: nothing left
  {
    AtomicOutputFile f(path, false);
    f.write("abc", 3);
    f.pad_to(8);
    CHECK(f.offset() == 8);
    f.commit();
  }
  CHECK(file_size(path) == 8);
  CHECK_THROWS_WITH(AtomicOutputFile(path, false), Catch::Contains("already exists") && Catch::Contains("--force"));
  {
    AtomicOutputFile f(path, true);
    f.write("xy", 2);
    f.commit();
  }
  CHECK(read_text_file(path) == "xy");
}

TEST_CASE("MappedFile and read_file name the path in errors", "[common]") {
  CHECK_THROWS_WITH(MappedFile("/nonexistent/x.cllm"), Catch::Contains("/nonexistent/x.cllm"));
  CHECK_THROWS_WITH(read_file("/nonexistent/y"), Catch::Contains("/nonexistent/y"));
  test::TempDir dir;
  CHECK_THROWS_WITH(MappedFile(dir.path()), Catch::Contains("directory"));
}

TEST_CASE("ThreadPool visits every index once and rethrows errors", "[common]") {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    std::vector<std::atomic<int>> hits(1000);
    pool.parallel_for(hits.size(), [&](size_t i) { hits[i]++; });
    for (auto& h : hits) REQUIRE(h.load() == 1);
    CHECK_THROWS_WITH(pool.parallel_for(10, [](size_t i) { if (i == 7) fail("item ", i); }), "item 7");
    pool.parallel_for(3, [](size_t) {});  // still usable after an error
  }
}

TEST_CASE("huge-page host memory is 2 MiB aligned and usable to its last byte, none for 0 bytes", "[common]") {
  for (uint64_t bytes : {uint64_t(1), uint64_t(5) << 20, (uint64_t(2) << 20) + 3}) {
    HostMemory m = allocate_huge_page_memory(bytes);
    REQUIRE(m != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(m.get()) % (uint64_t(2) << 20) == 0);
    std::memset(m.get(), 0x5A, bytes);  // ASan: the whole size is ours
    CHECK(m.get()[bytes - 1] == 0x5A);
  }
  CHECK(allocate_huge_page_memory(0) == nullptr);
}

TEST_CASE("sizes as users write them", "[common]") {
  CHECK(parse_size("2.5G") == 2684354560ull);
  CHECK(parse_size("512M") == 536870912ull);
  CHECK(parse_size("8GiB") == 8589934592ull);
  CHECK(parse_size("1000") == 1000ull);
  CHECK(parse_size("3gb") == 3221225472ull);
  CHECK(parse_size("1k") == 1024ull);
  CHECK_THROWS_WITH(parse_size("lots"), Contains("'lots' is not a size"));
  CHECK_THROWS_WITH(parse_size("2X"), Contains("unknown size unit 'X'"));
  CHECK_THROWS_WITH(parse_size("-1G"), Contains("not a positive size"));
  CHECK_THROWS_WITH(parse_size("0"), Contains("not a positive size"));
}

TEST_CASE("sizes as messages print them: GiB, MiB below one GiB", "[common]") {
  CHECK(format_gib(0) == "0.0 MiB");
  CHECK(format_gib(512ull << 20) == "512.0 MiB");
  CHECK(format_gib((1ull << 30) - 1) == "1024.0 MiB");
  CHECK(format_gib(1ull << 30) == "1.00 GiB");
  CHECK(format_gib(2684354560ull) == "2.50 GiB");
}
