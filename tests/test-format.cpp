// Specification of src/format: the .cllm writer lays tiles out exactly as docs/format.md says,
// and the reader refuses every broken file (in the spirit of llama.cpp's test-gguf) with a
// message that names the file and the part that is wrong.
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/crc32c.h"
#include "common/error.h"
#include "common/file_io.h"
#include "format/cllm_reader.h"
#include "format/cllm_writer.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Contains;
using Catch::StartsWith;

namespace {

// ---- A small model-shaped file: every dtype, multi-tile tensors, an empty tensor.

struct TensorSpec {
  std::string group, name;
  DType dtype;
  TensorCodec codec;
  std::vector<uint64_t> shape;
  std::vector<EncodedTile> tiles;
};

// Tiles are opaque to the format: a 16-byte stand-in header and pseudo-random payload.
EncodedTile make_tile(uint32_t n_elems, size_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  EncodedTile t;
  t.n_elems = n_elems;
  t.bytes.resize(bytes);
  for (auto& b : t.bytes) b = static_cast<uint8_t>(rng());
  if (bytes >= 8) std::memcpy(t.bytes.data() + 4, &n_elems, 4);
  return t;
}

std::vector<TensorSpec> standard_tensors() {
  using C = TensorCodec;
  return {
      {"global",
       "token_embd.weight",
       DType::BF16,
       C::exp_rans,
       {8, 16},
       {make_tile(100, 150, 1), make_tile(28, 72, 2)}},
      {"global", "output_norm.weight", DType::F32, C::none, {16}, {make_tile(16, 16 + 64, 3)}},
      {"global", "tokenizer.data", DType::U8, C::none, {37}, {make_tile(37, 16 + 37, 4)}},
      {"global", "empty.weight", DType::F16, C::none, {0, 16}, {make_tile(0, 16, 5)}},
      {"blk.0",
       "blk.0.attn_q.weight",
       DType::F16,
       C::exp_rans,
       {4, 3, 2, 5},
       {make_tile(50, 90, 6), make_tile(50, 97, 7), make_tile(20, 56, 8)}},
      {"blk.0", "blk.0.ffn_norm.weight", DType::F32, C::none, {16}, {make_tile(16, 80, 9)}},
      {"blk.1",
       "blk.1.ffn_up.weight",
       DType::BF16,
       C::exp_rans,
       {64, 64},
       {make_tile(2048, 16 + 4096, 10), make_tile(2048, 3001, 11)}},
      {"blk.1", "blk.1.attn_norm.weight", DType::BF16, C::none, {64}, {make_tile(64, 144, 12)}},
  };
}

nlohmann::json standard_metadata() {
  return {{"general.architecture", "llama"},
          {"general.name", "tiny \xC3\xA9t\xC3\xA9"},
          {"llama.block_count", 2},
          {"llama.rope.freq_base", 10000.5},
          {"llama.tie_embeddings", true},
          {"nested", {{"list", {1, 2.5, "three", nullptr, false}}, {"object", {{"k", "v"}}}}}};
}

void write_tensors(const std::string& path, const std::vector<TensorSpec>& specs,
                   const nlohmann::json& metadata, CllmIndex* written = nullptr) {
  CllmWriter w(path, false);
  std::string group;
  for (const auto& s : specs) {
    if (s.group != group) w.begin_group(group = s.group);
    w.add_tensor(s.name, s.dtype, s.codec, s.shape, s.tiles);
  }
  if (written) *written = w.index();
  w.finish(metadata);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  // A new file rather than a truncated one: ext4 flushes a file truncated and rewritten on
  // close (auto_da_alloc), which costs milliseconds per broken file.
  std::remove(path.c_str());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

void patch_le(std::vector<uint8_t>& b, size_t pos, uint64_t v, int n) {
  REQUIRE(pos + n <= b.size());
  for (int i = 0; i < n; ++i) b[pos + i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Byte positions inside a serialized index (docs/format.md, "Index").
size_t n_tensors_pos(const CllmIndex& idx) {
  size_t pos = 4;
  for (const auto& g : idx.groups) pos += 2 + g.name.size() + 16;
  return pos;
}
size_t tensor_pos(const CllmIndex& idx, size_t i) {
  size_t pos = n_tensors_pos(idx) + 4;
  for (size_t k = 0; k < i; ++k) {
    const auto& t = idx.tensors[k];
    pos += 2 + t.name.size() + 4 + 8 * t.shape.size() + 8 + 20 * t.tiles.size();
  }
  return pos;
}

// The standard file, and ways to rebuild it with one thing broken.
struct GoodFile {
  std::string path;
  std::vector<uint8_t> bytes;
  CllmHeader header;
  CllmIndex index;
  std::string metadata;

  explicit GoodFile(const test::TempDir& dir) : path(dir.file("good.cllm")) {
    write_tensors(path, standard_tensors(), standard_metadata());
    bytes = read_file(path);
    header = parse_header(bytes.data(), bytes.size());
    index = parse_index(bytes.data() + header.index_offset, header.index_size, header.data_offset,
                        header.data_size);
    metadata.assign(reinterpret_cast<const char*>(bytes.data() + header.metadata_offset),
                    header.metadata_size);
  }

  std::vector<uint8_t> with_header(const CllmHeader& h) const {
    auto b = bytes;
    const auto hb = serialize_header(h);
    std::copy(hb.begin(), hb.end(), b.begin());
    return b;
  }

  // The data section as it is, then the given metadata and index, with a header (offsets,
  // sizes, CRCs) that matches them: what is broken is only what the caller broke.
  std::vector<uint8_t> with_sections(const std::string& meta,
                                     const std::vector<uint8_t>& idx) const {
    CllmHeader h = header;
    h.metadata_size = meta.size();
    h.index_offset = h.metadata_offset + meta.size();
    h.index_size = idx.size();
    h.metadata_crc32c = crc32c(meta.data(), meta.size());
    h.index_crc32c = crc32c(idx.data(), idx.size());
    std::vector<uint8_t> b(bytes.begin(), bytes.begin() + static_cast<long>(h.metadata_offset));
    b.insert(b.end(), meta.begin(), meta.end());
    b.insert(b.end(), idx.begin(), idx.end());
    const auto hb = serialize_header(h);
    std::copy(hb.begin(), hb.end(), b.begin());
    return b;
  }
  std::vector<uint8_t> with_index(const CllmIndex& idx) const {
    return with_sections(metadata, serialize_index(idx));
  }
  std::vector<uint8_t> with_index_bytes(const std::vector<uint8_t>& idx) const {
    return with_sections(metadata, idx);
  }
  std::vector<uint8_t> with_metadata(const std::string& meta) const {
    return with_sections(meta, serialize_index(index));
  }
};

std::string open_error(const std::string& path, const CllmOpenOptions& opt = {}) {
  try {
    CllmFile::open(path, opt);
  } catch (const Error& e) {
    return e.what();
  }
  return "(opened without an error)";
}

// Writes bytes to a fresh file and checks that opening it fails with a cllm::Error whose message
// starts with the quoted path and contains every given part.
void expect_refused(const test::TempDir& dir, const std::vector<uint8_t>& bytes,
                    const std::vector<std::string>& parts) {
  static int counter = 0;
  const std::string path = dir.file("broken-" + std::to_string(++counter) + ".cllm");
  write_bytes(path, bytes);
  const std::string msg = open_error(path);
  INFO("message: " << msg);
  CHECK_THAT(msg, StartsWith("'" + path + "': "));
  for (const auto& p : parts) CHECK_THAT(msg, Contains(p));
}

bool dir_is_empty(const std::string& dir) {
  return std::filesystem::directory_iterator(dir) == std::filesystem::directory_iterator();
}

}  // namespace

// ---- Writing and reading back

TEST_CASE("round trip: layout, tile bytes, checksums, metadata", "[format]") {
  test::TempDir dir;
  const auto specs = standard_tensors();
  const std::string path = dir.file("m.cllm");
  CllmIndex written;
  write_tensors(path, specs, standard_metadata(), &written);
  const auto bytes = read_file(path);
  const CllmFile f = CllmFile::open(path, {true, 3});

  CHECK(f.path() == path);
  CHECK(f.version() == kCllmVersion);
  CHECK(f.metadata() == standard_metadata());
  REQUIRE(f.groups().size() == 3);
  REQUIRE(f.tensors().size() == specs.size());

  // The layout docs/format.md prescribes, recomputed here: groups at 4 KiB, tiles at 64 B.
  uint64_t pos = kDataOffset;
  std::vector<uint64_t> group_start;
  std::string group;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& s = specs[i];
    if (s.group != group) {
      if (!group_start.empty()) {
        const auto& g = f.groups()[group_start.size() - 1];
        CHECK(g.size == pos - g.offset);
      }
      group = s.group;
      pos = round_up(pos, kGroupAlign);
      group_start.push_back(pos);
      const auto& g = f.groups()[group_start.size() - 1];
      CHECK(g.name == s.group);
      CHECK(g.offset == pos);
    }
    const TensorInfo& t = f.tensors()[i];
    INFO("tensor " << s.name);
    CHECK(&f.get(s.name) == &t);
    CHECK(f.find(s.name) == &t);
    CHECK(t.name == s.name);
    CHECK(t.dtype == s.dtype);
    CHECK(t.codec == s.codec);
    CHECK(t.shape == s.shape);
    CHECK(t.group == group_start.size() - 1);
    REQUIRE(t.tiles.size() == s.tiles.size());
    for (size_t k = 0; k < t.tiles.size(); ++k) {
      pos = round_up(pos, kTileAlign);
      const TileInfo& tile = t.tiles[k];
      CHECK(tile.offset == pos);
      CHECK(tile.offset % kTileAlign == 0);
      CHECK(tile.size == s.tiles[k].bytes.size());
      CHECK(tile.n_elems == s.tiles[k].n_elems);
      CHECK(tile.crc32c == crc32c(s.tiles[k].bytes.data(), s.tiles[k].bytes.size()));
      REQUIRE(tile.offset + tile.size <= bytes.size());
      CHECK(std::equal(s.tiles[k].bytes.begin(), s.tiles[k].bytes.end(), f.tile_data(tile)));
      // Padding before the tile is zero.
      const TileInfo* prev = k ? &t.tiles[k - 1] : nullptr;
      if (prev)
        for (uint64_t b = prev->offset + prev->size; b < tile.offset; ++b) REQUIRE(bytes[b] == 0);
      pos += tile.size;
    }
    uint64_t stored = 0;
    for (const auto& x : s.tiles) stored += x.bytes.size();
    CHECK(t.stored_bytes() == stored);
  }
  CHECK(f.groups().back().size == pos - f.groups().back().offset);
  CHECK(f.find("nope") == nullptr);
  CHECK_THROWS_WITH(f.get("nope"),
                    StartsWith("'" + path + "'") && Contains("no tensor named 'nope'"));

  const auto& empty = f.get("empty.weight");
  CHECK(empty.n_elems() == 0);
  CHECK(empty.raw_bytes() == 0);
  CHECK(f.get("tokenizer.data").raw_bytes() == 37);
  CHECK(f.get("blk.1.ffn_up.weight").raw_bytes() == 64 * 64 * 2);

  // Header: data section up to the last tile, metadata right after, then the index, then EOF.
  const CllmHeader& h = f.header();
  CHECK(std::memcmp(bytes.data(), "CLLM", 4) == 0);
  CHECK(h.data_offset == 4096);
  CHECK(h.data_size == pos - 4096);
  CHECK(h.metadata_offset == pos);
  CHECK(h.index_offset == h.metadata_offset + h.metadata_size);
  CHECK(h.index_offset + h.index_size == bytes.size());
  CHECK(f.file_size() == bytes.size());
  CHECK(std::string(bytes.begin() + h.metadata_offset, bytes.begin() + h.index_offset) ==
        standard_metadata().dump());
  CHECK(h.metadata_crc32c == crc32c(bytes.data() + h.metadata_offset, h.metadata_size));
  CHECK(h.index_crc32c == crc32c(bytes.data() + h.index_offset, h.index_size));
  for (size_t b = kCllmHeaderBytes; b < kDataOffset; ++b) REQUIRE(bytes[b] == 0);

  // The writer's own index is the one in the file, byte for byte.
  CHECK(serialize_index(written) ==
        std::vector<uint8_t>(bytes.begin() + h.index_offset, bytes.end()));
  CHECK(serialize_index(f.index()) == serialize_index(written));

  f.verify_checksums(1);
  f.verify_checksums(4);
}

TEST_CASE("header and index serialization are exact little-endian layouts", "[format]") {
  CllmHeader h;
  h.data_size = 0x0102030405060708ull;
  h.metadata_offset = 0x1111;
  h.metadata_size = 0x22;
  h.index_offset = 0x3333;
  h.index_size = 0x44;
  h.metadata_crc32c = 0xAABBCCDDu;
  h.index_crc32c = 0x01020304u;
  const auto b = serialize_header(h);
  // clang-format off
  const std::vector<uint8_t> expect = {
      'C', 'L', 'L', 'M', 1, 0, 0, 0,                  // magic, version
      0x00, 0x10, 0, 0, 0, 0, 0, 0,                    // data_offset 4096
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // data_size
      0x11, 0x11, 0, 0, 0, 0, 0, 0,                    // metadata_offset
      0x22, 0, 0, 0, 0, 0, 0, 0,                       // metadata_size
      0x33, 0x33, 0, 0, 0, 0, 0, 0,                    // index_offset
      0x44, 0, 0, 0, 0, 0, 0, 0,                       // index_size
      0xDD, 0xCC, 0xBB, 0xAA, 0x04, 0x03, 0x02, 0x01}; // metadata_crc32c, index_crc32c
  // clang-format on
  CHECK(std::vector<uint8_t>(b.begin(), b.end()) == expect);

  CllmIndex idx;
  idx.groups.push_back({"g", 4096, 80});
  TensorInfo t;
  t.name = "t";
  t.dtype = DType::BF16;
  t.codec = TensorCodec::exp_rans;
  t.shape = {2, 3};
  t.tiles.push_back({4096 + 64, 16, 6, 0xDEADBEEFu});
  idx.tensors.push_back(t);
  // clang-format off
  const std::vector<uint8_t> expect_idx = {
      1, 0, 0, 0,                                       // n_groups
      1, 0, 'g',                                        // name_len, name
      0x00, 0x10, 0, 0, 0, 0, 0, 0,                     // offset 4096
      80, 0, 0, 0, 0, 0, 0, 0,                          // size
      1, 0, 0, 0,                                       // n_tensors
      1, 0, 't',                                        // name_len, name
      2, 1, 2, 0,                                       // bf16, exp-rans, n_dims, reserved
      2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,   // dims
      0, 0, 0, 0, 1, 0, 0, 0,                           // group, n_tiles
      0x40, 0x10, 0, 0, 0, 0, 0, 0,                     // tile offset 4160
      16, 0, 0, 0, 6, 0, 0, 0, 0xEF, 0xBE, 0xAD, 0xDE}; // size, n_elems, crc32c
  // clang-format on
  CHECK(serialize_index(idx) == expect_idx);
  const CllmIndex back = parse_index(expect_idx.data(), expect_idx.size(), 8192);
  CHECK(serialize_index(back) == expect_idx);
  CHECK(back.tensors[0].n_elems() == 6);
}

TEST_CASE("an empty last group and a group with only an empty tensor", "[format]") {
  test::TempDir dir;
  const std::string path = dir.file("e.cllm");
  {
    CllmWriter w(path, false);
    w.begin_group("global");
    w.add_tensor("a", DType::F32, TensorCodec::none, {3}, {make_tile(3, 28, 1)});
    w.begin_group("blk.0");
    w.add_tensor("b", DType::F32, TensorCodec::none, {0}, {});
    w.begin_group("blk.1");
    w.finish(nlohmann::json::object());
  }
  const auto f = CllmFile::open(path);
  REQUIRE(f.groups().size() == 3);
  CHECK(f.groups()[0].size == 28);
  CHECK(f.groups()[1].offset == 8192);
  CHECK(f.groups()[1].size == 0);
  CHECK(f.groups()[2].offset == 8192);
  CHECK(f.groups()[2].size == 0);
  CHECK(f.header().data_size == 4096);
  CHECK(f.get("b").tiles.empty());
  CHECK(f.metadata() == nlohmann::json::object());
}

// ---- The writer: atomic, and strict about what it is given

TEST_CASE("writer leaves no file when destroyed or failing before finish", "[format]") {
  test::TempDir dir;
  const std::string path = dir.file("x.cllm");
  {
    CllmWriter w(path, false);
    w.begin_group("global");
    w.add_tensor("a", DType::F32, TensorCodec::none, {3}, {make_tile(3, 28, 1)});
    CHECK(w.bytes_written() == 4096 + 28);
  }
  CHECK_FALSE(path_exists(path));
  CHECK(dir_is_empty(dir.path()));

  try {
    CllmWriter w(path, false);
    w.begin_group("global");
    w.add_tensor("a", DType::F32, TensorCodec::none, {4}, {make_tile(3, 28, 1)});  // throws
    w.finish(nlohmann::json::object());
    FAIL("add_tensor accepted a shape that does not match its tiles");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("the tiles hold 3 elements, the shape has 4"));
  }
  CHECK(dir_is_empty(dir.path()));

  try {
    CllmWriter w(path, false);
    w.begin_group("global");
    w.finish(nlohmann::json::array());  // throws: metadata must be an object
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("metadata must be a JSON object"));
  }
  CHECK(dir_is_empty(dir.path()));

