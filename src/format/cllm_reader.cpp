#include "format/cllm_reader.h"

#include <algorithm>
#include <cstdio>

#include "common/crc32c.h"
#include "common/error.h"
#include "common/thread_pool.h"

namespace cllm {

namespace {

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08X", v);
  return buf;
}

void check_crc(const char* what, const uint8_t* data, uint64_t size, uint32_t expected) {
  const uint32_t found = crc32c(data, size);
  if (found != expected)
    fail(what, ": checksum mismatch: header says ", hex32(expected), ", the bytes give ",
         hex32(found), " (file corrupted or incomplete)");
}

}  // namespace

CllmFile CllmFile::open(const std::string& path, const CllmOpenOptions& opt) {
  CllmFile f;
  f.map_ = MappedFile(path);
  with_context("'" + path + "'", [&] {
    const uint8_t* data = f.map_.data();
    const CllmHeader h = parse_header(data, f.map_.size());
    f.header_ = h;
    f.version_ = h.version;

    check_crc("metadata", data + h.metadata_offset, h.metadata_size, h.metadata_crc32c);
    check_crc("index", data + h.index_offset, h.index_size, h.index_crc32c);

    const char* json = reinterpret_cast<const char*>(data + h.metadata_offset);
    try {
      f.metadata_ = nlohmann::json::parse(json, json + h.metadata_size);
    } catch (const nlohmann::json::exception& e) {
      fail("metadata is not valid JSON: ", e.what());
    }
    if (!f.metadata_.is_object())
      fail("metadata: expected a JSON object, found ", f.metadata_.type_name());

    f.index_ = parse_index(data + h.index_offset, h.index_size, h.data_offset, h.data_size);
    f.by_name_.reserve(f.index_.tensors.size());
    for (size_t i = 0; i < f.index_.tensors.size(); ++i)
      f.by_name_.emplace(f.index_.tensors[i].name, i);
  });
  if (opt.verify_checksums) f.verify_checksums(opt.threads);
  return f;
}

const TensorInfo* CllmFile::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &index_.tensors[it->second];
}

const TensorInfo& CllmFile::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t)
    fail("'", path(), "': no tensor named '", name, "' (the file has ", index_.tensors.size(),
         " tensors)");
  return *t;
}

void CllmFile::verify_checksums(int threads) const {
  struct TileRef {
    uint32_t tensor, tile;
  };
  std::vector<TileRef> refs;
  for (size_t i = 0; i < index_.tensors.size(); ++i)
    for (size_t k = 0; k < index_.tensors[i].tiles.size(); ++k)
      refs.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(k)});

  // Each tile's checksum in parallel; the mismatch reported is the first in index order, so the
  // message does not depend on the thread count.
  std::vector<uint32_t> computed(refs.size());
  const size_t wanted = static_cast<size_t>(threads > 0 ? threads : hardware_threads());
  ThreadPool pool(static_cast<int>(std::max<size_t>(1, std::min(wanted, refs.size()))));
  pool.parallel_for(refs.size(), [&](size_t i) {
    const TileInfo& tile = index_.tensors[refs[i].tensor].tiles[refs[i].tile];
    computed[i] = crc32c(tile_data(tile), tile.size);
  });
  for (size_t i = 0; i < refs.size(); ++i) {
    const TensorInfo& t = index_.tensors[refs[i].tensor];
    const TileInfo& tile = t.tiles[refs[i].tile];
    if (computed[i] != tile.crc32c)
      fail("'", path(), "': tensor '", t.name, "' tile ", refs[i].tile,
           ": checksum mismatch (file corrupted or incomplete): the index says ",
           hex32(tile.crc32c), ", the tile's ", tile.size, " bytes at offset ", tile.offset,
           " give ", hex32(computed[i]));
  }
}

}  // namespace cllm
