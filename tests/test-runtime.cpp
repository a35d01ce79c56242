// Specification of the GPU runtime's host-side planning, which needs no GPU: the weight
// schedule (what each ring step copies and decodes, and where it lands) and the memory plan of
// each mode (what `auto` chooses with, and what an out-of-VRAM error quotes).
#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "convert/compress.h"
#include "convert/source_model.h"
#include "convert/synth.h"
#include "format/cllm_reader.h"
#include "runtime/fused_parts.h"
#include "runtime/memory_plan.h"
#include "runtime/path_speeds.h"
#include "runtime/placement_plan.h"
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
    for (const LayerTensorDesc& d : llama_architecture().layer) {
      const int t = d.role;
      CHECK(step.tensor[t]->name == layer_tensor_name(static_cast<int>(l), d));
      CHECK(step.offset[t] % 256 == 0);
      CHECK(step.offset[t] + step.tensor[t]->raw_bytes() <= step.slot_bytes);
    }
    CHECK(step.tensor[kAttnQBias] == nullptr);  // a Llama has no biases
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
  // A ring of one slot: half the slots' VRAM, the rest unchanged; 1 or 2 slots only.
  const Placements streamed = uniform_placements(s, Mode::lowmem);
  CHECK(plan_memory(s, c, streamed, ctx, batch, 1).slots == lowmem.slots / 2);
  CHECK(plan_memory(s, c, streamed, ctx, batch, 1).staging == lowmem.staging);
  CHECK_THROWS_WITH(plan_memory(s, c, streamed, ctx, batch, 3), Contains("1 or 2 slots"));
  // f32 model: f32 KV cache, (layers, context, kv_dim) for keys and for values
  CHECK(full.kv_cache == 2 * uint64_t(5) * ctx * c.kv_dim() * 4);
  CHECK(full.kv_cache == lowmem.kv_cache);
  CHECK(full.activations == lowmem.activations);

  // auto: the fastest mode (full, fused, resident, lowmem) whose plan fits.
  std::vector<uint64_t> need;  // in kModesFastestFirst's order
  for (Mode m : kModesFastestFirst) need.push_back(plan_memory(s, c, m, ctx, batch).total());
  for (uint64_t available : need) {
    const Mode m = choose_mode(s, c, ctx, batch, available);
    INFO("available " << available << " -> " << mode_name(m));
    const size_t k = std::find(std::begin(kModesFastestFirst), std::end(kModesFastestFirst), m) - std::begin(kModesFastestFirst);
    REQUIRE(k < need.size());
    CHECK(need[k] <= available);
    for (size_t faster = 0; faster < k; ++faster) CHECK(need[faster] > available);
  }
  CHECK(choose_mode(s, c, ctx, batch, UINT64_MAX) == Mode::full);
  CHECK_THROWS_WITH(choose_mode(s, c, ctx, batch, *std::min_element(need.begin(), need.end()) - 1),
                    Contains("out of VRAM") && Contains("no mode fits"));
  const Error e = out_of_vram_error(s, c, Mode::full, ctx, batch, lowmem.total());
  CHECK_THAT(e.what(), Contains("mode full needs") && Contains("would fit"));
  CHECK(e.remedy().kind == Remedy::mode);
  CHECK(e.remedy().value == "lowmem");  // the runtime names no flag: the CLI says --mode lowmem
  const Error none = out_of_vram_error(s, c, Mode::lowmem, ctx, batch, 1);
  CHECK(none.remedy().kind == Remedy::smaller_context);
  CHECK(none.remedy().value == "256");
}