  try {
    CllmWriter w(path, false);
    w.begin_group("global");
    w.finish({{"bad", std::string("\xFF\xFE")}});  // throws: not UTF-8, cannot be JSON
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("metadata cannot be written as JSON"));
  }
  CHECK(dir_is_empty(dir.path()));
}

TEST_CASE("writer refuses to overwrite without the flag", "[format]") {
  test::TempDir dir;
  const std::string path = dir.file("x.cllm");
  write_tensors(path, standard_tensors(), standard_metadata());
  const auto before = read_file(path);
  CHECK_THROWS_WITH(CllmWriter(path, false), Contains(path) && Contains("already exists"));
  CHECK(read_file(path) == before);
  {
    CllmWriter w(path, true);
    w.begin_group("only");
    w.add_tensor("t", DType::U8, TensorCodec::none, {5}, {make_tile(5, 21, 3)});
    w.finish({{"general.name", "replaced"}});
  }
  const auto f = CllmFile::open(path);
  CHECK(f.metadata()["general.name"] == "replaced");
  CHECK(f.tensors().size() == 1);
}

TEST_CASE("writer validates its inputs with clear errors", "[format]") {
  test::TempDir dir;
  const std::string path = dir.file("v.cllm");
  CllmWriter w(path, false);
  const std::vector<EncodedTile> one = {make_tile(4, 32, 1)};
  auto add = [&](const std::string& name, DType dt, TensorCodec c, std::vector<uint64_t> shape,
                 const std::vector<EncodedTile>& tiles) {
    w.add_tensor(name, dt, c, shape, tiles);
  };

  CHECK_THROWS_WITH(add("a", DType::F32, TensorCodec::none, {4}, one),
                    StartsWith("'" + path + "'") && Contains("add_tensor before begin_group"));
  CHECK_THROWS_WITH(w.begin_group(""), Contains("group name") && Contains("empty"));
  CHECK_THROWS_WITH(w.begin_group(std::string(257, 'g')), Contains("257 bytes long"));
  w.begin_group("global");
  CHECK_THROWS_WITH(w.begin_group("global"), Contains("group 'global' already exists"));
  CHECK_THROWS_WITH(add("", DType::F32, TensorCodec::none, {4}, one), Contains("empty"));
  CHECK_THROWS_WITH(add(std::string(300, 'n'), DType::F32, TensorCodec::none, {4}, one),
                    Contains("300 bytes long"));
  CHECK_THROWS_WITH(add("bad\xC0\xAF", DType::F32, TensorCodec::none, {4}, one),
                    Contains("not valid UTF-8"));
  CHECK_THROWS_WITH(add(std::string("nul\0x", 5), DType::F32, TensorCodec::none, {4}, one),
                    Contains("tensor 'nul\\x00x'") && Contains("control byte 0x00 at byte 3"));
  CHECK_THROWS_WITH(add("tab\t", DType::F32, TensorCodec::none, {4}, one),
                    Contains("control byte 0x09 at byte 3"));
  CHECK_THROWS_WITH(
      add("a", DType::F32, TensorCodec::none, {5}, one),
      Contains("tensor 'a'") && Contains("the tiles hold 4 elements, the shape has 5"));
  CHECK_THROWS_WITH(add("a", DType::F32, TensorCodec::none, {1, 1, 1, 1, 4}, one),
                    Contains("5 dimensions, expected 1..4"));
  CHECK_THROWS_WITH(add("a", DType::F32, TensorCodec::none, {}, one), Contains("0 dimensions"));
  CHECK_THROWS_WITH(add("a", DType::F32, TensorCodec::none, {1ull << 40, 1ull << 10}, one),
                    Contains("below 2^48"));
  CHECK_THROWS_WITH(add("a", DType::U8, TensorCodec::exp_rans, {4}, one),
                    Contains("u8 tensors are stored raw"));
  CHECK_THROWS_WITH(add("a", static_cast<DType>(7), TensorCodec::none, {4}, one),
                    Contains("unknown dtype 7"));
  CHECK_THROWS_WITH(add("a", DType::F32, static_cast<TensorCodec>(9), {4}, one),
                    Contains("unknown codec 9"));
  // None of the refused calls wrote anything.
  CHECK(w.bytes_written() == 4096);
  add("a", DType::F32, TensorCodec::none, {2, 2}, one);
  CHECK_THROWS_WITH(add("a", DType::F32, TensorCodec::none, {4}, one),
                    Contains("tensor 'a'") && Contains("already added"));
  w.finish(nlohmann::json::object());
  CHECK_THROWS_WITH(w.begin_group("x"), Contains("after finish"));
  CHECK_THROWS_WITH(w.finish(nlohmann::json::object()), Contains("after finish"));
  CHECK(CllmFile::open(path).tensors().size() == 1);
}

