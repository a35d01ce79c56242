#include "convert/compress.h"

#include <algorithm>
#include <functional>
#include <future>

#include "codec/codec.h"
#include "codec/exponent_stats.h"
#include "common/error.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "format/cllm_writer.h"

namespace cllm {

namespace {

// One tensor to write: a float weight from the source, or the tokenizer's bytes.
struct PendingTensor {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  const uint8_t* data;  // null: computed by fill, tile by tile
  uint64_t size;
  const std::function<void(uint64_t first, uint64_t n, uint8_t* out)>* fill;
};

// The tile jobs of one group: every tile of every tensor in it, encoded in parallel.
struct TileJob {
  size_t tensor;   // index into the group's tensors
  uint64_t first;  // first element
  uint32_t n;      // elements
  EncodedTile out;
  codec::SymbolHistogram symbols;  // the tile's exponent symbols, counted by the encoder
};

std::vector<std::vector<PendingTensor>> plan_groups(const SourceModel& m,
                                                   std::vector<std::string>* names) {
  std::vector<std::vector<PendingTensor>> groups(1 + static_cast<size_t>(m.config.n_layers));
  names->assign(groups.size(), "global");
  for (int l = 0; l < m.config.n_layers; ++l) (*names)[1 + l] = "blk." + std::to_string(l);
  for (const auto& t : m.tensors) {
    size_t g = 0;
    if (t.name.rfind("blk.", 0) == 0) g = 1 + std::stoul(t.name.substr(4));
    CLLM_CHECK(t.data || t.fill, "tensor '", t.name, "' has neither data nor a fill function");
    groups.at(g).push_back({t.name, t.dtype, t.shape, t.data, t.size, &t.fill});
  }
  if (!m.tokenizer.kind.empty()) {
    const auto& tok = m.tokenizer.data;
    groups[0].push_back({"tokenizer.data", DType::U8, {tok.size()}, tok.data(), tok.size(), nullptr});
  }
  return groups;
}

// Tile [first, first + n) of t: a pointer into the mapped source, or, for a computed tensor,
// the values filled into this thread's buffer (valid until its next call on this thread).
const uint8_t* tile_source(const PendingTensor& t, uint64_t first, uint32_t n) {
  if (t.data) return t.data + first * dtype_size(t.dtype);
  thread_local std::vector<uint8_t> buffer;
  buffer.resize(static_cast<size_t>(n) * dtype_size(t.dtype));
  (*t.fill)(first, n, buffer.data());
  return buffer.data();
}

// The running totals over the tensors written so far.
struct CompressTotals {
  CompressSummary sum;
  codec::SymbolHistogram model_hist;
  double bound_bits = 0;
  uint64_t done_bytes = 0;
};

// Every tile of every tensor of one group, encoded on the pool.
std::vector<TileJob> encode_group(ThreadPool& pool, const std::vector<PendingTensor>& tensors,
                                  const CompressOptions& opt, const codec::EncodeOptions& enc) {
  std::vector<TileJob> jobs;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const uint64_t n = tensors[t].size / dtype_size(tensors[t].dtype);
    for (uint64_t first = 0; first < n || (n == 0 && first == 0); first += opt.tile_elems) {
      jobs.push_back({t, first, static_cast<uint32_t>(std::min<uint64_t>(opt.tile_elems, n - first)), {}, {}});
      if (n == 0) break;
    }
  }
  pool.parallel_for(jobs.size(), [&](size_t j) {
    TileJob& job = jobs[j];
    const PendingTensor& t = tensors[job.tensor];
    with_context("tensor '" + t.name + "' tile " + std::to_string(job.first / opt.tile_elems), [&] {
      codec::encode_tile(t.dtype, tile_source(t, job.first, job.n), job.n, job.out.bytes, enc, &job.symbols);
    });
    job.out.n_elems = job.n;
  });
  return jobs;
}

// Appends one encoded group to the file, in tensor order, and adds it to the totals.
void write_group(CllmWriter& writer, const std::string& group, const std::vector<PendingTensor>& tensors,
                 std::vector<TileJob>& jobs, const CompressOptions& opt, CompressTotals& tot) {
  writer.begin_group(group);
  size_t j = 0;
  for (size_t t = 0; t < tensors.size(); ++t) {
    std::vector<EncodedTile> tiles;
    codec::SymbolHistogram hist;
    uint64_t bytes = 0;
    for (; j < jobs.size() && jobs[j].tensor == t; ++j) {
      bytes += jobs[j].out.bytes.size();
      hist.merge(jobs[j].symbols);
      tiles.push_back(std::move(jobs[j].out));
    }
    const PendingTensor& pt = tensors[t];
    const bool is_float = pt.dtype != DType::U8;
    const TensorCodec tc = is_float && !opt.store_raw ? TensorCodec::exp_rans : TensorCodec::none;
    writer.add_tensor(pt.name, pt.dtype, tc, pt.shape, tiles);
    tot.sum.tile_bytes += bytes;
    if (is_float) {
      const uint64_t n = pt.size / dtype_size(pt.dtype);
      tot.sum.coded_elems += n;
      tot.sum.float_tile_bytes += bytes;
      // The bound per tensor with the tensor's own entropy: what an order-0 coder with one
      // table per tensor could reach.
      tot.bound_bits += codec::order0_bound_bits(pt.dtype, n, hist.entropy_bits());
      tot.model_hist.merge(hist);
      tot.done_bytes += pt.size;
      if (opt.progress) opt.progress(tot.done_bytes, tot.sum.source_bytes);
    }
  }
}

}  // namespace