TEST_CASE("memory plans: fused mode keeps bf16 matrices in the fused layout and the rest decoded", "[runtime]") {
  test::TempDir dir;
  const std::string path = dir.file("bf16.cllm");
  compress_model(open_source_model(test::fixture_dir("hf-qwen2-bf16-tied")), path, CompressOptions{});
  const CllmFile f = CllmFile::open(path);
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  REQUIRE(s.linear_dtype == DType::BF16);
  const int ctx = 64, batch = 64;
  const MemoryPlan full = plan_memory(s, c, Mode::full, ctx, batch);
  const MemoryPlan fused = plan_memory(s, c, Mode::fused, ctx, batch);
  CHECK(uniform_placements(s, Mode::fused) == Placements(s.layers.size() + s.classifier.size(), Placement::fused));
  CHECK(mode_of(uniform_placements(s, Mode::fused)) == Mode::fused);
  CHECK(std::string(mode_name(Mode::fused)) == "fused");
  // Every layer's 2-D bf16 tensors are fused; its norms and q/k/v biases (1-D) stay decoded.
  const StepParts layer = step_parts(s, s.layers[0]);
  CHECK(layer.fused.size() == 7);
  for (const StepPart& p : layer.fused) CHECK((p.rows > 1 && p.cols > 1 && p.bytes == uint64_t{p.rows} * p.cols * 2));
  for (const StepPart& p : layer.decoded) CHECK(s.layers[0].tensor[p.role]->shape.size() == 1);
  CHECK(layer.decoded.size() == 5);  // two norms, three biases
  // The tied classifier is bf16: its slices are fused too.
  for (const WeightStep& slice : s.classifier) CHECK(step_parts(s, slice).fused.size() == 1);
  // VRAM: output_norm decoded, the steps fused, one slot for prompts; token_embd in pinned host RAM.
  CHECK(fused.fused > 0);
  CHECK(fused.weights > fused.fused);
  CHECK(fused.weights < fused.fused + s.token_embd->raw_bytes());
  CHECK(fused.host_pinned == (s.token_embd->raw_bytes() + 255) / 256 * 256);
  CHECK_THAT(fused.describe(), Contains("host RAM: token_embd"));
  CHECK(fused.slots == 2 * ((s.slot_bytes + 255) / 256 * 256));  // one decoded ahead of the other for prompts
  // Where two slots do not fit, one: the least fused plan, which auto and fused_slots go by.
  const MemoryPlan one = plan_memory(s, c, Mode::fused, ctx, batch, 1);
  CHECK(one.slots == fused.slots / 2);
  CHECK(one.total() == fused.total() - fused.slots / 2);
  CHECK(plan_memory_least(s, c, Mode::fused, ctx, batch).total() == one.total());
  CHECK(plan_memory_least(s, c, Mode::full, ctx, batch).total() == full.total());
  CHECK(fused_slots(s, c, ctx, batch, fused.total()) == 2);
  CHECK(fused_slots(s, c, ctx, batch, fused.total() - 1) == 1);
  CHECK(choose_mode(s, c, ctx, batch, one.total()) == (full.total() <= one.total() ? Mode::full : Mode::fused));
  CHECK(fused.kv_cache == full.kv_cache);
  CHECK(fused.activations == full.activations);
  CHECK_THAT(fused.describe(), Contains("in the fused layout"));
  // The schedule carries each step's fused sizes, which the plans add up.
  CHECK(s.layers[0].fused_bytes == layer.fused_bytes_planned());
  CHECK(s.layers[0].fused_rest_bytes == layer.decoded_bytes());
  // Fused steps in a hybrid plan: the same bytes each; batches decode them into the ring's
  // slots; token_embd is looked up on the host, as in every hybrid plan.
  Placements mixed = uniform_placements(s, Mode::fused);
  mixed[0] = Placement::decoded;
  const MemoryPlan hybrid = plan_memory(s, c, mixed, ctx, batch);
  CHECK(hybrid.mode == Mode::hybrid);
  CHECK(hybrid.fused == fused.fused - s.layers[0].fused_bytes);
  CHECK(hybrid.weights == fused.weights - s.layers[0].fused_bytes - s.layers[0].fused_rest_bytes +
                              (s.layers[0].slot_bytes + 255) / 256 * 256);
  CHECK(hybrid.slots == fused.slots);
  CHECK(hybrid.host_pinned == 0);
  CHECK(describe_placements(mixed) == cat("1 decoded, 0 resident, 0 streamed, ", mixed.size() - 1, " fused"));
  // One fused step among decoded ones: batches still need the ring's two slots for it.
  Placements fused_and_decoded(mixed.size(), Placement::decoded);
  fused_and_decoded[1] = Placement::fused;
  CHECK(plan_memory(s, c, fused_and_decoded, ctx, batch).slots == 2 * ((s.layers[1].slot_bytes + 255) / 256 * 256));
}