TEST_CASE("writer refuses to finish a file without groups", "[format]") {
  test::TempDir dir;
  CllmWriter w(dir.file("n.cllm"), false);
  CHECK_THROWS_WITH(w.finish(nlohmann::json::object()), Contains("at least one group"));
}

// ---- The broken-file matrix

TEST_CASE("reader refuses files too short to hold a header", "[format]") {
  test::TempDir dir;
  expect_refused(dir, {}, {"file is 0 bytes", "64-byte header"});
  expect_refused(dir, std::vector<uint8_t>(10, 'C'), {"file is 10 bytes", "64-byte header"});
  std::vector<uint8_t> ten = {'C', 'L', 'L', 'M', 1, 0, 0, 0, 0, 0};
  expect_refused(dir, ten, {"file is 10 bytes"});
}

TEST_CASE("reader refuses a broken header", "[format]") {
  test::TempDir dir;
  const GoodFile good(dir);
  const CllmHeader& g = good.header;
  const uint64_t size = good.bytes.size();

  SECTION("wrong magic") {
    auto b = good.bytes;
    std::memcpy(b.data(), "GGUF", 4);
    expect_refused(dir, b, {"magic: expected 'CLLM'", "found 47 47 55 46", "not a .cllm file"});
  }
  SECTION("newer version") {
    CllmHeader h = g;
    h.version = 7;
    expect_refused(dir, good.with_header(h),
                   {"format version 7 is newer than this codecllm supports (1): upgrade codecllm"});
  }
  SECTION("version 0") {
    CllmHeader h = g;
    h.version = 0;
    expect_refused(dir, good.with_header(h), {"version: expected 1..1, found 0"});
  }
  SECTION("data_offset not 4096") {
    CllmHeader h = g;
    h.data_offset = 8192;
    expect_refused(dir, good.with_header(h), {"data_offset: expected 4096, found 8192"});
  }
  SECTION("data section past the end of the file") {
    CllmHeader h = g;
    h.data_size = size;
    expect_refused(dir, good.with_header(h),
                   {"header: data section", "ends past the end of the file"});
    h.data_size = UINT64_MAX - 100;  // offset + size overflows
    expect_refused(dir, good.with_header(h),
                   {"header: data section", "ends past the end of the file"});
  }
  SECTION("metadata overlaps the data section") {
    CllmHeader h = g;
    h.metadata_offset = g.metadata_offset - 64;
    expect_refused(dir, good.with_header(h),
                   {"metadata_offset: expected >= " + std::to_string(g.data_offset + g.data_size),
                    "found " + std::to_string(h.metadata_offset)});
  }
  SECTION("metadata too large or out of bounds") {
    CllmHeader h = g;
    h.metadata_size = (64ull << 20) + 1;
    expect_refused(dir, good.with_header(h), {"metadata_size: expected at most 67108864 bytes"});
    h = g;
    h.metadata_size = size;
    expect_refused(dir, good.with_header(h), {"header: metadata", "ends past the end of the file"});
    h = g;
    h.metadata_offset = UINT64_MAX - 3;
    expect_refused(dir, good.with_header(h), {"header: metadata", "ends past the end of the file"});
  }
  SECTION("index overlaps the metadata") {
    CllmHeader h = g;
    h.index_offset = g.metadata_offset + 1;
    expect_refused(
        dir, good.with_header(h),
        {"index_offset: expected >= " + std::to_string(g.metadata_offset + g.metadata_size)});
  }
  SECTION("index too large or out of bounds") {
    CllmHeader h = g;
    h.index_size = (1ull << 30) + 1;
    expect_refused(dir, good.with_header(h), {"index_size: expected at most 1073741824 bytes"});
    h = g;
    h.index_size = g.index_size + 1;
    expect_refused(dir, good.with_header(h), {"header: index", "ends past the end of the file"});
    h = g;
    h.index_offset = UINT64_MAX - 3;
    expect_refused(dir, good.with_header(h), {"header: index", "ends past the end of the file"});
  }
  SECTION("trailing bytes after the index") {
    auto b = good.bytes;
    b.push_back(0);
    expect_refused(dir, b, {"expected the file to end with the index", "1 trailing bytes"});
    CllmHeader h = g;
    h.index_size = g.index_size - 1;
    expect_refused(dir, good.with_header(h), {"1 trailing bytes"});
  }
}

