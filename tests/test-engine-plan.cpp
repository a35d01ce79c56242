// Specification of the GPU engine's plan (runtime/engine_plan.h), which needs no GPU: what a
// mode, auto, a VRAM budget or given placements turn into, and the errors when nothing fits.
#include <catch2/catch.hpp>
#include <algorithm>

#include "format/cllm_reader.h"
#include "runtime/engine_plan.h"
#include "runtime/weight_schedule.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Matchers::Contains;

namespace {

struct Stories {
  test::TempDir dir;
  CllmFile f = CllmFile::open(test::compress_stories(dir));
  LlamaConfig c = config_from_metadata(f.metadata());
  WeightSchedule s = plan_weight_schedule(f, c);
  static constexpr int ctx = 256, batch = 64;
  uint64_t need(Mode m) const { return plan_memory(s, c, m, ctx, batch).total(); }
};

EngineMachine with_vram(uint64_t available) {
  EngineMachine m;
  m.available = available;
  return m;
}

EngineRequest asking(std::optional<Mode> mode) {
  EngineRequest r;
  r.mode = mode;
  return r;
}

}  // namespace

TEST_CASE("a named mode is planned as asked, and refused with the mode that fits when it does not", "[runtime]") {
  Stories m;
  const EnginePlan p = plan_engine(m.s, m.c, asking(Mode::resident), m.ctx, m.batch, with_vram(UINT64_MAX));
  CHECK(p.mode == Mode::resident);
  CHECK_FALSE(p.chosen);
  CHECK(p.placements == uniform_placements(m.s, Mode::resident));
  CHECK(p.memory.total() == m.need(Mode::resident));
  CHECK(p.cpu_max_batch == 0);
  CHECK(p.summary.empty());
  CHECK_THROWS_WITH(plan_engine(m.s, m.c, asking(Mode::full), m.ctx, m.batch, with_vram(m.need(Mode::lowmem))),
                    Contains("mode full needs") && Contains("would fit"));
}

TEST_CASE("fused mode keeps a second slot for prompts where it fits, and runs with one where it does not",
          "[runtime]") {
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::synth_tiny_bf16(dir));
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  const int ctx = 64, batch = 64;
  const uint64_t two = plan_memory(s, c, Mode::fused, ctx, batch, 2).total();
  const uint64_t one = plan_memory(s, c, Mode::fused, ctx, batch, 1).total();
  REQUIRE(one < two);
  const EnginePlan roomy = plan_engine(s, c, asking(Mode::fused), ctx, batch, with_vram(two));
  CHECK(roomy.ring_slots == 2);
  CHECK(roomy.memory.total() == two);
  CHECK(roomy.summary.empty());
  const EnginePlan tight = plan_engine(s, c, asking(Mode::fused), ctx, batch, with_vram(two - 1));
  CHECK(tight.mode == Mode::fused);
  CHECK(tight.ring_slots == 1);
  CHECK(tight.memory.total() == one);
  CHECK_THAT(tight.summary, Contains("one slot"));
  CHECK_THROWS_WITH(plan_engine(s, c, asking(Mode::fused), ctx, batch, with_vram(one - 1)),
                    Contains("mode fused needs"));
  // auto: fused with one slot comes before resident (and after full, which needs more here).
  REQUIRE(plan_memory(s, c, Mode::full, ctx, batch).total() > one);
  const EnginePlan chosen = plan_engine(s, c, asking(std::nullopt), ctx, batch, with_vram(one));
  CHECK(chosen.mode == Mode::fused);
  CHECK(chosen.ring_slots == 1);
}

TEST_CASE("auto takes the fastest mode that fits the free VRAM", "[runtime]") {
  Stories m;
  const EngineRequest r = asking(std::nullopt);
  CHECK(plan_engine(m.s, m.c, r, m.ctx, m.batch, with_vram(UINT64_MAX)).mode == Mode::full);
  const EnginePlan low = plan_engine(m.s, m.c, r, m.ctx, m.batch, with_vram(m.need(Mode::lowmem)));
  CHECK(low.mode == Mode::lowmem);
  CHECK(low.chosen);
  CHECK_THROWS_WITH(plan_engine(m.s, m.c, r, m.ctx, m.batch, with_vram(m.need(Mode::lowmem) - 1)),
                    Contains("no mode fits"));
}

TEST_CASE("a VRAM budget is planned from the path speeds, takes no mode, and fits", "[runtime]") {
  Stories m;
  EngineMachine machine = with_vram(UINT64_MAX);
  machine.speeds.pcie_gbs = 55;
  machine.speeds.decode_gbs = 1500;
  machine.speeds.gpu_gbs = 2500;
  machine.speeds.cpu_gbs_1 = 100;
  machine.speeds.cpu_gbs_8 = 80;
  machine.speeds.cpu_threads = 16;
  machine.speeds_cached = true;
  EngineRequest r;
  r.vram_budget = m.need(Mode::lowmem) + 4096;
  const EnginePlan p = plan_engine(m.s, m.c, r, m.ctx, m.batch, machine);
  CHECK(p.chosen);
  CHECK(p.memory.total() <= r.vram_budget);
  CHECK_THAT(p.summary, Contains("path speeds (cached)") && Contains("tok/s"));
  r.mode = Mode::full;
  CHECK_THROWS_WITH(plan_engine(m.s, m.c, r, m.ctx, m.batch, machine), Contains("takes no mode") && Contains("full"));
}

TEST_CASE("given placements are kept, and CPU layers compute one token unless told otherwise", "[runtime]") {
  Stories m;
  EngineRequest r;
  r.placements = uniform_placements(m.s, Mode::lowmem);
  r.placements[1] = Placement::cpu;
  r.ring_slots = 1;
  const EnginePlan p = plan_engine(m.s, m.c, r, m.ctx, m.batch, with_vram(UINT64_MAX));
  CHECK(p.placements == r.placements);
  CHECK(p.mode == Mode::hybrid);
  CHECK(p.ring_slots == 1);
  CHECK(p.cpu_max_batch == 1);
  r.cpu_max_batch = 1000;
  CHECK(plan_engine(m.s, m.c, r, m.ctx, m.batch, with_vram(UINT64_MAX)).cpu_max_batch == m.batch);
  r.placements.pop_back();
  CHECK_THROWS_WITH(plan_engine(m.s, m.c, r, m.ctx, m.batch, with_vram(UINT64_MAX)), Contains("placements for"));
}