TEST_CASE("fused planes: sizes by the layout's rules, 256-byte aligned, and an escape allowance", "[runtime]") {
  const FusedPlaneSizes z = fused_plane_sizes(3, 77);  // stride 80, one base per row
  CHECK(z.stride == 80);
  CHECK(z.group == 80);
  CHECK(z.codes_at == 256);                    // 3 x 80 bytes
  CHECK(z.bases_at == z.codes_at + 256);       // 3 x 10 code words
  CHECK(z.escape_start_at == z.bases_at + 256);
  CHECK(z.planes == z.escape_start_at + 256);  // 4 offsets
  const FusedPlaneSizes big = fused_plane_sizes(4096, 4096);
  CHECK(big.codes_at == 4096ull * 4096);
  CHECK(big.bases_at - big.codes_at == 4096ull * 4096 / 2);
  CHECK(fused_escape_allowance(4096, 4096) == 4096ull * 4096 / 256 * 4);
  CHECK(fused_escape_allowance(1, 1) == 256);
  CHECK_THROWS_WITH(fused_plane_sizes(0, 8), Contains("0 x 8"));
}

TEST_CASE("modes by name", "[runtime]") {
  CHECK(std::string(mode_name(Mode::full)) == "full");
  CHECK(std::string(mode_name(Mode::resident)) == "resident");
  CHECK(std::string(mode_name(Mode::lowmem)) == "lowmem");
  CHECK(std::string(mode_name(Mode::hybrid)) == "hybrid");
  CHECK(kv_cache_dtype(DType::BF16) == DType::F16);
  CHECK(kv_cache_dtype(DType::F32) == DType::F32);
}

namespace {

// Path speeds shaped like the H200 machine's (PCIe 55 GB/s, CPU layers ~100 GB/s), or with
// a CPU too slow to be worth using.
PathSpeeds machine_speeds(double cpu_gbs) {
  PathSpeeds v;
  v.pcie_gbs = 55;
  v.pcie_busy_gbs = 48;
  v.decode_gbs = 1500;
  v.gpu_gbs = 2500;
  v.cpu_gbs_1 = cpu_gbs;
  v.cpu_gbs_8 = cpu_gbs * 0.8;
  v.handover_ms = 0.03;
  v.cpu_threads = 16;
  return v;
}

int count(const Placements& p, Placement x) { return static_cast<int>(std::count(p.begin(), p.end(), x)); }

// A Llama 3.1 shape (GQA 8 KV heads of 128, vocab 128256) with the given width, depth and heads.
LlamaConfig llama31_shape(int dim, int layers, int heads, int ffn) {
  LlamaConfig c;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = 8;
  c.head_dim = 128;
  c.ffn_dim = ffn;
  c.vocab_size = 128256;
  return c;
}

}  // namespace

TEST_CASE("a VRAM budget plans each step: every plan fits, and more VRAM is never slower", "[runtime]") {
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::compress_stories(dir));
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  const int ctx = 256, batch = 64;
  const uint64_t lowmem = plan_memory(s, c, Mode::lowmem, ctx, batch).total();
  const uint64_t full = plan_memory(s, c, Mode::full, ctx, batch).total();
  const uint64_t resident = plan_memory(s, c, Mode::resident, ctx, batch).total();
  // The least VRAM: every layer on the CPU (its KV cache in host RAM), the classifier streamed, one slot.
  Placements least(s.layers.size(), Placement::cpu);
  least.insert(least.end(), s.classifier.size(), Placement::streamed);
  const uint64_t smallest = plan_memory(s, c, least, ctx, batch, 1).total();
  CHECK(smallest < lowmem);
  CHECK_NOTHROW(plan_placements(s, c, ctx, batch, smallest, machine_speeds(100), 0));
  CHECK_THROWS_WITH(plan_placements(s, c, ctx, batch, smallest - 1, machine_speeds(100), 0),
                    Contains("out of VRAM: the smallest plan"));
  CHECK_THROWS_WITH(plan_placements(s, c, ctx, batch, lowmem, machine_speeds(100), 1),
                    Contains("out of host RAM"));

  for (const double cpu_gbs : {0.001, 100.0}) {
    INFO("CPU layers at " << cpu_gbs << " GB/s");
    const PathSpeeds v = machine_speeds(cpu_gbs);
    double prev_ms = 1e30;
    bool saw_hybrid = false;
    for (int k = 0; k <= 40; ++k) {
      const uint64_t budget = lowmem + (std::max(full, resident) - lowmem) * k / 40;
      const PlacementPlan plan = plan_placements(s, c, ctx, batch, budget, v, 0);
      INFO("budget " << budget << ": " << describe_placements(plan.placements));
      CHECK(plan_memory(s, c, plan.placements, ctx, batch, plan.ring_slots).total() <= budget);
      CHECK(plan.token.total_ms() <= prev_ms * 1.005);
      prev_ms = plan.token.total_ms();
      saw_hybrid = saw_hybrid || mode_of(plan.placements) == Mode::hybrid;
      // Only layers ever go to the CPU, and a CPU too slow to help gets none.
      for (size_t i = s.layers.size(); i < plan.placements.size(); ++i) CHECK(plan.placements[i] != Placement::cpu);
      if (cpu_gbs < 1) CHECK(count(plan.placements, Placement::cpu) == 0);
    }
    CHECK(saw_hybrid);
    CHECK(mode_of(plan_placements(s, c, ctx, batch, full + resident, v, 0).placements) == Mode::full);
  }
}

