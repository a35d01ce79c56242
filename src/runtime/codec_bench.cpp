#include "runtime/codec_bench.h"

#include <algorithm>
#include <cstring>

#include "codec/codec.h"
#include "common/error.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "cuda/benchmarks.h"
#include "cuda/device_info.h"
#include "runtime/decode_plan.h"

namespace cllm {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

struct TileRef {
  const TensorInfo* tensor;
  const TileInfo* tile;
};

// The float tiles the CPU rows work on: all of them, up to max_bytes of decoded output.
std::vector<TileRef> cpu_sample(const CllmFile& f, double max_bytes, double* bytes) {
  std::vector<TileRef> out;
  *bytes = 0;
  for (const auto& t : f.tensors()) {
    if (t.dtype == DType::U8) continue;
    for (const auto& tile : t.tiles) {
      if (*bytes >= max_bytes) return out;
      out.push_back({&t, &tile});
      *bytes += static_cast<double>(tile.n_elems) * dtype_size(t.dtype);
    }
  }
  return out;
}

CodecBenchRow cpu_decode_row(const CllmFile& f, const std::vector<TileRef>& tiles, double bytes, int threads, int reps) {
  ThreadPool pool(threads);
  CodecBenchRow row;
  row.test = "cpu decode, " + std::to_string(threads) + (threads == 1 ? " thread" : " threads");
  row.bytes = bytes;
  // Output buffers allocated (and their pages touched) before timing: the rows measure decoding.
  std::vector<std::vector<uint8_t>> out(tiles.size());
  for (size_t i = 0; i < tiles.size(); ++i)
    out[i].resize(static_cast<size_t>(tiles[i].tile->n_elems) * dtype_size(tiles[i].tensor->dtype));
  for (int r = 0; r <= reps; ++r) {  // the first run warms caches and page tables
    Timer timer;
    pool.parallel_for(tiles.size(), [&](size_t i) {
      const auto& [t, tile] = tiles[i];
      codec::decode_tile(t->dtype, f.tile_data(*tile), tile->size, out[i].data(), tile->n_elems);
    });
    if (r > 0) row.samples_ms.push_back(timer.ms());
  }
  row.ms = median(row.samples_ms);
  return row;
}

CodecBenchRow cpu_encode_row(const CllmFile& f, const std::vector<TileRef>& tiles, double bytes, int reps) {
  // Decode once (untimed) to get the values, then time encoding them on one thread.
  std::vector<std::vector<uint8_t>> values(tiles.size());
  for (size_t i = 0; i < tiles.size(); ++i) {
    const auto& [t, tile] = tiles[i];
    values[i].resize(static_cast<size_t>(tile->n_elems) * dtype_size(t->dtype));
    codec::decode_tile(t->dtype, f.tile_data(*tile), tile->size, values[i].data(), tile->n_elems);
  }
  CodecBenchRow row;
  row.test = "cpu encode, 1 thread";
  row.bytes = bytes;
  std::vector<uint8_t> out;
  for (int r = 0; r <= std::max(1, reps / 2); ++r) {  // the first run sizes `out`
    Timer timer;
    for (size_t i = 0; i < tiles.size(); ++i) {
      out.clear();
      codec::encode_tile(tiles[i].tensor->dtype, values[i].data(), tiles[i].tile->n_elems, out);
    }
    if (r > 0) row.samples_ms.push_back(timer.ms());
  }
  row.ms = median(row.samples_ms);
  return row;
}

// Every group's plan, with source offsets relative to the data section and destinations laid
// out one group after another: the whole model decoded in one launch.
struct WholeModelPlan {
  std::vector<cuda::TileTask> tiles;
  std::vector<cuda::BlockTask> blocks;
  uint64_t dst_bytes = 0, src_begin = 0, src_end = 0;
  std::vector<GroupDecodePlan> groups;
};

WholeModelPlan plan_whole_model(const CllmFile& f) {
  WholeModelPlan w;
  w.src_begin = f.groups().empty() ? 0 : f.groups().front().offset;
  for (uint32_t g = 0; g < f.groups().size(); ++g) {
    GroupDecodePlan p = plan_group_decode(f, g);
    for (auto t : p.tiles) {
      t.src += p.src_offset - w.src_begin;
      t.dst += w.dst_bytes;
      w.tiles.push_back(t);
    }
    w.dst_bytes += (p.slot_bytes + 255) / 256 * 256;
    w.src_end = std::max(w.src_end, p.src_offset + p.src_bytes);
    w.groups.push_back(std::move(p));
  }
  w.blocks = plan_blocks(w.tiles);
  return w;
}

// The CPU rows, on up to opt.cpu_max_bytes of decoded tiles: encode, decode on one thread,
// and decode on `threads` when that is more than one.
void add_cpu_rows(const CllmFile& f, const CodecBenchOptions& opt, int threads, CodecBenchResult& res) {
  double sample_bytes = 0;
  const auto sample = cpu_sample(f, opt.cpu_max_bytes, &sample_bytes);
  log_info("bench: CPU codec on ", sample.size(), " tiles (", sample_bytes / 1e6, " MB decoded)");
  res.rows.push_back(cpu_encode_row(f, sample, sample_bytes, opt.reps));
  res.rows.push_back(cpu_decode_row(f, sample, sample_bytes, 1, opt.reps));
  if (threads > 1) res.rows.push_back(cpu_decode_row(f, sample, sample_bytes, threads, opt.reps));
}

// The whole model decoded in one launch; its output lands in gpu_out for the bit-exactness check.
CodecBenchRow gpu_whole_model_row(const CllmFile& f, const WholeModelPlan& w, double copy_gbps, int reps,
                                  std::vector<uint8_t>& gpu_out) {
  uint64_t decoded = 0, src_bytes = w.src_end - w.src_begin;
  for (const auto& t : w.tiles) decoded += static_cast<uint64_t>(t.n_elems) * t.elem_bytes;
  log_info("bench: GPU decoder, whole model: ", w.tiles.size(), " tiles, ", w.blocks.size(), " blocks, ",
           decoded / 1e6, " MB out of ", src_bytes / 1e6, " MB");
  int error = 0;
  CodecBenchRow row;
  row.test = "gpu decode, whole model";
  row.bytes = static_cast<double>(decoded);
  row.samples_ms = cuda::time_decode(f.file_data() + w.src_begin, src_bytes, w.tiles, w.blocks, w.dst_bytes,
                                     reps, &error, &gpu_out);
  row.ms = median(row.samples_ms);
  // Reading the input and writing the output at copy speed: the decoder's roofline.
  row.ceiling_gbps = copy_gbps * static_cast<double>(decoded) / static_cast<double>(decoded + src_bytes);
  row.ceiling = "copy bandwidth x out/(in+out)";
  CLLM_CHECK(error == 0, "GPU decoder reported corrupt data (flag ", error, ")");
  return row;
}

// Bit-exactness against the CPU reference decoder, tile by tile; warns on the first tensor
// that differs.
bool gpu_matches_cpu(const CllmFile& f, const WholeModelPlan& w, const std::vector<uint8_t>& gpu_out, int threads) {
  ThreadPool pool(threads);
  std::vector<int> bad(w.tiles.size(), 0);
  std::vector<TileRef> refs;
  for (const auto& g : w.groups)
    for (const auto& t : f.tensors()) {
      if (t.group != g.group || t.dtype == DType::U8) continue;
      for (const auto& tile : t.tiles) refs.push_back({&t, &tile});
    }
  CLLM_CHECK(refs.size() == w.tiles.size(), "bench: tile count mismatch");
  pool.parallel_for(refs.size(), [&](size_t i) {
    const auto& [t, tile] = refs[i];
    std::vector<uint8_t> cpu(static_cast<size_t>(tile->n_elems) * dtype_size(t->dtype));
    codec::decode_tile(t->dtype, f.tile_data(*tile), tile->size, cpu.data(), tile->n_elems);
    bad[i] = std::memcmp(cpu.data(), gpu_out.data() + w.tiles[i].dst, cpu.size()) != 0;
  });
  for (size_t k = 0; k < bad.size(); ++k)
    if (bad[k]) {
      log_warn("bench: GPU and CPU decoders differ on tensor '", refs[k].tensor->name, "'");
      return false;
    }
  return true;
}

// Layer by layer, as the resident mode runs: one launch per group into a slot. The roofline
// is the whole-model row's.
CodecBenchRow gpu_per_layer_row(const CllmFile& f, const WholeModelPlan& w, int reps, const CodecBenchRow& whole) {
  int error = 0;
  CodecBenchRow layers;
  layers.test = "gpu decode, per layer";
  double layer_bytes = 0;
  std::vector<double> per_rep(static_cast<size_t>(reps), 0.0);
  for (const auto& g : w.groups) {
    if (g.tiles.empty()) continue;
    uint64_t out = 0;
    for (const auto& t : g.tiles) out += static_cast<uint64_t>(t.n_elems) * t.elem_bytes;
    const auto ms = cuda::time_decode(f.file_data() + g.src_offset, g.src_bytes, g.tiles, g.blocks, g.slot_bytes,
                                      reps, &error, nullptr);
    for (int r = 0; r < reps; ++r) per_rep[static_cast<size_t>(r)] += ms[static_cast<size_t>(r)];
    layer_bytes += static_cast<double>(out);
  }
  layers.bytes = layer_bytes;
  layers.samples_ms = per_rep;
  layers.ms = median(per_rep);
  layers.ceiling_gbps = whole.ceiling_gbps;
  layers.ceiling = whole.ceiling;
  return layers;
}

}  // namespace

CodecBenchResult bench_codec(const CllmFile& f, const CodecBenchOptions& opt) {
  CodecBenchResult res;
  const int threads = opt.threads > 0 ? opt.threads : hardware_threads();
  add_cpu_rows(f, opt, threads, res);

  if (!opt.gpu || cuda::device_count() == 0) return res;
  const auto devices = cuda::list_devices();
  res.device = devices.front().name;
  log_info("bench: measuring ceilings on ", res.device);
  const auto c = cuda::measure_ceilings(size_t{1} << 30, opt.reps);
  res.copy_gbps = c.copy_gbps;
  res.h2d_pinned_gbps = c.h2d_pinned_gbps;
  res.h2d_pageable_gbps = c.h2d_pageable_gbps;

  const WholeModelPlan w = plan_whole_model(f);
  std::vector<uint8_t> gpu_out;
  const CodecBenchRow whole = gpu_whole_model_row(f, w, c.copy_gbps, opt.reps, gpu_out);
  res.rows.push_back(whole);
  res.gpu_bit_exact = gpu_matches_cpu(f, w, gpu_out, threads);
  res.rows.push_back(gpu_per_layer_row(f, w, opt.reps, whole));
  return res;
}

}  // namespace cllm
