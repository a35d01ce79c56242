// The binary parts of a .cllm file, both ways: the 64-byte header and the index
// (docs/format.md, "Header" and "Index"). Parsing bounds every count, length and offset
// before it allocates or reads; errors name the field, with what was expected and found.
#include <cstdio>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "common/error.h"
#include "format/cllm_reader.h"
#include "format/cllm_writer.h"

namespace cllm {

namespace {

// Smallest encodings, used to bound counts by the bytes left before anything is allocated.
constexpr uint64_t kMinGroupBytes = 2 + 1 + 8 + 8;           // name_len, 1-byte name, offset, size
constexpr uint64_t kMinTensorBytes = 2 + 1 + 4 + 8 + 4 + 4;  // ..., one dim, group, n_tiles
constexpr uint64_t kTileBytes = 8 + 4 + 4 + 4;               // offset, size, n_elems, crc32c

void put_u8(std::vector<uint8_t>& out, uint8_t v) { out.push_back(v); }
void put_u16(std::vector<uint8_t>& out, uint16_t v) {
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_name(std::vector<uint8_t>& out, const std::string& name) {
  put_u16(out, static_cast<uint16_t>(name.size()));
  out.insert(out.end(), name.begin(), name.end());
}

uint64_t load_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void store_le(uint8_t* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Reads little-endian fields from the index; a read past its end names the field.
class IndexReader {
 public:
  IndexReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  const uint8_t* take(uint64_t n, const char* field) {
    if (n > left())
      fail("truncated: ", field, " needs ", n, " bytes at index byte ", pos_, ", ", left(),
           " left");
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8(const char* field) { return *take(1, field); }
  uint16_t u16(const char* field) { return static_cast<uint16_t>(load_le(take(2, field), 2)); }
  uint32_t u32(const char* field) { return static_cast<uint32_t>(load_le(take(4, field), 4)); }
  uint64_t u64(const char* field) { return load_le(take(8, field), 8); }

  // u16 name_len, then the name: 1..kMaxNameBytes bytes of UTF-8.
  std::string name() {
    const uint16_t len = u16("name_len");
    if (len == 0 || len > kMaxNameBytes)
      fail("name_len: expected 1..", kMaxNameBytes, ", found ", len);
    const uint8_t* p = take(len, "name");
    std::string s(reinterpret_cast<const char*>(p), len);
    const std::string problem = cllm_name_problem(s);
    if (!problem.empty()) fail("name: ", problem);
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// a + b, or false when it does not fit in 64 bits.
bool add_u64(uint64_t a, uint64_t b, uint64_t* out) {
  if (b > std::numeric_limits<uint64_t>::max() - a) return false;
  *out = a + b;
  return true;
}


}  // namespace

// ---- Header

std::array<uint8_t, kCllmHeaderBytes> serialize_header(const CllmHeader& h) {
  std::array<uint8_t, kCllmHeaderBytes> out{};
  std::memcpy(out.data(), kCllmMagic, 4);
  store_le(out.data() + 4, h.version, 4);
  store_le(out.data() + 8, h.data_offset, 8);
  store_le(out.data() + 16, h.data_size, 8);
  store_le(out.data() + 24, h.metadata_offset, 8);
  store_le(out.data() + 32, h.metadata_size, 8);
  store_le(out.data() + 40, h.index_offset, 8);
  store_le(out.data() + 48, h.index_size, 8);
  store_le(out.data() + 56, h.metadata_crc32c, 4);
  store_le(out.data() + 60, h.index_crc32c, 4);
  return out;
}

CllmHeader parse_header(const uint8_t* data, uint64_t file_size) {
  if (file_size < kCllmHeaderBytes)
    fail("file is ", file_size, " bytes, too small for the ", kCllmHeaderBytes,
         "-byte header (empty, truncated, or not a .cllm file)");
  if (std::memcmp(data, kCllmMagic, 4) != 0) {
    char found[32];
    std::snprintf(found, sizeof(found), "%02X %02X %02X %02X", data[0], data[1], data[2], data[3]);
    fail("magic: expected 'CLLM' (43 4C 4C 4D), found ", found, ": not a .cllm file");
  }
  CllmHeader h;
  h.version = static_cast<uint32_t>(load_le(data + 4, 4));
  h.data_offset = load_le(data + 8, 8);
  h.data_size = load_le(data + 16, 8);
  h.metadata_offset = load_le(data + 24, 8);
  h.metadata_size = load_le(data + 32, 8);
  h.index_offset = load_le(data + 40, 8);
  h.index_size = load_le(data + 48, 8);
  h.metadata_crc32c = static_cast<uint32_t>(load_le(data + 56, 4));
  h.index_crc32c = static_cast<uint32_t>(load_le(data + 60, 4));

  if (h.version > kCllmVersion)
    fail("format version ", h.version, " is newer than this codecllm supports (", kCllmVersion,
         "): upgrade codecllm");
  if (h.version == 0) fail("header: version: expected 1..", kCllmVersion, ", found 0");
  if (h.data_offset != kDataOffset)
    fail("header: data_offset: expected ", kDataOffset, ", found ", h.data_offset);

  // Each section must end inside the file and start after the one before it.
  auto section_end = [&](const char* what, uint64_t offset, uint64_t size) {
    uint64_t end = 0;
    if (!add_u64(offset, size, &end) || end > file_size)
      fail("header: ", what, " [", offset, ", +", size, ") ends past the end of the file (",
           file_size, " bytes): file truncated or header corrupt");
    return end;
  };
  const uint64_t data_end = section_end("data section", h.data_offset, h.data_size);
  if (h.metadata_offset < data_end)
    fail("header: metadata_offset: expected >= ", data_end, " (end of the data section), found ",
         h.metadata_offset, " (sections overlap)");
  if (h.metadata_size > kMaxMetadataBytes)
    fail("header: metadata_size: expected at most ", kMaxMetadataBytes, " bytes, found ",
         h.metadata_size);
  const uint64_t metadata_end = section_end("metadata", h.metadata_offset, h.metadata_size);
  if (h.index_offset < metadata_end)
    fail("header: index_offset: expected >= ", metadata_end, " (end of the metadata), found ",
         h.index_offset, " (sections overlap)");
  if (h.index_size > kMaxIndexBytes)
    fail("header: index_size: expected at most ", kMaxIndexBytes, " bytes, found ", h.index_size);
  const uint64_t index_end = section_end("index", h.index_offset, h.index_size);
  if (index_end != file_size)
    fail("header: the index ends at byte ", index_end, " but the file has ", file_size,
         " bytes: expected the file to end with the index (", file_size - index_end,
         " trailing bytes)");
  return h;
}

// ---- Index

std::vector<uint8_t> serialize_index(const CllmIndex& index) {
  std::vector<uint8_t> out;
  put_u32(out, static_cast<uint32_t>(index.groups.size()));
  for (const auto& g : index.groups) {
    put_name(out, g.name);
    put_u64(out, g.offset);
    put_u64(out, g.size);
  }
  put_u32(out, static_cast<uint32_t>(index.tensors.size()));
  for (const auto& t : index.tensors) {
    put_name(out, t.name);
    put_u8(out, static_cast<uint8_t>(t.dtype));
    put_u8(out, static_cast<uint8_t>(t.codec));
    put_u8(out, static_cast<uint8_t>(t.shape.size()));
    put_u8(out, 0);  // reserved
    for (auto d : t.shape) put_u64(out, d);
    put_u32(out, t.group);
    put_u32(out, static_cast<uint32_t>(t.tiles.size()));
    for (const auto& tile : t.tiles) {
      put_u64(out, tile.offset);
      put_u32(out, tile.size);
      put_u32(out, tile.n_elems);
      put_u32(out, tile.crc32c);
    }
  }
  return out;
}

namespace {

// Fills g field by field, so that an error can still name the group once its name is read.
void parse_group(IndexReader& r, GroupInfo& g, uint64_t data_offset, uint64_t data_end,
                 const GroupInfo* prev) {
  g.name = r.name();
  g.offset = r.u64("offset");
  g.size = r.u64("size");
  if (g.offset % kGroupAlign != 0) fail("offset ", g.offset, " is not a multiple of ", kGroupAlign);
  if (g.offset < data_offset)
    fail("offset ", g.offset, " is before the data section (expected >= ", data_offset, ")");
  uint64_t end = 0;
  if (!add_u64(g.offset, g.size, &end) || end > data_end)
    fail("[", g.offset, ", +", g.size, ") ends past the data section (expected end <= ", data_end,
         ")");
  if (prev && g.offset < prev->offset + prev->size)
    fail("offset ", g.offset, " overlaps or precedes group '", prev->name, "' [", prev->offset,
         ", ", prev->offset + prev->size, ") (groups must not overlap and must be in file order)");
}

// Where the last tile seen in a group ends: tiles of one group, in index order, must each
// begin at or after it (so tensors are listed in file order and no two tiles share bytes).
struct GroupCursor {
  uint64_t end = 0;
  std::string tensor;  // the tensor of that tile; empty before the group's first tile
  uint32_t tile = 0;
};

void parse_tiles(IndexReader& r, TensorInfo& t, const GroupInfo& g, GroupCursor& cur,
                 uint32_t n_tiles) {
  const uint64_t group_end = g.offset + g.size;  // bounded by parse_group
  uint64_t sum = 0;
  t.tiles.resize(n_tiles);  // n_tiles x kTileBytes <= bytes left: checked by the caller
  for (uint32_t k = 0; k < n_tiles; ++k) {
    TileInfo& tile = t.tiles[k];
    tile.offset = r.u64("tile offset");
    tile.size = r.u32("tile size");
    tile.n_elems = r.u32("tile n_elems");
    tile.crc32c = r.u32("tile crc32c");
    if (tile.offset % kTileOffsetAlign != 0)
      fail("tile ", k, ": offset ", tile.offset, " is not a multiple of ", kTileOffsetAlign);
    // Every codec keeps at least one raw byte per element, so a tile's bytes bound what it
    // decodes to: a few bytes of index cannot make a reader allocate gigabytes.
    if (tile.n_elems > tile.size)
      fail("tile ", k, ": n_elems ", tile.n_elems, " is more than its ", tile.size,
           " bytes can hold (at least one byte per element)");
    if (tile.offset < g.offset || tile.offset > group_end || tile.size > group_end - tile.offset)
      fail("tile ", k, ": [", tile.offset, ", +", tile.size, ") is outside its group '", g.name,
           "' [", g.offset, ", ", group_end, ")");
    if (k > 0 && tile.offset < cur.end)
      fail("tile ", k, ": offset ", tile.offset, " overlaps or precedes tile ", k - 1,
           ", which ends at ", cur.end, " (tiles must follow each other in element order)");
    if (k == 0 && !cur.tensor.empty() && tile.offset < cur.end)
      fail("tile 0: offset ", tile.offset, " overlaps or precedes tensor '", cur.tensor, "' tile ",
           cur.tile, ", which ends at ", cur.end, " (the tiles of group '", g.name,
           "' must follow each other in index order)");
    cur.end = tile.offset + tile.size;
    sum += tile.n_elems;
  }
  if (n_tiles > 0) {
    cur.tensor = t.name;
    cur.tile = n_tiles - 1;
  }
  if (sum != t.n_elems())
    fail("the tiles hold ", sum, " elements, shape ", shape_to_string(t.shape), " has ", t.n_elems());
}

// As parse_group: t.name is set first.
void parse_tensor(IndexReader& r, TensorInfo& t, const std::vector<GroupInfo>& groups,
                  std::vector<GroupCursor>& cursors) {
  t.name = r.name();
  const uint8_t dtype = r.u8("dtype"), codec = r.u8("codec");
  const uint8_t n_dims = r.u8("n_dims"), reserved = r.u8("reserved");
  if (!dtype_valid(dtype)) fail("dtype: expected 0..3 (f32, f16, bf16, u8), found ", +dtype);
  if (codec > static_cast<uint8_t>(TensorCodec::exp_rans))
    fail("codec: expected 0..1 (none, exp-rans), found ", +codec);
  t.dtype = static_cast<DType>(dtype);
  t.codec = static_cast<TensorCodec>(codec);
  if (t.dtype == DType::U8 && t.codec != TensorCodec::none)
    fail("codec: a u8 tensor is stored raw (codec 0, none), found ", +codec, " (",
         tensor_codec_name(t.codec), ")");
  if (n_dims < 1 || n_dims > kMaxDims) fail("n_dims: expected 1..", kMaxDims, ", found ", +n_dims);
  if (reserved != 0) fail("reserved byte: expected 0, found ", +reserved);
  t.shape.resize(n_dims);
  uint64_t n = 1;
  bool fits = true;  // every dim and the product so far below 2^48
  for (uint8_t i = 0; i < n_dims; ++i) {
    const uint64_t d = t.shape[i] = r.u64("dims");
    fits = fits && d < kMaxTensorElems && (n == 0 || d <= (kMaxTensorElems - 1) / n);
    if (fits) n *= d;
  }
  if (!fits)
    fail("dims ", shape_to_string(t.shape), ": expected every dimension and their product below 2^48");
  t.group = r.u32("group");
  if (t.group >= groups.size())
    fail("group: expected an index below n_groups (", groups.size(), "), found ", t.group);
  const uint32_t n_tiles = r.u32("n_tiles");
  if (n_tiles > r.left() / kTileBytes)
    fail("n_tiles ", n_tiles, " needs ", n_tiles * kTileBytes, " bytes, the index has ", r.left(),
         " left");
  parse_tiles(r, t, groups[t.group], cursors[t.group], n_tiles);
}

std::string named(const std::string& name) { return name.empty() ? "" : " '" + name + "'"; }

}  // namespace

CllmIndex parse_index(const uint8_t* data, size_t size, uint64_t data_offset, uint64_t data_size) {
  uint64_t data_end = 0;
  if (!add_u64(data_offset, data_size, &data_end))
    fail("index: data section [", data_offset, ", +", data_size, ") overflows");
  IndexReader r(data, size);
  CllmIndex index;

  const uint32_t n_groups = with_context("index", [&] { return r.u32("n_groups"); });
  if (n_groups < 1 || n_groups > kMaxGroups)
    fail("index: n_groups: expected 1..", kMaxGroups, ", found ", n_groups);
  if (n_groups > r.left() / kMinGroupBytes)
    fail("index: n_groups ", n_groups, " needs at least ", n_groups * kMinGroupBytes,
         " bytes, the index has ", r.left(), " left");
  index.groups.reserve(n_groups);
  std::unordered_map<std::string, uint32_t> seen;
  for (uint32_t i = 0; i < n_groups; ++i) {
    GroupInfo g;
    try {
      parse_group(r, g, data_offset, data_end, i ? &index.groups.back() : nullptr);
      auto [it, fresh] = seen.emplace(g.name, i);
      if (!fresh) fail("duplicate group name (also group ", it->second, ")");
    } catch (const Error& e) {
      fail("index: group ", i, named(g.name), ": ", e.what());
    }
    index.groups.push_back(std::move(g));
  }

  const uint32_t n_tensors = with_context("index", [&] { return r.u32("n_tensors"); });
  if (n_tensors > kMaxTensors)
    fail("index: n_tensors: expected at most ", kMaxTensors, ", found ", n_tensors);
  if (n_tensors > r.left() / kMinTensorBytes)
    fail("index: n_tensors ", n_tensors, " needs at least ", n_tensors * kMinTensorBytes,
         " bytes, the index has ", r.left(), " left");
  index.tensors.reserve(n_tensors);
  std::vector<GroupCursor> cursors(n_groups);
  seen.clear();
  for (uint32_t i = 0; i < n_tensors; ++i) {
    TensorInfo t;
    try {
      parse_tensor(r, t, index.groups, cursors);
      auto [it, fresh] = seen.emplace(t.name, i);
      if (!fresh) fail("duplicate tensor name (also tensor ", it->second, ")");
    } catch (const Error& e) {
      fail("index: tensor ", i, named(t.name), ": ", e.what());
    }
    index.tensors.push_back(std::move(t));
  }
  if (r.left() != 0)
    fail("index: ", r.left(),
         " trailing bytes after the last tensor (the tensors end at index byte ", r.pos(),
         ", index_size is ", size, ")");
  return index;
}

CllmIndex parse_index(const uint8_t* data, size_t size, uint64_t file_size) {
  return parse_index(data, size, kDataOffset,
                     file_size > kDataOffset ? file_size - kDataOffset : 0);
}

}  // namespace cllm