TEST_CASE("below full mode's VRAM, auto takes fused mode and a VRAM budget fused steps", "[runtime]") {
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::synth_tiny_bf16(dir));
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  const int ctx = 64, batch = 64;
  const uint64_t full = plan_memory(s, c, Mode::full, ctx, batch).total();
  const uint64_t fused = plan_memory_least(s, c, Mode::fused, ctx, batch).total();  // one slot for prompts
  REQUIRE(fused < full);
  // auto: full where it fits, else fused (about full's speed, against resident's ~0.3 x).
  CHECK(choose_mode(s, c, ctx, batch, full) == Mode::full);
  CHECK(choose_mode(s, c, ctx, batch, full - 1) == Mode::fused);
  CHECK(choose_mode(s, c, ctx, batch, fused) == Mode::fused);
  CHECK(choose_mode(s, c, ctx, batch, fused - 1) != Mode::fused);
  const Error error = out_of_vram_error(s, c, Mode::full, ctx, batch, fused);
  CHECK_THAT(error.what(), Contains("mode fused") && Contains("would fit"));
  CHECK(error.remedy().value == "fused");
  // --vram-budget: full where it fits, from the planner's estimates.
  const PathSpeeds v = machine_speeds(100);
  const auto mode_at = [&](uint64_t budget) { return mode_of(plan_placements(s, c, ctx, batch, budget, v, 0).placements); };
  CHECK(mode_at(full) == Mode::full);  // full mode's kernels beat the fused products where both fit
  // Below it, fused steps, with decoded ones where they fit (a hybrid's token_embd is looked up
  // on the host, and its ring slot fits its fused steps only): never slower than fused mode,
  // nothing through the ring per token.
  const double fused_ms = estimate_pass(s, uniform_placements(s, Mode::fused), v, 1, true).total_ms();
  for (const uint64_t budget : {full - 1, (full + fused) / 2, fused}) {
    const PlacementPlan plan = plan_placements(s, c, ctx, batch, budget, v, 0);
    INFO("budget " << budget << ": " << describe_placements(plan.placements));
    CHECK(count(plan.placements, Placement::fused) > 0);
    CHECK(count(plan.placements, Placement::fused) + count(plan.placements, Placement::decoded) ==
          static_cast<int>(plan.placements.size()));
    CHECK(plan.token.total_ms() <= fused_ms);
    CHECK(plan_memory(s, c, plan.placements, ctx, batch, plan.ring_slots).total() <= budget);
  }
  // Below the least fused plan, the fused steps stay beside resident or streamed ones.
  const PlacementPlan less = plan_placements(s, c, ctx, batch, fused - 1, v, 0);
  INFO("below fused mode: " << describe_placements(less.placements));
  CHECK(mode_of(less.placements) == Mode::hybrid);
  CHECK(count(less.placements, Placement::fused) > 0);
  // The estimate: fused steps' kernels at kFusedSpeed x the decoded kernels' rate, nothing in the ring.
  const PassEstimate e = estimate_pass(s, uniform_placements(s, Mode::fused), v, 1, true);
  const PassEstimate d = estimate_pass(s, uniform_placements(s, Mode::full), v, 1, true);
  CHECK(e.gpu_ms == Approx(d.gpu_ms / kFusedSpeed));
  CHECK(e.decode_ms == 0);
  CHECK(e.pcie_ms == 0);
  // Host RAM too small for fused mode's pinned token_embd: no uniform fused plan.
  CHECK(mode_of(plan_placements(s, c, ctx, batch, full - 1, v, 1).placements) != Mode::fused);
}