TEST_CASE("reader refuses a file truncated anywhere", "[format]") {
  test::TempDir dir;
  const GoodFile good(dir);
  const CllmHeader& g = good.header;
  const uint64_t size = good.bytes.size();
  const uint64_t data_end = g.data_offset + g.data_size;
  const auto& q = good.index.tensors[4];  // blk.0.attn_q.weight, 3 tiles
  std::vector<uint64_t> lengths = {4095,
                                   4096,
                                   4097,
                                   q.tiles[0].offset,
                                   q.tiles[1].offset + 5,
                                   q.tiles[2].offset + q.tiles[2].size,
                                   data_end - 1,
                                   data_end,
                                   data_end + 1,
                                   g.metadata_offset + g.metadata_size / 2,
                                   g.index_offset - 1,
                                   g.index_offset,
                                   g.index_offset + 1,
                                   g.index_offset + g.index_size / 2,
                                   size - 1};
  for (uint64_t n = 0; n <= 2 * kCllmHeaderBytes; ++n)
    lengths.push_back(n);  // every header boundary
  for (uint64_t n = 128; n < size; n += 211) lengths.push_back(n);
  for (uint64_t n : lengths) {
    INFO("truncated to " << n << " of " << size << " bytes");
    REQUIRE(n < size);
    const std::vector<uint8_t> b(good.bytes.begin(), good.bytes.begin() + static_cast<long>(n));
    const char* part = n < kCllmHeaderBytes ? "too small for the 64-byte header"
                       : n < data_end       ? "header: data section"
                       : n < g.index_offset ? "header: metadata"
                                            : "header: index";
    expect_refused(dir, b, {part, "truncated"});
  }
}

