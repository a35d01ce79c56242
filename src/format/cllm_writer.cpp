#include "format/cllm_writer.h"

#include "common/crc32c.h"
#include "common/error.h"

namespace cllm {

namespace {

// A name as an error message can show it, even when it breaks the rules: control bytes as
// \xNN, at most 80 bytes.
std::string shown(const std::string& name) {
  std::string out;
  for (size_t i = 0; i < name.size() && i < 80; ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    static const char hex[] = "0123456789ABCDEF";
    if (c < 0x20 || c == 0x7F) {
      out += cat("\\x", hex[c >> 4], hex[c & 15]);
    } else {
      out += name[i];
    }
  }
  return name.size() > 80 ? out + "..." : out;
}

}  // namespace

CllmWriter::CllmWriter(const std::string& path, bool overwrite) : file_(path, overwrite) {
  // A zero header until finish(): a file cut short is never mistaken for a .cllm file.
  const uint8_t zeros[kCllmHeaderBytes] = {};
  file_.write(zeros, sizeof(zeros));
  file_.pad_to(kDataOffset);
}

void CllmWriter::check_usable(const char* call) const {
  if (finished_) fail("'", file_.path(), "': ", call, " after finish()");
  if (broken_)
    fail("'", file_.path(), "': ", call, " after an earlier write failed: the file is incomplete");
}

void CllmWriter::begin_group(const std::string& name) {
  check_usable("begin_group");
  const std::string problem = cllm_name_problem(name);
  if (!problem.empty()) fail("'", file_.path(), "': group name '", shown(name), "': ", problem);
  if (group_names_.count(name)) fail("'", file_.path(), "': group '", name, "' already exists");
  if (index_.groups.size() >= kMaxGroups)
    fail("'", file_.path(), "': group '", name, "': a file holds at most ", kMaxGroups, " groups");
  broken_ = true;
  file_.pad_to(kGroupAlign);
  broken_ = false;
  index_.groups.push_back(GroupInfo{name, file_.offset(), 0});
  group_names_.insert(name);
}

void CllmWriter::add_tensor(const std::string& name, DType dtype, TensorCodec codec,
                            const std::vector<uint64_t>& shape,
                            const std::vector<EncodedTile>& tiles) {
  check_usable("add_tensor");
  const std::string where = cat("'", file_.path(), "': tensor '", shown(name), "': ");
  const std::string problem = cllm_name_problem(name);
  if (!problem.empty()) fail(where, "name ", problem);
  if (index_.groups.empty())
    fail(where, "add_tensor before begin_group (every tensor belongs to a group)");
  if (tensor_names_.count(name)) fail(where, "a tensor of that name was already added");
  if (index_.tensors.size() >= kMaxTensors)
    fail(where, "a file holds at most ", kMaxTensors, " tensors");
  if (!dtype_valid(static_cast<uint8_t>(dtype)))
    fail(where, "unknown dtype ", static_cast<int>(dtype));
  if (codec != TensorCodec::none && codec != TensorCodec::exp_rans)
    fail(where, "unknown codec ", static_cast<int>(codec));
  if (dtype == DType::U8 && codec != TensorCodec::none)
    fail(where, "u8 tensors are stored raw: codec must be none, not ", tensor_codec_name(codec));
  if (shape.empty() || shape.size() > kMaxDims)
    fail(where, "shape has ", shape.size(), " dimensions, expected 1..", kMaxDims);
  uint64_t n = 1;
  for (auto d : shape) {
    if (d >= kMaxTensorElems || (n != 0 && d > (kMaxTensorElems - 1) / n))
      fail(where, "shape too large: every dimension and their product must be below 2^48");
    n *= d;
  }
  uint64_t sum = 0;
  for (size_t k = 0; k < tiles.size(); ++k) {
    if (tiles[k].bytes.size() > UINT32_MAX)
      fail(where, "tile ", k, " is ", tiles[k].bytes.size(), " bytes, at most 2^32-1 allowed");
    if (tiles[k].n_elems > tiles[k].bytes.size())
      fail(where, "tile ", k, " holds ", tiles[k].n_elems, " elements in ", tiles[k].bytes.size(),
           " bytes (a reader requires at least one byte per element)");
    sum += tiles[k].n_elems;
  }
  if (sum != n) fail(where, "the tiles hold ", sum, " elements, the shape has ", n);

  TensorInfo t;
  t.name = name;
  t.dtype = dtype;
  t.codec = codec;
  t.shape = shape;
  t.group = static_cast<uint32_t>(index_.groups.size() - 1);
  t.tiles.reserve(tiles.size());
  broken_ = true;  // until every tile is out
  for (const auto& tile : tiles) {
    file_.pad_to(kTileAlign);
    TileInfo info;
    info.offset = file_.offset();
    info.size = static_cast<uint32_t>(tile.bytes.size());
    info.n_elems = tile.n_elems;
    info.crc32c = crc32c(tile.bytes.data(), tile.bytes.size());
    file_.write(tile.bytes.data(), tile.bytes.size());
    t.tiles.push_back(info);
  }
  broken_ = false;
  GroupInfo& g = index_.groups.back();
  g.size = file_.offset() - g.offset;
  index_.tensors.push_back(std::move(t));
  tensor_names_.insert(name);
}

void CllmWriter::finish(const nlohmann::json& metadata) {
  check_usable("finish");
  const std::string where = cat("'", file_.path(), "': ");
  if (index_.groups.empty()) fail(where, "no groups: a .cllm file holds at least one group");
  if (!metadata.is_object())
    fail(where, "metadata must be a JSON object, found ", metadata.type_name());
  std::string json;
  try {
    json = metadata.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(where, "metadata cannot be written as JSON: ", e.what());
  }
  if (json.size() > kMaxMetadataBytes)
    fail(where, "metadata is ", json.size(), " bytes of JSON, at most ", kMaxMetadataBytes,
         " allowed");
  const std::vector<uint8_t> index = serialize_index(index_);
  if (index.size() > kMaxIndexBytes)
    fail(where, "the index is ", index.size(), " bytes, at most ", kMaxIndexBytes, " allowed");

  CllmHeader h;
  h.data_offset = kDataOffset;
  // The file ends at the last group's end: at its last tile, or where an empty group begins.
  const GroupInfo& last = index_.groups.back();
  h.data_size = last.offset + last.size - kDataOffset;
  h.metadata_offset = file_.offset();
  h.metadata_size = json.size();
  h.index_offset = h.metadata_offset + h.metadata_size;
  h.index_size = index.size();
  h.metadata_crc32c = crc32c(json.data(), json.size());
  h.index_crc32c = crc32c(index.data(), index.size());

  broken_ = true;
  file_.write(json.data(), json.size());
  file_.write(index.data(), index.size());
  const auto header = serialize_header(h);
  file_.pwrite(header.data(), header.size(), 0);
  file_.commit();
  broken_ = false;
  finished_ = true;
}

}  // namespace cllm