TEST_CASE("the planner puts layers on a fast CPU when VRAM is short, interleaved with streamed ones", "[runtime]") {
  // A Llama-3.1-8B-shaped schedule: 32 layers of 436 MiB decoded, 290 MiB compressed, and a
  // 1 GiB classifier in 4 slices; no file needed.
  WeightSchedule s;
  for (int l = 0; l < 32; ++l) {
    WeightStep w;
    w.layer = l;
    w.slot_bytes = 436ull << 20;
    w.src_bytes = 290ull << 20;
    s.layers.push_back(w);
  }
  for (int k = 0; k < 4; ++k) {
    WeightStep w;
    w.row_begin = k * 32064;
    w.row_end = (k + 1) * 32064;
    w.slot_bytes = 251ull << 20;
    w.src_bytes = 170ull << 20;
    s.classifier.push_back(w);
  }
  TensorInfo norm;
  norm.dtype = DType::BF16;
  norm.shape = {4096};
  s.output_norm = &norm;
  s.linear_dtype = DType::BF16;
  s.decoded_bytes = 32 * (436ull << 20) + 2 * 4 * (251ull << 20);  // full mode: layers, classifier, embeddings
  const LlamaConfig c = llama31_shape(4096, 32, 32, 14336);
  const int ctx = 640, batch = 512;

  const PlacementPlan small = plan_placements(s, c, ctx, batch, 2560ull << 20, machine_speeds(100), 0);
  INFO(describe_placements(small.placements) << ", " << small.token.total_ms() << " ms, bound by " << small.token.bound());
  const int cpu = count(small.placements, Placement::cpu), streamed = count(small.placements, Placement::streamed);
  // About half the bytes each way: PCIe (55 GB/s on 2/3 of the bytes) against the CPU (100 GB/s).
  CHECK(cpu >= 12);
  CHECK(cpu <= 20);
  CHECK(streamed >= 10);
  // ... and faster than lowmem or the CPU alone.
  const PathSpeeds v = machine_speeds(100);
  CHECK(small.token.total_ms() < estimate_pass(s, uniform_placements(s, Mode::lowmem), v, 1, true).total_ms() * 0.7);
  // Interleaved: no two CPU layers in a row more than once or twice.
  int runs_of_two = 0;
  for (size_t l = 1; l < s.layers.size(); ++l)
    runs_of_two += small.placements[l] == Placement::cpu && small.placements[l - 1] == Placement::cpu;
  CHECK(runs_of_two <= 2);
  // Single tokens and small batches use the CPU; a prompt batch streams the CPU layers.
  CHECK(small.cpu_max_batch >= 1);
  CHECK(small.cpu_max_batch < 64);
  CHECK(estimate_pass(s, small.placements, v, 512, false, small.ring_slots).total_ms() <
        estimate_pass(s, small.placements, v, 512, true, small.ring_slots).total_ms());
  // Less host RAM: fewer decoded CPU layers, within it.
  const uint64_t ram = 11ull << 30;
  const PlacementPlan less_ram = plan_placements(s, c, ctx, batch, 2560ull << 20, v, ram);
  const MemoryPlan m = plan_memory(s, c, less_ram.placements, ctx, batch, less_ram.ring_slots);
  CHECK(m.host_decoded + m.host_pinned <= ram);
  CHECK(count(less_ram.placements, Placement::cpu) < cpu);
  // Its ring has one slot: CPU layers between the streamed ones hide each decode, and the
  // slot's VRAM holds more resident steps than two slots would allow.
  CHECK(small.ring_slots == 1);
  CHECK(plan_memory(s, c, small.placements, ctx, batch, 1).slots == (436ull << 20));
  CHECK(count(small.placements, Placement::resident) + count(small.placements, Placement::decoded) >= 4);
  // Half the model's VRAM: most layers in VRAM, a few on the CPU or streamed.
  const PlacementPlan half = plan_placements(s, c, ctx, batch, 8ull << 30, v, 0);
  INFO(describe_placements(half.placements));
  CHECK(count(half.placements, Placement::decoded) + count(half.placements, Placement::resident) >= 16);
  CHECK(half.token.total_ms() < small.token.total_ms() / 1.5);
  // All the VRAM: every step decoded (the decoder would share the GPU with the kernels).
  const PlacementPlan all = plan_placements(s, c, ctx, batch, 40ull << 30, v, 0);
  INFO(describe_placements(all.placements));
  CHECK(count(all.placements, Placement::decoded) == static_cast<int>(all.placements.size()));
}