TEST_CASE("reader refuses broken metadata", "[format]") {
  test::TempDir dir;
  const GoodFile good(dir);
  SECTION("not JSON") {
    expect_refused(dir, good.with_metadata("{\"general.name\": "), {"metadata is not valid JSON"});
    expect_refused(dir, good.with_metadata(""), {"metadata is not valid JSON"});
    expect_refused(dir, good.with_metadata("{\"a\": \"\xFF\"}"), {"metadata is not valid JSON"});
    expect_refused(dir, good.with_metadata("{} {}"), {"metadata is not valid JSON"});
  }
  SECTION("not an object") {
    expect_refused(dir, good.with_metadata("[1, 2]"),
                   {"metadata: expected a JSON object, found array"});
    expect_refused(dir, good.with_metadata("\"llama\""),
                   {"metadata: expected a JSON object, found string"});
  }
  SECTION("bad CRC") {
    auto b = good.bytes;
    b[good.header.metadata_offset + 3] ^= 0x01;
    expect_refused(dir, b, {"metadata: checksum mismatch", "file corrupted"});
  }
}

TEST_CASE("reader refuses a broken index", "[format]") {
  test::TempDir dir;
  const GoodFile good(dir);
  const CllmIndex& gi = good.index;
  const auto ib = serialize_index(gi);
  const size_t nt_pos = n_tensors_pos(gi);

  SECTION("bad CRC") {
    auto b = good.bytes;
    b[good.header.index_offset + 5] ^= 0x40;
    expect_refused(dir, b, {"index: checksum mismatch", "file corrupted"});
  }
  SECTION("n_groups 0, huge, or more than the bytes can hold") {
    auto x = ib;
    patch_le(x, 0, 0, 4);
    expect_refused(dir, good.with_index_bytes(x), {"index: n_groups: expected 1..65536, found 0"});
    patch_le(x, 0, 0xFFFFFFFFu, 4);
    expect_refused(dir, good.with_index_bytes(x),
                   {"index: n_groups: expected 1..65536, found 4294967295"});
    patch_le(x, 0, 60000, 4);
    expect_refused(dir, good.with_index_bytes(x),
                   {"index: n_groups 60000 needs at least 1140000 bytes"});
  }
  SECTION("n_tensors huge or more than the bytes can hold: refused before allocating") {
    auto x = ib;
    patch_le(x, nt_pos, 0xFFFFFFFFu, 4);
    expect_refused(dir, good.with_index_bytes(x),
                   {"index: n_tensors: expected at most 1000000, found 4294967295"});
    patch_le(x, nt_pos, 999999, 4);
    expect_refused(dir, good.with_index_bytes(x),
                   {"index: n_tensors 999999 needs at least 22999977 bytes"});
  }
  SECTION("name lengths") {
    CllmIndex x = gi;
    x.groups[1].name = std::string(300, 'g');
    expect_refused(dir, good.with_index(x),
                   {"index: group 1: name_len: expected 1..256, found 300"});
    x = gi;
    x.tensors[2].name = "";
    expect_refused(dir, good.with_index(x),
                   {"index: tensor 2: name_len: expected 1..256, found 0"});
    auto y = ib;
    patch_le(y, tensor_pos(gi, 7), 0xFFFF, 2);  // the last tensor's name runs past the index
    expect_refused(dir, good.with_index_bytes(y),
                   {"index: tensor 7", "name_len: expected 1..256, found 65535"});
    x = gi;
    x.tensors[1].name = "out\xED\xA0\x80";  // a UTF-16 surrogate encoded in UTF-8
    expect_refused(dir, good.with_index(x), {"index: tensor 1", "not valid UTF-8"});
    x = gi;
    x.groups[0].name = "glo\nbal";
    expect_refused(dir, good.with_index(x),
                   {"index: group 0: name: contains the control byte 0x0A at byte 3"});
  }
  SECTION("duplicate names") {
    CllmIndex x = gi;
    x.tensors[5].name = x.tensors[4].name;
    expect_refused(
        dir, good.with_index(x),
        {"index: tensor 5 'blk.0.attn_q.weight': duplicate tensor name (also tensor 4)"});
    x = gi;
    x.groups[2].name = "global";
    expect_refused(dir, good.with_index(x),
                   {"index: group 2 'global': duplicate group name (also group 0)"});
  }
  SECTION("groups misaligned, outside the data section, overlapping") {
    CllmIndex x = gi;
    x.groups[1].offset += 16;
    expect_refused(dir, good.with_index(x),
                   {"index: group 1 'blk.0'", "is not a multiple of 4096"});
    x = gi;
    x.groups[0].offset = 0;
    expect_refused(dir, good.with_index(x), {"index: group 0 'global'", "before the data section"});
    x = gi;
    x.groups[2].size += 4096;
    expect_refused(dir, good.with_index(x),
                   {"index: group 2 'blk.1'", "ends past the data section"});
    x = gi;
    x.groups[2].size = UINT64_MAX;
    expect_refused(dir, good.with_index(x),
                   {"index: group 2 'blk.1'", "ends past the data section"});
    x = gi;
    x.groups[1].offset = x.groups[0].offset;
    expect_refused(dir, good.with_index(x),
                   {"index: group 1 'blk.0'", "overlaps or precedes group 'global'"});
  }
  SECTION("n_dims 0 and 5, reserved byte, dims product overflow") {
    CllmIndex x = gi;
    x.tensors[1].shape = {};
    expect_refused(dir, good.with_index(x),
                   {"index: tensor 1 'output_norm.weight': n_dims: expected 1..4, found 0"});
    x.tensors[1].shape = {1, 1, 1, 1, 16};
    expect_refused(dir, good.with_index(x),
                   {"index: tensor 1 'output_norm.weight': n_dims: expected 1..4, found 5"});
    auto y = ib;
    const size_t p = tensor_pos(gi, 1) + 2 + gi.tensors[1].name.size();
    y[p + 3] = 1;
    expect_refused(dir, good.with_index_bytes(y),
                   {"index: tensor 1", "reserved byte: expected 0, found 1"});
    x = gi;
    x.tensors[1].shape = {1ull << 32, 1ull << 32};  // 2^64: overflows a u64
    expect_refused(dir, good.with_index(x), {"index: tensor 1", "below 2^48"});
    x.tensors[1].shape = {1ull << 48};
    expect_refused(dir, good.with_index(x), {"index: tensor 1", "below 2^48"});
    x.tensors[1].shape = {1ull << 24, 1ull << 24};
    expect_refused(dir, good.with_index(x), {"index: tensor 1", "below 2^48"});
  }
  SECTION("unknown dtype and codec; u8 with a codec") {
    CllmIndex x = gi;
    x.tensors[0].dtype = static_cast<DType>(9);
    expect_refused(dir, good.with_index(x),
                   {"index: tensor 0 'token_embd.weight': dtype: expected 0..3", "found 9"});
    x = gi;
    x.tensors[0].codec = static_cast<TensorCodec>(7);
    expect_refused(dir, good.with_index(x),
                   {"index: tensor 0 'token_embd.weight': codec: expected 0..1", "found 7"});
    x = gi;
    x.tensors[2].codec = TensorCodec::exp_rans;
    expect_refused(dir, good.with_index(x),
                   {"index: tensor 2 'tokenizer.data'", "u8 tensor is stored raw"});
  }
  SECTION("group index out of range") {
    CllmIndex x = gi;
    x.tensors[3].group = 3;
    expect_refused(
        dir, good.with_index(x),
        {"index: tensor 3 'empty.weight'", "group: expected an index below n_groups (3), found 3"});
  }
  SECTION("n_tiles more than the bytes can hold") {
    auto y = ib;
    const auto& t = gi.tensors[7];
    patch_le(y, tensor_pos(gi, 7) + 2 + t.name.size() + 4 + 8 * t.shape.size() + 4, 0xFFFFFFFFu, 4);
    expect_refused(dir, good.with_index_bytes(y), {"index: tensor 7", "n_tiles 4294967295 needs"});
  }
  SECTION("tile offsets outside the group, misaligned, overlapping, out of order") {
    CllmIndex x = gi;
    const GroupInfo& g0 = gi.groups[0];
    x.tensors[0].tiles[1].offset = round_up(g0.offset + g0.size, 64) + 64;
    expect_refused(dir, good.with_index(x),
                   {"index: tensor 0 'token_embd.weight': tile 1", "outside its group 'global'"});
    x = gi;
    x.tensors[4].tiles[0].offset = g0.offset;  // blk.0's tensor pointing into global
    expect_refused(dir, good.with_index(x),
                   {"index: tensor 4 'blk.0.attn_q.weight': tile 0", "outside its group 'blk.0'"});
    x = gi;
    x.tensors[6].tiles[1].size += 4096;  // runs past the group's end
    expect_refused(dir, good.with_index(x),
                   {"index: tensor 6 'blk.1.ffn_up.weight': tile 1", "outside its group 'blk.1'"});
    x = gi;
    x.tensors[4].tiles[1].offset += 8;
    expect_refused(dir, good.with_index(x),
                   {"tensor 4 'blk.0.attn_q.weight': tile 1", "is not a multiple of 16"});
    x = gi;
    x.tensors[4].tiles[1].offset = x.tensors[4].tiles[0].offset + 16;
    expect_refused(dir, good.with_index(x),
                   {"tensor 4 'blk.0.attn_q.weight': tile 1", "overlaps or precedes tile 0"});
    x = gi;
    x.tensors[5].tiles[0].offset =
        x.tensors[4].tiles[2].offset;  // shares bytes with another tensor
    expect_refused(dir, good.with_index(x),
                   {"tensor 5 'blk.0.ffn_norm.weight': tile 0",
                    "overlaps or precedes tensor 'blk.0.attn_q.weight' tile 2"});
    x = gi;
    std::swap(x.tensors[6], x.tensors[7]);  // listed out of file order within group blk.1
    expect_refused(dir, good.with_index(x),
                   {"tensor 7 'blk.1.ffn_up.weight': tile 0",
                    "overlaps or precedes tensor 'blk.1.attn_norm.weight' tile 0"});
    x = gi;
    std::swap(x.tensors[4].tiles[1], x.tensors[4].tiles[2]);
    expect_refused(dir, good.with_index(x),
                   {"tensor 4 'blk.0.attn_q.weight': tile 2", "overlaps or precedes tile 1"});
  }
  SECTION("tile element counts do not add up to the shape") {
    CllmIndex x = gi;
    x.tensors[4].tiles[2].n_elems += 1;
    expect_refused(dir, good.with_index(x),
                   {"index: tensor 4 'blk.0.attn_q.weight': the tiles hold 121 elements, shape [4, "
                    "3, 2, 5] has 120"});
    x = gi;
    x.tensors[3].tiles[0].n_elems = 1;  // the empty tensor
    expect_refused(dir, good.with_index(x),
                   {"tensor 3 'empty.weight': the tiles hold 1 elements, shape [0, 16] has 0"});
  }
  SECTION("trailing bytes and a cut-short index (with matching CRC)") {
    auto y = ib;
    y.push_back(0);
    y.push_back(0);
    expect_refused(dir, good.with_index_bytes(y),
                   {"index: 2 trailing bytes after the last tensor"});
    y.assign(ib.begin(), ib.begin() + static_cast<long>(tensor_pos(gi, 6) + 30));
    expect_refused(dir, good.with_index_bytes(y),
                   {"index: tensor 6 'blk.1.ffn_up.weight': truncated:", "needs"});
    y.assign(ib.begin(), ib.begin() + 2);
    expect_refused(dir, good.with_index_bytes(y), {"index: truncated: n_groups needs 4 bytes"});
    y.assign(ib.begin(), ib.begin() + static_cast<long>(nt_pos) + 2);
    expect_refused(dir, good.with_index_bytes(y), {"index: truncated: n_tensors needs 4 bytes"});
  }
}

