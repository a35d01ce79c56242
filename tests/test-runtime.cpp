// Specification of the GPU runtime's host-side planning, which needs no GPU: the weight
// schedule (what each ring step copies and decodes, and where it lands) and the memory plan of
// each mode (what `auto` chooses with, and what an out-of-VRAM error quotes).
#include <catch2/catch.hpp>

#include "convert/compress.h"
#include "convert/source_model.h"
#include "format/cllm_reader.h"
#include "runtime/memory_plan.h"
#include "runtime/weight_schedule.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Matchers::Contains;

namespace {

// A tensor of `rows` x `dim` elements cut into tiles of tile_elems (the last one shorter).
TensorInfo tiled_tensor(uint64_t rows, uint64_t dim, uint32_t tile_elems) {
  TensorInfo t;
  t.name = "output.weight";
  t.dtype = DType::BF16;
  t.shape = {rows, dim};
  for (uint64_t e = 0; e < rows * dim; e += tile_elems) {
    TileInfo tile;
    tile.offset = 4096 + e * 2;
    tile.n_elems = static_cast<uint32_t>(std::min<uint64_t>(tile_elems, rows * dim - e));
    tile.size = tile.n_elems * 2;
    t.tiles.push_back(tile);
  }
  return t;
}

}  // namespace

TEST_CASE("classifier slices end on tile boundaries that are row boundaries, as large as fit", "[runtime]") {
  SECTION("tiles of 4 rows, slices of at most 10 rows: 8 + 8 + 4") {
    const TensorInfo t = tiled_tensor(20, 16, 64);
    const auto s = classifier_slices(t, 16, 10 * 16 * 2);
    CHECK(s == std::vector<std::pair<int, int>>{{0, 8}, {8, 16}, {16, 20}});
  }
  SECTION("tiles not aligned to rows: only every third tile boundary is a row boundary") {
    // dim 48, tiles of 32 elements: boundaries at elements 0, 96, 192, ... = rows 0, 2, 4, ...
    const TensorInfo t = tiled_tensor(10, 48, 32);
    const auto s = classifier_slices(t, 48, 5 * 48 * 2);
    CHECK(s == std::vector<std::pair<int, int>>{{0, 4}, {4, 8}, {8, 10}});
  }
  SECTION("a span between boundaries larger than the limit is taken whole") {
    const TensorInfo t = tiled_tensor(12, 16, 96);  // boundaries every 6 rows
    const auto s = classifier_slices(t, 16, 2 * 16 * 2);
    CHECK(s == std::vector<std::pair<int, int>>{{0, 6}, {6, 12}});
  }
  SECTION("everything fits: one slice") {
    const TensorInfo t = tiled_tensor(20, 16, 64);
    CHECK(classifier_slices(t, 16, 1 << 20) == std::vector<std::pair<int, int>>{{0, 20}});
  }
}

TEST_CASE("the weight schedule of stories260K: one step per layer, then the classifier", "[runtime]") {
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::compress_stories(dir));
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  REQUIRE(s.layers.size() == 5);
  CHECK(s.linear_dtype == DType::F32);
  CHECK(s.classifier_tensor == s.token_embd);  // stories260K ties its embeddings
  uint64_t store = 0;
  for (size_t l = 0; l < s.layers.size(); ++l) {
    INFO("layer " << l);
    const WeightStep& step = s.layers[l];
    CHECK(step.layer == static_cast<int>(l));
    CHECK(step.src_offset == f.groups()[step.tensor[kAttnQ]->group].offset);
    CHECK(step.slot_bytes <= s.slot_bytes);
    for (int t = 0; t < kLayerTensors; ++t) {
      CHECK(step.tensor[t]->name == layer_tensor_name(static_cast<int>(l), layer_tensor_part(LayerTensor(t))));
      CHECK(step.offset[t] % 256 == 0);
      CHECK(step.offset[t] + step.tensor[t]->raw_bytes() <= step.slot_bytes);
    }
    for (const auto& tile : step.tiles) {
      CHECK(tile.src % 16 == 0);
      CHECK(tile.src + 1 <= step.src_bytes);
      CHECK(tile.dst + uint64_t{tile.n_elems} * tile.elem_bytes <= step.slot_bytes);
    }
    store += (step.src_bytes + 255) / 256 * 256;
  }
  // The classifier slices cover the vocabulary in order.
  int next = 0;
  for (const WeightStep& step : s.classifier) {
    CHECK(step.layer == -1);
    CHECK(step.row_begin == next);
    next = step.row_end;
    CHECK(step.slot_bytes == uint64_t(step.row_end - step.row_begin) * c.dim * 4);
    store += (step.src_bytes + 255) / 256 * 256;
  }
  CHECK(next == c.vocab_size);
  CHECK(s.store_bytes == store);
}