TEST_CASE("below fused mode's VRAM the planner keeps layers fused beside resident and streamed ones (70B-shaped)",
          "[runtime]") {
  // A Llama-3.1-70B-shaped schedule, no file needed: 80 layers of 1632 MiB decoded, 1080 MiB
  // compressed, 1270 MiB in the fused layout; a 2 GiB classifier in 4 slices.
  WeightSchedule s;
  const auto add = [](std::vector<WeightStep>& steps, int layer, uint64_t slot_mib, uint64_t src_mib, uint64_t fused_mib) {
    WeightStep w;
    w.layer = layer;
    w.slot_bytes = slot_mib << 20;
    w.src_bytes = src_mib << 20;
    w.fused_bytes = fused_mib << 20;
    w.fused_rest_bytes = 64 << 10;
    steps.push_back(w);
  };
  for (int l = 0; l < 80; ++l) add(s.layers, l, 1632, 1080, 1270);
  for (int k = 0; k < 4; ++k) add(s.classifier, -1, 501, 330, 390);
  TensorInfo norm, embd;
  norm.dtype = embd.dtype = DType::BF16;
  norm.shape = {8192};
  embd.shape = {128256, 8192};
  s.output_norm = &norm;
  s.token_embd = &embd;
  s.slot_bytes = 1632ull << 20;
  s.decoded_bytes = 80 * (1632ull << 20) + 2 * 4 * (501ull << 20);
  const LlamaConfig c = llama31_shape(8192, 80, 64, 28672);
  const int ctx = 4096, batch = 512;
  const PathSpeeds v = machine_speeds(100);
  const MemoryPlan fused = plan_memory(s, c, Mode::fused, ctx, batch);
  // Where fused mode fits, it is the plan (nothing decoded fits beside it).
  const PlacementPlan all = plan_placements(s, c, ctx, batch, fused.total(), v, 0);
  CHECK(mode_of(all.placements) == Mode::fused);
  CHECK(all.ring_slots == 2);
  // The same schedule without the fused layout (an f16 file's, say): the plans of before.
  WeightSchedule unfused = s;
  for (WeightStep& w : unfused.layers) w.fused_bytes = w.fused_rest_bytes = 0;
  // 10% less VRAM: over half the layers stay fused, the rest resident or streamed; far faster
  // than the best plan without fused layers.
  const uint64_t ninety = fused.total() / 10 * 9;
  const PlacementPlan less = plan_placements(s, c, ctx, batch, ninety, v, 0);
  const PlacementPlan less_unfused = plan_placements(unfused, c, ctx, batch, ninety, v, 0);
  INFO(describe_placements(less.placements) << ", " << less.token.total_ms() << " ms; without fused layers "
       << describe_placements(less_unfused.placements) << ", " << less_unfused.token.total_ms() << " ms");
  CHECK(count(less.placements, Placement::fused) >= 40);
  CHECK(count(less_unfused.placements, Placement::fused) == 0);
  CHECK(less.token.total_ms() < less_unfused.token.total_ms() * 0.85);
  CHECK(plan_memory(s, c, less.placements, ctx, batch, less.ring_slots).total() <= ninety);
  // Less VRAM than every layer resident: fused layers still have a place.
  const uint64_t tight_budget = plan_memory(s, c, Mode::resident, ctx, batch).total() / 10 * 9;
  const PlacementPlan tight = plan_placements(s, c, ctx, batch, tight_budget, v, 0);
  INFO(describe_placements(tight.placements) << ", " << tight.token.total_ms() << " ms");
  CHECK(count(tight.placements, Placement::fused) > 0);
  CHECK(tight.token.total_ms() <= plan_placements(unfused, c, ctx, batch, tight_budget, v, 0).token.total_ms());
  CHECK(plan_memory(s, c, tight.placements, ctx, batch, tight.ring_slots).total() <= tight_budget);
}