TEST_CASE("a flipped byte inside a tile is a checksum error naming tensor and tile", "[format]") {
  test::TempDir dir;
  const GoodFile good(dir);
  const auto& q = good.index.tensors[4];  // blk.0.attn_q.weight
  auto b = good.bytes;
  b[q.tiles[1].offset + 17] ^= 0x10;
  const std::string path = dir.file("flipped.cllm");
  write_bytes(path, b);
  const std::string expect =
      "'" + path +
      "': tensor 'blk.0.attn_q.weight' tile 1: checksum mismatch (file corrupted or incomplete)";
  CHECK_THAT(open_error(path), StartsWith(expect));
  CHECK_THAT(open_error(path, {true, 1}), StartsWith(expect));

  // Without verification the file opens, and verification later finds the same tile.
  const CllmFile f = CllmFile::open(path, {false, 0});
  CHECK(f.tensors().size() == good.index.tensors.size());
  CHECK_THROWS_WITH(f.verify_checksums(4), StartsWith(expect));

  // Several bad tiles: the first in index order is reported, whatever the thread count.
  b[good.index.tensors[7].tiles[0].offset] ^= 0xFF;
  b[q.tiles[2].offset + q.tiles[2].size - 1] ^= 0x01;
  write_bytes(path, b);
  for (int threads : {1, 2, 8}) CHECK_THAT(open_error(path, {true, threads}), StartsWith(expect));

  // The last byte of the last tile, and a tile of the empty tensor.
  b = good.bytes;
  b[good.index.tensors[3].tiles[0].offset] ^= 0x01;
  write_bytes(path, b);
  CHECK_THAT(open_error(path), Contains("tensor 'empty.weight' tile 0: checksum mismatch"));
  b = good.bytes;
  const auto& last = good.index.tensors[7].tiles.back();
  b[last.offset + last.size - 1] ^= 0x80;
  write_bytes(path, b);
  CHECK_THAT(open_error(path),
             Contains("tensor 'blk.1.attn_norm.weight' tile 0: checksum mismatch"));
}