TEST_CASE("memory plans: what each mode keeps in VRAM, and auto's choice", "[runtime]") {
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::compress_stories(dir));
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  const int ctx = 256, batch = 64;
  const MemoryPlan full = plan_memory(s, c, Mode::full, ctx, batch);
  const MemoryPlan resident = plan_memory(s, c, Mode::resident, ctx, batch);
  const MemoryPlan lowmem = plan_memory(s, c, Mode::lowmem, ctx, batch);

  CHECK(full.weights == s.decoded_bytes);
  CHECK(full.slots == 0);
  CHECK(resident.weights >= s.store_bytes);
  CHECK(resident.slots == 2 * ((s.slot_bytes + 255) / 256 * 256));
  CHECK(resident.staging == 0);
  CHECK(lowmem.weights < 4096);  // output_norm only
  CHECK(lowmem.staging == 2 * ((s.max_src_bytes + 255) / 256 * 256));
  CHECK(lowmem.host_pinned == s.store_bytes);
  // f32 model: f32 KV cache, (layers, context, kv_dim) for keys and for values
  CHECK(full.kv_cache == 2 * uint64_t(5) * ctx * c.kv_dim() * 4);
  CHECK(full.kv_cache == lowmem.kv_cache);
  CHECK(full.activations == lowmem.activations);

  // auto: the fastest mode (full, then resident, then lowmem) whose plan fits.
  const MemoryPlan plans[] = {full, resident, lowmem};
  for (const MemoryPlan& budget : plans) {
    const Mode m = choose_mode(s, c, ctx, batch, budget.total());
    INFO("available " << budget.total() << " -> " << mode_name(m));
    CHECK(plans[static_cast<int>(m)].total() <= budget.total());
    for (int faster = 0; faster < static_cast<int>(m); ++faster) CHECK(plans[faster].total() > budget.total());
  }
  CHECK(choose_mode(s, c, ctx, batch, UINT64_MAX) == Mode::full);
  CHECK_THROWS_WITH(choose_mode(s, c, ctx, batch, std::min({full.total(), resident.total(), lowmem.total()}) - 1), Contains("out of VRAM") && Contains("no mode fits"));
  CHECK_THAT(out_of_vram_message(s, c, Mode::full, ctx, batch, lowmem.total()),
             Contains("--mode full needs") && Contains("would fit"));
}

TEST_CASE("modes by name", "[runtime]") {
  CHECK(parse_mode("full") == Mode::full);
  CHECK(parse_mode("resident") == Mode::resident);
  CHECK(parse_mode("lowmem") == Mode::lowmem);
  CHECK_THROWS_WITH(parse_mode("fast"), Contains("unknown mode 'fast'") && Contains("full, resident, lowmem or auto"));
  CHECK(kv_cache_dtype(DType::BF16) == DType::F16);
  CHECK(kv_cache_dtype(DType::F32) == DType::F32);
}

TEST_CASE("a VRAM budget places each step: streamed, then compressed in VRAM, then decoded", "[runtime]") {
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::compress_stories(dir));
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  const int ctx = 256, batch = 64;
  const uint64_t lowmem = plan_memory(s, c, Mode::lowmem, ctx, batch).total();
  const uint64_t full = plan_memory(s, c, Mode::full, ctx, batch).total();
  const uint64_t resident = plan_memory(s, c, Mode::resident, ctx, batch).total();

  CHECK(mode_of(placements_for_budget(s, c, ctx, batch, lowmem)) == Mode::lowmem);
  CHECK(mode_of(placements_for_budget(s, c, ctx, batch, std::max(full, resident) + (1 << 20))) == Mode::full);
  CHECK_THROWS_WITH(placements_for_budget(s, c, ctx, batch, lowmem - 1), Contains("out of VRAM"));

  // Every budget's plan fits it, and more VRAM never means more bytes over PCIe or more decoding.
  uint64_t prev_streamed = UINT64_MAX, prev_ring = UINT64_MAX;
  bool saw_hybrid = false;
  for (int k = 0; k <= 40; ++k) {
    const uint64_t budget = lowmem + (std::max(full, resident) - lowmem) * k / 40;
    const Placements p = placements_for_budget(s, c, ctx, batch, budget);
    INFO("budget " << budget << ": " << describe_placements(p));
    CHECK(plan_memory(s, c, p, ctx, batch).total() <= budget);
    uint64_t streamed = 0, ring = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      const WeightStep& step = i < s.layers.size() ? s.layers[i] : s.classifier[i - s.layers.size()];
      if (p[i] == Placement::streamed) streamed += step.src_bytes;
      if (p[i] != Placement::decoded) ring += step.slot_bytes;
    }
    CHECK(streamed <= prev_streamed);
    if (streamed == 0 && prev_streamed == 0) CHECK(ring <= prev_ring);
    prev_streamed = streamed;
    prev_ring = ring;
    saw_hybrid = saw_hybrid || mode_of(p) == Mode::hybrid;
  }
  CHECK(saw_hybrid);
  CHECK(describe_placements({Placement::decoded, Placement::streamed, Placement::streamed}) ==
        "1 decoded, 0 resident, 2 streamed");
}

TEST_CASE("sizes as users write them", "[runtime]") {
  CHECK(parse_size("2.5G") == 2684354560ull);
  CHECK(parse_size("512M") == 536870912ull);
  CHECK(parse_size("8GiB") == 8589934592ull);
  CHECK(parse_size("1000") == 1000ull);
  CHECK(parse_size("3gb") == 3221225472ull);
  CHECK_THROWS_WITH(parse_size("lots"), Contains("'lots' is not a size"));
  CHECK_THROWS_WITH(parse_size("2X"), Contains("unknown size unit 'X'"));
  CHECK_THROWS_WITH(parse_size("-1G"), Contains("not a positive size"));
}