TEST_CASE("interleaving spreads each placement evenly", "[runtime]") {
  const int two_and_two[kPlacements] = {0, 0, 2, 2, 0};
  CHECK(interleave_layers(two_and_two) ==
        Placements{Placement::streamed, Placement::cpu, Placement::streamed, Placement::cpu});
  const int mixed[kPlacements] = {1, 0, 4, 3, 0};
  const Placements p = interleave_layers(mixed);
  REQUIRE(p.size() == 8);
  CHECK(count(p, Placement::decoded) == 1);
  CHECK(count(p, Placement::streamed) == 4);
  CHECK(count(p, Placement::cpu) == 3);
  for (size_t i = 1; i < p.size(); ++i) CHECK_FALSE((p[i] == Placement::cpu && p[i - 1] == Placement::cpu));
  CHECK(describe_placements(p) == "1 decoded, 0 resident, 4 streamed, 3 CPU");
  CHECK(describe_placements({Placement::decoded, Placement::streamed, Placement::streamed}) ==
        "1 decoded, 0 resident, 2 streamed");
}

TEST_CASE("a pass's estimate: the longer of the compute chain (CPU, kernels, decodes not hidden) and PCIe", "[runtime]") {
  WeightSchedule s;
  for (int l = 0; l < 3; ++l) {
    WeightStep w;
    w.layer = l;
    w.slot_bytes = 1000000000;  // 1 GB decoded
    w.src_bytes = 500000000;    // 0.5 GB compressed
    s.layers.push_back(w);
  }
  PathSpeeds v = machine_speeds(100);
  v.pcie_gbs = 50, v.pcie_busy_gbs = 0, v.decode_gbs = 1000, v.gpu_gbs = 2000, v.handover_ms = 0.5;
  using P = Placement;
  // Each step: 0.5 ms of kernels (1 GB at 2000 GB/s), 1 ms of decoding, 10 ms of PCIe or of CPU.
  const PassEstimate lowmem = estimate_pass(s, {P::streamed, P::streamed, P::streamed}, v, 1, true);
  CHECK(lowmem.pcie_ms == Approx(30.0));
  CHECK(lowmem.decode_ms == Approx(3.0));
  CHECK(lowmem.gpu_ms == Approx(1.5));
  CHECK(lowmem.compute_ms == Approx(1.5 + 3.0));  // kernels and decoder share the GPU: they add
  CHECK(lowmem.total_ms() == Approx(30.0));
  CHECK(std::string(lowmem.bound()) == "PCIe");
  const PassEstimate resident = estimate_pass(s, {P::resident, P::resident, P::decoded}, v, 1, true);
  CHECK(resident.pcie_ms == 0);
  CHECK(resident.total_ms() == Approx(1.5 + 2.0));
  CHECK(std::string(resident.bound()) == "GPU");
  // A CPU layer: 10 ms of CPU plus one hand-over on the compute chain; the decodes of the ring
  // steps after it (one per ring slot) happen meanwhile. Streamed when cpu_route is off.
  const PassEstimate one_cpu = estimate_pass(s, {P::cpu, P::streamed, P::resident}, v, 1, true);
  CHECK(one_cpu.cpu_ms == Approx(10.0 + 0.5));
  CHECK(one_cpu.compute_ms == Approx(10.5 + 1.0));
  CHECK(one_cpu.pcie_ms == Approx(10.0));
  CHECK(std::string(one_cpu.bound()) == "CPU");
  CHECK(estimate_pass(s, {P::cpu, P::streamed, P::resident}, v, 1, true, 1).compute_ms == Approx(10.5 + 1.0 + 1.0));
  CHECK(estimate_pass(s, {P::cpu, P::streamed, P::resident}, v, 1, false).pcie_ms == Approx(20.0));
  // Two CPU layers in a row are one run: one hand-over.
  CHECK(estimate_pass(s, {P::cpu, P::cpu, P::decoded}, v, 1, true).cpu_ms == Approx(20.5));
  // Beside CPU layers, copies run at PCIe's measured rate under that load.
  v.pcie_busy_gbs = 25;
  CHECK(estimate_pass(s, {P::cpu, P::streamed, P::decoded}, v, 1, true).pcie_ms == Approx(20.0));
  CHECK(estimate_pass(s, {P::cpu, P::streamed, P::decoded}, v, 1, false).pcie_ms == Approx(20.0));  // no CPU work
  CHECK(estimate_pass(s, {P::streamed, P::streamed, P::decoded}, v, 1, true).pcie_ms == Approx(20.0));
  v.pcie_busy_gbs = 0;
  // At 8 tokens the CPU reads the weights once at 80 GB/s: 12.5 ms.
  CHECK(v.cpu_ms(1e9, 8) == Approx(12.5));
  CHECK(v.cpu_ms(1e9, 1) == Approx(10.0));
}