TEST_CASE("padding is not covered by checksums: a changed padding byte still opens", "[format]") {
  test::TempDir dir;
  const GoodFile good(dir);
  const auto& t = good.index.tensors[2];  // tokenizer.data, 53 bytes: 11 bytes of padding follow
  auto b = good.bytes;
  b[t.tiles[0].offset + t.tiles[0].size] = 0x5A;
  b[100] = 0x5A;  // header padding
  const std::string path = dir.file("pad.cllm");
  write_bytes(path, b);
  CHECK(CllmFile::open(path).tensors().size() == good.index.tensors.size());
}

TEST_CASE("random changes to header and index never crash the reader", "[format]") {
  // Single and double byte changes, with the index CRC recomputed so that the parser itself (not
  // just the checksum) meets them. Opening must either succeed or throw cllm::Error.
  test::TempDir dir;
  const GoodFile good(dir);
  const auto ib = serialize_index(good.index);
  const std::string path = dir.file("fuzz.cllm");
  std::mt19937_64 rng(20240607);
  int refused = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    std::vector<uint8_t> b;
    if (iter % 5 == 0) {
      b = good.bytes;
      b[rng() % kCllmHeaderBytes] ^= static_cast<uint8_t>(1u << (rng() % 8));
    } else {
      auto x = ib;
      for (int k = 0; k < 1 + iter % 2; ++k) x[rng() % x.size()] = static_cast<uint8_t>(rng());
      b = good.with_index_bytes(x);
    }
    write_bytes(path, b);
    try {
      CllmFile::open(path, {true, 2});
    } catch (const Error& e) {
      ++refused;
      INFO("iteration " << iter << ": " << e.what());
      REQUIRE_THAT(e.what(), StartsWith("'" + path + "': "));
    }
  }
  CHECK(refused > 1000);
}