CompressSummary compress_model(const SourceModel& m, const std::string& out_path,
                               const CompressOptions& opt) {
  CLLM_CHECK(opt.tile_elems >= codec::kChunkElems && opt.tile_elems <= codec::kMaxTileElems,
             "tile size ", opt.tile_elems, " out of range [", codec::kChunkElems, ", ",
             codec::kMaxTileElems, "]");
  Timer timer;
  ThreadPool pool(opt.threads > 0 ? opt.threads : hardware_threads());
  CllmWriter writer(out_path, opt.overwrite);

  codec::EncodeOptions enc;
  enc.prob_bits = opt.prob_bits;
  enc.force_raw = opt.store_raw;

  CompressTotals tot;
  tot.sum.source_bytes = m.total_bytes();
  std::vector<std::string> group_names;
  const auto groups = plan_groups(m, &group_names);
  // Group g is written on its own thread while the pool encodes group g + 1: writing (CRCs,
  // page cache, disk) is serial and would otherwise idle every encoder. At most two groups'
  // tiles are in memory.
  std::vector<TileJob> writing;
  std::future<void> written;
  for (size_t g = 0; g < groups.size(); ++g) {
    std::vector<TileJob> jobs = encode_group(pool, groups[g], opt, enc);
    if (written.valid()) written.get();  // rethrows the writer's error
    writing = std::move(jobs);
    written = std::async(std::launch::async, [&, g] { write_group(writer, group_names[g], groups[g], writing, opt, tot); });
  }
  if (written.valid()) written.get();
  CompressSummary sum = tot.sum;
  sum.order0_bound_bits = tot.bound_bits;
  sum.exponent_entropy = tot.model_hist.entropy_bits();

  nlohmann::json meta = m.extra_metadata.is_object() ? m.extra_metadata : nlohmann::json::object();
  config_to_metadata(m.config, meta);
  meta["general.created_by"] = "codecllm 0.1.0";
  meta["codec.name"] = "exp-rans";
  meta["codec.version"] = 1;
  meta["codec.tile_elems"] = opt.tile_elems;
  meta["codec.prob_bits"] = opt.prob_bits;
  meta["codec.order0_bound_bits"] = sum.order0_bound_bits;
  meta["codec.exponent_entropy_bits"] = sum.exponent_entropy;
  if (m.tokenizer.kind.empty()) {
    meta["tokenizer.model"] = "none";
  } else {
    meta["tokenizer.model"] = m.tokenizer.kind;
    meta["tokenizer.source"] = m.tokenizer.origin;
  }
  writer.finish(meta);
  sum.file_bytes = writer.bytes_written();
  sum.seconds = timer.seconds();
  return sum;
}

}  // namespace cllm