TEST_CASE("path speeds: the CPU layer is measured on the model's shape, and the cache keeps them", "[runtime]") {
  test::TempDir dir, cache;
  const CllmFile f = CllmFile::open(test::compress_stories(dir));
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  PathSpeeds v = machine_speeds(1);
  measure_cpu_layer(s, c, 2, v);
  CHECK(v.cpu_gbs_1 > 0);
  CHECK(v.cpu_gbs_8 > 0);
  CHECK(v.cpu_threads == 2);
  // With a background load, each timing starts it, runs passes while it lasts (at least 3, at
  // most 200), and waits for it: a load that lasts 10 polls keeps each timing for 10 more passes.
  int starts = 0, finishes = 0, polls = 0, left = 0;
  BackgroundLoad load;
  load.start = [&] { ++starts, left = 10; };
  load.running = [&] { return ++polls, left-- > 0; };
  load.finish = [&] { ++finishes; };
  measure_cpu_layer(s, c, 2, v, &load);
  CHECK(starts == 2);
  CHECK(finishes == 2);
  CHECK(polls == 2 * 11);
  CHECK(v.cpu_gbs_1 > 0);
  ::setenv("XDG_CACHE_HOME", cache.path().c_str(), 1);
  const std::string key = path_speeds_key("Some GPU", s, c, 2);
  PathSpeeds back;
  CHECK_FALSE(load_path_speeds(key, back));
  save_path_speeds(key, v);
  REQUIRE(load_path_speeds(key, back));
  CHECK(back.pcie_gbs == v.pcie_gbs);
  CHECK(back.pcie_busy_gbs == v.pcie_busy_gbs);
  CHECK(back.cpu_gbs_1 == v.cpu_gbs_1);
  CHECK(back.handover_ms == v.handover_ms);
  CHECK_FALSE(load_path_speeds(path_speeds_key("Another GPU", s, c, 2), back));
  ::setenv("CLLM_RECALIBRATE", "1", 1);
  CHECK_FALSE(load_path_speeds(key, back));
  ::unsetenv("CLLM_RECALIBRATE");
  // A damaged cache is ignored, not an error.
  std::ofstream(cache.file("codecllm/path-speeds.json")) << "{not json";
  CHECK_FALSE(load_path_speeds(key, back));
  save_path_speeds(key, v);
  CHECK(load_path_speeds(key, back));
  ::unsetenv("XDG_CACHE_HOME");
  CHECK(host_ram_available() > 0);
}

TEST_CASE("a CPU layer's memory: its compressed bytes pinned, its weights decoded in host RAM, VRAM as streamed", "[runtime]") {
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::compress_stories(dir));
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  Placements p = uniform_placements(s, Mode::lowmem);
  const MemoryPlan lowmem = plan_memory(s, c, p, 256, 64);
  p[0] = Placement::cpu;
  const MemoryPlan one_cpu = plan_memory(s, c, p, 256, 64);
  CHECK(one_cpu.total() == lowmem.total());
  CHECK(one_cpu.host_pinned == lowmem.host_pinned);
  CHECK(one_cpu.host_decoded >= s.layers[0].slot_bytes);
  CHECK(mode_of(p) == Mode::hybrid);
  p.back() = Placement::cpu;  // a classifier slice
  CHECK_THROWS_WITH(plan_memory(s, c, p, 256, 64), Contains("only layers"));
}
