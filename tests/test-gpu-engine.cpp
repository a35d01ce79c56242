// Specification of the GPU engine (runtime/gpu_engine.h): the memory modes (full, resident,
// lowmem, fused, hybrids) give the same logits bit for bit, the GPU agrees with the CPU reference within the documented tolerance
// (docs/architecture.md "GPU numerics"), and greedy text matches. [gpu] tests skip, visibly,
// where no CUDA device exists.
//
// Tolerances (relative L2 error of a row of logits against the CPU's fp32 reference):
// - f32 models: 1e-4. Weights, activations and the KV cache stay fp32; only the summation
//   order of cuBLAS and the attention kernel differ from the CPU's.
// - bf16 models: 3e-2. The inputs of every linear layer are rounded to bf16 (as llama.cpp and
//   transformers do) and the KV cache holds f16; the CPU keeps fp32 throughout.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "common/thread_pool.h"
#include "convert/compress.h"
#include "convert/source_model.h"
#include "convert/synth.h"
#include "format/cllm_reader.h"
#include "model/forward_cpu.h"
#include "model/llama_weights.h"
#include "runtime/fused_parts.h"
#include "runtime/gpu_engine.h"
#include "runtime/placement_plan.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Matchers::Contains;

namespace {

const Mode kModes[] = {Mode::full, Mode::resident, Mode::lowmem};

// Every logits row of a greedy run: the prompt as one batch, then `steps` single tokens.
struct Trace {
  std::vector<std::vector<float>> logits;
  std::vector<int> tokens;
};

template <class Engine>
Trace greedy_trace(Engine& e, const std::vector<int>& prompt, int steps, int vocab) {
  Trace t;
  const float* l = e.forward(prompt.data(), static_cast<int>(prompt.size()), 0, false);
  int pos = static_cast<int>(prompt.size());
  for (int i = 0; i <= steps; ++i) {
    t.logits.emplace_back(l, l + vocab);
    const int next = test::argmax(l, vocab);
    t.tokens.push_back(next);
    if (i < steps) l = e.forward(&next, 1, pos++, false);
  }
  return t;
}

std::unique_ptr<GpuEngine> open_gpu(const CllmFile& f, Mode m, int context = 256, int max_batch = 512) {
  GpuOptions o;
  o.mode = m;
  o.context = context;
  o.max_batch = max_batch;
  o.threads = 2;
  return GpuEngine::open(f, o);
}

Trace cpu_trace(const CllmFile& f, const std::vector<int>& prompt, int steps, int context = 256) {
  ThreadPool pool(2);
  const LlamaWeights w = load_llama_weights(f, &pool);
  CpuForward cpu(w, {context, 2, 64});
  return greedy_trace(cpu, prompt, steps, w.config.vocab_size);
}

// A tiny-test (bf16, GQA 8/4, llama3 rope) model compressed with small tiles, so that its
// classifier is cut into several slices and the ring has many steps.
// max_positions overrides the preset's context length (1024), for tests at depth.
std::string synth_tiny(const test::TempDir& dir, int max_positions = 0) {
  SynthOptions so;
  so.threads = 2;
  synth_model(find_model_preset("tiny-test"), dir.file("tiny"), so);
  if (max_positions > 0) {
    auto config = nlohmann::json::parse(read_text_file(dir.file("tiny/config.json")));
    config["max_position_embeddings"] = max_positions;
    std::ofstream(dir.file("tiny/config.json")) << config.dump(2);
  }
  CompressOptions co;
  co.tile_elems = 1u << 16;
  co.threads = 2;
  const std::string out = dir.file("tiny.cllm");
  compress_model(open_source_model(dir.file("tiny")), out, co);
  return out;
}

void check_modes_identical(const CllmFile& f, const std::vector<int>& prompt, int steps, int context = 256) {
  const int vocab = config_from_metadata(f.metadata()).vocab_size;
  std::vector<Trace> traces;
  for (Mode m : kModes) {
    auto e = open_gpu(f, m, context);
    REQUIRE(e->mode() == m);
    traces.push_back(greedy_trace(*e, prompt, steps, vocab));
  }
  // Fused: the prompt through slots decoded from the fused layout, the tokens through the
  // fused products.
  auto fused = open_gpu(f, Mode::fused, context);
  REQUIRE(fused->mode() == Mode::fused);
  traces.push_back(greedy_trace(*fused, prompt, steps, vocab));
  // A hybrid: layers decoded, resident and streamed in turn, the classifier slices too.
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  GpuOptions o;
  o.context = context;
  o.threads = 2;
  for (size_t i = 0; i < s.layers.size() + s.classifier.size(); ++i) o.placements.push_back(static_cast<Placement>(i % 3));
  auto hybrid = GpuEngine::open(f, o);
  REQUIRE(hybrid->mode() == Mode::hybrid);
  INFO("hybrid: " << describe_placements(hybrid->placements()));
  traces.push_back(greedy_trace(*hybrid, prompt, steps, vocab));
  // The same with a ring of one slot, and everything streamed through one slot.
  o.ring_slots = 1;
  traces.push_back(greedy_trace(*GpuEngine::open(f, o), prompt, steps, vocab));
  o.placements = uniform_placements(s, Mode::lowmem);
  traces.push_back(greedy_trace(*GpuEngine::open(f, o), prompt, steps, vocab));
  // Fused steps beside the others: one token reads their planes, the prompt decodes them into
  // the ring's slots between resident and streamed steps (two slots, then one).
  const Placement cycle[] = {Placement::fused, Placement::resident, Placement::fused, Placement::streamed,
                             Placement::decoded};
  o.placements.clear();
  for (size_t i = 0; i < s.layers.size() + s.classifier.size(); ++i) o.placements.push_back(cycle[i % 5]);
  for (int slots : {2, 1}) {
    o.ring_slots = slots;
    auto mixed = GpuEngine::open(f, o);
    REQUIRE(mixed->mode() == Mode::hybrid);
    traces.push_back(greedy_trace(*mixed, prompt, steps, vocab));
  }
  const char* names[] = {"full", "resident", "lowmem", "fused", "hybrid", "hybrid, one slot", "lowmem, one slot",
                         "hybrid with fused steps", "hybrid with fused steps, one slot"};
  for (size_t m = 1; m < traces.size(); ++m) {
    INFO(names[m] << " against full");
    REQUIRE(traces[m].tokens == traces[0].tokens);
    for (size_t i = 0; i < traces[0].logits.size(); ++i) {
      INFO("token " << i);
      CHECK(std::memcmp(traces[m].logits[i].data(), traces[0].logits[i].data(), sizeof(float) * vocab) == 0);
    }
  }
}

}  // namespace

TEST_CASE("gpu: full, resident, lowmem, fused and a hybrid budget give bitwise-identical logits at every token", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  SECTION("stories260K (f32)") {
    const CllmFile f = CllmFile::open(test::compress_stories(dir));
    check_modes_identical(f, {1, 403, 407, 261, 378}, 40);
  }
  SECTION("tiny-test (bf16, GQA, llama3 rope, the classifier in several slices)") {
    const CllmFile f = CllmFile::open(synth_tiny(dir));
    REQUIRE(plan_weight_schedule(f, config_from_metadata(f.metadata())).classifier.size() > 1);
    check_modes_identical(f, {1, 17, 300, 4000, 12, 99, 2048}, 40);
  }
  // a sliding window of 8, crossed by the prompt and the tokens after it; q, k, v biases; q and
  // k norms with head_dim 32 (q_dim 128 > dim 64); a layer without RoPE; partial rotary and
  // LongRoPE (the RoPE kernel's pass-through dimensions)
  for (const char* name : {"hf-mistral-f32-swa", "hf-mistral-bf16-swa-tied", "hf-qwen2-f32-gqa", "hf-qwen2-bf16-tied",
                           "hf-qwen3-f32-gqa", "hf-qwen3-bf16-tied", "hf-smollm3-f32-nope",
                           "hf-smollm3-bf16-nope-tied", "hf-phi3-f32-longrope", "hf-phi3-bf16-longrope-gqa"}) {
    SECTION(name) {
      const auto expected = nlohmann::json::parse(read_text_file(test::fixture_dir(name) + "/expected.json"));
      const std::string path = dir.file(std::string(name) + ".cllm");
      compress_model(open_source_model(test::fixture_dir(name)), path, CompressOptions{});
      check_modes_identical(CllmFile::open(path), expected["prompts"][0].get<std::vector<int>>(), 30, 64);
    }
  }
}

TEST_CASE("gpu: fused mode: matrices checked at load, full's bits for every batch size, with and without graphs",
          "[gpu][fused]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  const CllmFile f = CllmFile::open(synth_tiny(dir));
  const int vocab = 4096;
  // Every matrix decoded back from its planes at load and compared with its weights.
  ::setenv("CLLM_CHECK_FUSED", "1", 1);
  auto fused = open_gpu(f, Mode::fused, 128, 8);
  ::unsetenv("CLLM_CHECK_FUSED");
  auto full = open_gpu(f, Mode::full, 128, 8);
  INFO("fused plan: " << fused->memory().describe());
  CHECK(fused->memory().fused > 0);
  CHECK(fused->memory().weights < full->memory().weights);
  CHECK(fused->stats().vram_peak <= fused->memory().total() + (256ull << 20));  // as loaded, escapes counted
  // Prompts of 1..9 tokens (9: a batch of 8 and one of 1) and a 37-token one, every row's
  // logits: batches decode into the slot and run cuBLAS, single rows run the fused products.
  std::vector<int> prompt;
  for (int i = 0; i < 37; ++i) prompt.push_back(1 + (i * 97) % 4000);
  for (int n : {1, 2, 3, 5, 8, 9, 37}) {
    INFO(n << " tokens");
    const float* want = full->forward(prompt.data(), n, 0, true);
    const std::vector<float> rows(want, want + static_cast<size_t>(n) * vocab);
    const float* got = fused->forward(prompt.data(), n, 0, true);
    CHECK(std::memcmp(got, rows.data(), rows.size() * sizeof(float)) == 0);
  }
  // One slot for prompts (where two do not fit): each step decoded, then computed, in turn.
  GpuOptions one;
  one.context = 128;
  one.max_batch = 8;
  one.threads = 2;
  one.placements = uniform_placements(plan_weight_schedule(f, config_from_metadata(f.metadata())), Mode::fused);
  one.ring_slots = 1;
  auto single = GpuEngine::open(f, one);
  REQUIRE(single->mode() == Mode::fused);
  CHECK(single->memory().slots * 2 == fused->memory().slots);
  for (int n : {9, 37}) {
    INFO(n << " tokens, one slot");
    const float* want = full->forward(prompt.data(), n, 0, true);
    const std::vector<float> rows(want, want + static_cast<size_t>(n) * vocab);
    const float* got = single->forward(prompt.data(), n, 0, true);
    CHECK(std::memcmp(got, rows.data(), rows.size() * sizeof(float)) == 0);
  }
  single.reset();
  // Greedy decoding with the one-token pass launched kernel by kernel (no CUDA graph).
  const Trace want = greedy_trace(*full, {1, 17, 300}, 20, vocab);
  ::setenv("CLLM_NO_GRAPHS", "1", 1);
  auto direct = open_gpu(f, Mode::fused, 128, 8);
  ::unsetenv("CLLM_NO_GRAPHS");
  const Trace got = greedy_trace(*direct, {1, 17, 300}, 20, vocab);
  REQUIRE(got.tokens == want.tokens);
  for (size_t i = 0; i < want.logits.size(); ++i) {
    INFO("token " << i);
    CHECK(std::memcmp(got.logits[i].data(), want.logits[i].data(), sizeof(float) * vocab) == 0);
  }
  // No ring: nothing is decoded per token.
  CHECK(direct->stats().steps == 0);
}

TEST_CASE("gpu: at depth 4096 the modes stay bitwise identical, and near the CPU's logits", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  const CllmFile f = CllmFile::open(synth_tiny(dir, 8192));
  // 4100 tokens: the prompt crosses many 64-key tiles and 512-token batches, and the tokens
  // after it decode against a 4096-deep cache split across blocks.
  std::vector<int> prompt;
  for (int i = 0; i < 4100; ++i) prompt.push_back(1 + (i * 7919) % 4095);
  const int context = 4160, steps = 12;
  check_modes_identical(f, prompt, steps, context);
  // The GPU is fed the CPU's greedy tokens: a random model's near-ties would otherwise let the
  // two runs pick different tokens and compare logits of different sequences.
  const Trace cpu = cpu_trace(f, prompt, steps, context);
  auto gpu = open_gpu(f, Mode::full, context);
  const float* l = gpu->forward(prompt.data(), static_cast<int>(prompt.size()), 0, false);
  int pos = static_cast<int>(prompt.size());
  for (int i = 0; i <= steps; ++i) {
    INFO("token " << i);
    CHECK(test::rel_error(l, cpu.logits[i].data(), 4096) < 3e-2);
    if (i < steps) l = gpu->forward(&cpu.tokens[i], 1, pos++, false);
  }
}

namespace {

// Every other layer on the CPU (the rest streamed, the classifier resident), as a planner
// would interleave them.
Placements cpu_hybrid(const CllmFile& f) {
  const WeightSchedule s = plan_weight_schedule(f, config_from_metadata(f.metadata()));
  Placements p;
  for (size_t l = 0; l < s.layers.size(); ++l) p.push_back(l % 2 ? Placement::streamed : Placement::cpu);
  p.insert(p.end(), s.classifier.size(), Placement::resident);
  return p;
}

// A conversation's worth of calls: a prompt, single tokens, a 5-token batch, single tokens
// (the batch and the prompt take the other route than single tokens when cpu_max_batch < 5).
Trace mixed_trace(GpuEngine& e, const std::vector<int>& prompt, int vocab) {
  Trace t;
  int pos = 0;
  const auto step = [&](const std::vector<int>& toks) {
    const float* l = e.forward(toks.data(), static_cast<int>(toks.size()), pos, false);
    pos += static_cast<int>(toks.size());
    t.logits.emplace_back(l, l + vocab);
    t.tokens.push_back(test::argmax(l, vocab));
  };
  step(prompt);
  for (int i = 0; i < 6; ++i) step({t.tokens.back()});
  step({t.tokens.back(), 7, 8, 9, 10});
  for (int i = 0; i < 6; ++i) step({t.tokens.back()});
  return t;
}

}  // namespace

TEST_CASE("gpu: layers on the CPU give full's greedy tokens and logits within the tolerance, on both routes", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  struct Case {
    const char* name;
    std::string path;
    std::vector<int> prompt;
    double tol;
    int context = 256;
  };
  const std::string mistral = dir.file("mistral.cllm"), qwen2 = dir.file("qwen2.cllm"), qwen3 = dir.file("qwen3.cllm");
  compress_model(open_source_model(test::fixture_dir("hf-mistral-f32-swa")), mistral, CompressOptions{});
  compress_model(open_source_model(test::fixture_dir("hf-qwen2-bf16-tied")), qwen2, CompressOptions{});
  compress_model(open_source_model(test::fixture_dir("hf-qwen3-bf16-tied")), qwen3, CompressOptions{});
  const std::string smollm3 = dir.file("smollm3.cllm"), gemma2 = dir.file("gemma2.cllm"), gemma3 = dir.file("gemma3.cllm");
  compress_model(open_source_model(test::fixture_dir("hf-smollm3-f32-nope")), smollm3, CompressOptions{});
  compress_model(open_source_model(test::fixture_dir("hf-gemma2-f32-softcap")), gemma2, CompressOptions{});
  compress_model(open_source_model(test::fixture_dir("hf-gemma3-bf16-gqa")), gemma3, CompressOptions{});
  const Case cases[] = {{"stories260K (f32)", test::compress_stories(dir), {1, 403, 407, 261, 378}, 1e-4},
                        {"tiny-test (bf16, GQA)", synth_tiny(dir), {1, 17, 300, 4000, 12, 99, 2048}, 3e-2},
                        {"hf-mistral-f32-swa (f32, a window of 8)", mistral, {1, 17, 200, 33, 4, 99, 250, 7, 64, 128, 3},
                         1e-4, 64},
                        {"hf-qwen2-bf16-tied (bf16, q/k/v biases)", qwen2, {1, 17, 200, 33, 4, 99, 250}, 3e-2, 64},
                        {"hf-qwen3-bf16-tied (bf16, q/k norms)", qwen3, {1, 17, 200, 33, 4, 99, 250}, 3e-2, 64},
                        {"hf-smollm3-f32-nope (f32, the CPU layer 1 without RoPE)", smollm3, {1, 17, 200, 33, 4}, 1e-4,
                         64},
                        {"hf-gemma2-f32-softcap (f32, Gemma 2's layer on the CPU)", gemma2, {1, 17, 200, 33, 4, 99, 250,
                         7, 64, 128, 3}, 1e-4, 64},
                        {"hf-gemma3-bf16-gqa (bf16, Gemma 3's local RoPE on the CPU)", gemma3, {1, 17, 200, 33, 4, 99,
                         250, 7, 64, 128, 3}, 3e-2, 64}};
  for (const Case& k : cases) {
    const CllmFile f = CllmFile::open(k.path);
    const int vocab = config_from_metadata(f.metadata()).vocab_size;
    auto full = open_gpu(f, Mode::full, k.context);
    const Trace want = mixed_trace(*full, k.prompt, vocab);
    // cpu_max_batch 1: prompts and batches stream the CPU layers; 8: everything on the CPU
    // route; a ring of one slot as the planner may choose (2 with batches of 8).
    for (const auto& [max_batch, slots] : {std::pair{1, 2}, {1, 1}, {8, 2}}) {
      INFO(k.name << ", CPU layers for batches up to " << max_batch << ", " << slots << " ring slots");
      GpuOptions o;
      o.context = k.context;
      o.threads = 2;
      o.placements = cpu_hybrid(f);
      o.cpu_max_batch = max_batch;
      o.ring_slots = slots;
      auto e = GpuEngine::open(f, o);
      REQUIRE(e->mode() == Mode::hybrid);
      REQUIRE(e->cpu_max_batch() == max_batch);
      CHECK_THAT(describe_placements(e->placements()), Contains(" CPU"));
      const Trace got = mixed_trace(*e, k.prompt, vocab);
      CHECK(got.tokens == want.tokens);
      for (size_t i = 0; i < got.logits.size(); ++i) {
        INFO("call " << i);
        CHECK(test::rel_error(got.logits[i].data(), want.logits[i].data(), vocab) < k.tol);
      }
      CHECK(e->stats().cpu_steps > 0);
      CHECK(e->stats().cpu_ms > 0);
    }
  }
}

TEST_CASE("gpu: --vram-budget calibrates the paths, caches them, and plans within the budget", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir, cache;
  ::setenv("XDG_CACHE_HOME", cache.path().c_str(), 1);
  const CllmFile f = CllmFile::open(synth_tiny(dir));
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  const uint64_t lowmem = plan_memory(s, c, Mode::lowmem, 256, 256).total();
  GpuOptions o;
  o.context = 256;
  o.threads = 2;
  o.vram_budget = lowmem + (4u << 20);
  auto first = GpuEngine::open(f, o);
  CHECK_THAT(first->plan_summary(), Contains("path speeds (measured)") && Contains("PCIe") && Contains("tok/s"));
  CHECK(path_exists(cache.file("codecllm/path-speeds.json")));
  CHECK(first->memory().total() <= o.vram_budget);
  auto second = GpuEngine::open(f, o);
  CHECK_THAT(second->plan_summary(), Contains("path speeds (cached)"));
  CHECK(second->placements() == first->placements());
  const std::vector<int> prompt = {1, 17, 300};
  auto full = open_gpu(f, Mode::full);
  const Trace want = greedy_trace(*full, prompt, 12, 4096);
  CHECK(greedy_trace(*second, prompt, 12, 4096).tokens == want.tokens);
  ::unsetenv("XDG_CACHE_HOME");
}

TEST_CASE("gpu: stories260K greedy tokens and logits match the CPU reference", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::compress_stories(dir));
  const std::vector<int> prompt = {1};  // BOS: llama2.c's reference run
  const Trace cpu = cpu_trace(f, prompt, test::kStoriesReferenceTokens - 1);
  for (Mode m : kModes) {
    INFO("mode " << mode_name(m));
    auto e = open_gpu(f, m);
    const Trace gpu = greedy_trace(*e, prompt, test::kStoriesReferenceTokens - 1, 512);
    CHECK(gpu.tokens == cpu.tokens);
    double worst = 0;
    for (size_t i = 0; i < gpu.logits.size(); ++i)
      worst = std::max(worst, test::rel_error(gpu.logits[i].data(), cpu.logits[i].data(), 512));
    CHECK(worst < 1e-4);
  }
}

TEST_CASE("gpu: the transformers fixtures' greedy tokens, and logits near the CPU's", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  for (const char* name : {"hf-f32-gqa", "hf-f32-llama3-tied", "hf-bf16-llama3-gqa", "hf-mistral-f32-swa",
                           "hf-mistral-bf16-swa-tied", "hf-qwen2-f32-gqa", "hf-qwen2-bf16-tied", "hf-qwen3-f32-gqa",
                           "hf-qwen3-bf16-tied", "hf-smollm3-f32-nope", "hf-smollm3-bf16-nope-tied",
                           "hf-phi3-f32-longrope", "hf-phi3-bf16-longrope-gqa", "hf-gemma2-f32-softcap",
                           "hf-gemma2-bf16-softcap-tied", "hf-gemma3-f32-tied", "hf-gemma3-bf16-gqa",
                           "hf-gemma3-vision-f32-tied"}) {
    INFO("fixture " << name);
    const auto expected = nlohmann::json::parse(read_text_file(test::fixture_dir(name) + "/expected.json"));
    const std::string path = dir.file(std::string(name) + ".cllm");
    compress_model(open_source_model(test::fixture_dir(name)), path, CompressOptions{});
    const CllmFile f = CllmFile::open(path);
    const double tol = expected.at("dtype") == "bfloat16" ? 3e-2 : 1e-4;
    const int vocab = expected.at("vocab").get<int>();
    for (size_t k = 0; k < expected.at("prompts").size(); ++k) {
      INFO("prompt " << k);
      const auto prompt = expected["prompts"][k].get<std::vector<int>>();
      const auto want = expected["greedy"][k].get<std::vector<int>>();
      const Trace cpu = cpu_trace(f, prompt, static_cast<int>(want.size()) - 1, 64);
      for (Mode m : kModes) {
        INFO("mode " << mode_name(m));
        auto e = open_gpu(f, m, 64);
        const Trace gpu = greedy_trace(*e, prompt, static_cast<int>(want.size()) - 1, vocab);
        CHECK(gpu.tokens == want);
        for (size_t i = 0; i < gpu.logits.size(); ++i)
          CHECK(test::rel_error(gpu.logits[i].data(), cpu.logits[i].data(), vocab) < tol);
      }
    }
  }
}

TEST_CASE("gpu: prompts longer than a batch, and every row's logits", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  const CllmFile f = CllmFile::open(synth_tiny(dir));
  const int vocab = 4096;
  std::vector<int> prompt;
  for (int i = 0; i < 37; ++i) prompt.push_back(1 + (i * 97) % 4000);
  ThreadPool pool(2);
  const LlamaWeights w = load_llama_weights(f, &pool);
  CpuForward cpu(w, {128, 2, 64});
  const float* ref = cpu.forward(prompt.data(), 37, 0, true);
  const std::vector<float> cpu_rows(ref, ref + 37 * vocab);
  for (Mode m : kModes) {
    INFO("mode " << mode_name(m));
    auto e = open_gpu(f, m, 128, 8);  // batches of 8: 5 batches for 37 tokens
    const float* rows = e->forward(prompt.data(), 37, 0, true);
    for (int t = 0; t < 37; ++t) {
      INFO("row " << t);
      CHECK(test::rel_error(rows + t * vocab, cpu_rows.data() + t * vocab, vocab) < 3e-2);
    }
    // The last row alone (a matrix-vector product instead of a batch) is near it.
    const std::vector<float> all_last(rows + 36 * vocab, rows + 37 * vocab);
    auto e2 = open_gpu(f, m, 128, 8);
    const float* last = e2->forward(prompt.data(), 37, 0, false);
    CHECK(test::rel_error(last, all_last.data(), vocab) < 1e-2);
  }
}

TEST_CASE("gpu: each mode reports its memory and traffic", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  const CllmFile f = CllmFile::open(synth_tiny(dir));
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  const std::vector<int> prompt = {1, 2, 3, 4};
  for (Mode m : kModes) {
    INFO("mode " << mode_name(m));
    auto e = open_gpu(f, m);
    e->forward(prompt.data(), 4, 0);
    const GpuStats& st = e->stats();
    CHECK(st.forwards == 1);
    // What cudaMemGetInfo saw covers the planned buffers (cuBLAS adds a little of its own).
    CHECK(st.vram_peak >= e->memory().total() * 9 / 10);
    CHECK(st.vram_peak <= e->memory().total() + (256ull << 20));
    if (m == Mode::full) {
      CHECK(st.steps == 0);
      continue;
    }
    // One forward: every layer and classifier slice decoded once.
    CHECK(st.steps == s.layers.size() + s.classifier.size());
    uint64_t decoded = 0, copied = 0;
    for (const auto* steps : {&s.layers, &s.classifier})
      for (const WeightStep& step : *steps) {
        copied += step.src_bytes;
        for (const auto& t : step.tiles) decoded += uint64_t{t.n_elems} * t.elem_bytes;
      }
    CHECK(st.decoded_bytes == decoded);
    CHECK(st.decode_ms > 0);
    CHECK(st.h2d_bytes == (m == Mode::lowmem ? copied : 0));
    if (m == Mode::lowmem) CHECK(e->pinned());
  }
  // A hybrid of fused and resident steps: the prompt decodes both kinds into the ring (the
  // fused ones writing their matrices' bf16 bytes, copying the rest), except fused classifier
  // slices, since a prompt's last row alone is a one-row product over the planes; one token
  // decodes only the resident ones. The plan says what the load made of the fused layout.
  GpuOptions o;
  o.context = 256;
  o.threads = 2;
  for (size_t i = 0; i < s.layers.size() + s.classifier.size(); ++i)
    o.placements.push_back(i % 2 ? Placement::resident : Placement::fused);
  auto e = GpuEngine::open(f, o);
  CHECK(e->memory().fused > 0);
  CHECK(e->stats().vram_peak <= e->memory().total() + (256ull << 20));
  e->forward(prompt.data(), 4, 0);
  uint64_t decoded = 0;
  size_t resident = 0, prompt_steps = 0;
  for (size_t i = 0; i < o.placements.size(); ++i) {
    const WeightStep& step = s.step(i);
    if (o.placements[i] == Placement::resident) {
      ++resident, ++prompt_steps;
      for (const auto& t : step.tiles) decoded += uint64_t{t.n_elems} * t.elem_bytes;
    } else if (step.layer >= 0) {
      ++prompt_steps;
      for (const StepPart& part : step_parts(s, step).fused) decoded += uint64_t{part.rows} * part.cols * 2;
    }
  }
  REQUIRE(prompt_steps < o.placements.size());  // some fused classifier slices
  CHECK(e->stats().steps == prompt_steps);
  CHECK(e->stats().decoded_bytes == decoded);
  e->reset_stats();
  const int next = 5;
  e->forward(&next, 1, 4);
  CHECK(e->stats().steps == resident);
}

TEST_CASE("gpu: without pinned memory lowmem streams from pageable memory, same logits", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  const CllmFile f = CllmFile::open(synth_tiny(dir));
  const std::vector<int> prompt = {1, 5, 9};
  auto pinned = open_gpu(f, Mode::lowmem);
  const float* l = pinned->forward(prompt.data(), 3, 0);
  const std::vector<float> want(l, l + 4096);
  // No pinned memory at all.
  ::setenv("CLLM_NO_PINNED", "1", 1);
  auto pageable = open_gpu(f, Mode::lowmem);
  ::unsetenv("CLLM_NO_PINNED");
  CHECK_FALSE(pageable->pinned());
  const float* got = pageable->forward(prompt.data(), 3, 0);
  CHECK(std::memcmp(got, want.data(), sizeof(float) * 4096) == 0);
}

TEST_CASE("gpu: too little VRAM names the need, the free amount and the mode that fits", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  const CllmFile f = CllmFile::open(synth_tiny(dir));
  const LlamaConfig c = config_from_metadata(f.metadata());
  const WeightSchedule s = plan_weight_schedule(f, c);
  // The engine plans for batches of min(max_batch, context) = 256 tokens.
  const uint64_t lowmem = plan_memory(s, c, Mode::lowmem, 256, 256).total();
  const uint64_t full = plan_memory(s, c, Mode::full, 256, 256).total();
  REQUIRE(lowmem < full);
  GpuOptions o;
  o.context = 256;
  o.vram_limit = lowmem + 1;
  o.mode = Mode::full;
  try {
    GpuEngine::open(f, o);
    FAIL("expected an out-of-VRAM error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("out of VRAM: mode full needs") && Contains("available") &&
                             Contains("mode lowmem") && Contains("would fit"));
    CHECK(e.remedy().kind == Remedy::mode);
    CHECK(e.remedy().value == "lowmem");
  }
  o.mode = std::nullopt;
  auto e = GpuEngine::open(f, o);
  CHECK(e->mode() == Mode::lowmem);
  CHECK(e->mode_was_chosen());
  o.vram_limit = std::min({lowmem, full, plan_memory(s, c, Mode::resident, 256, 256).total()}) - 1;
  CHECK_THROWS_WITH(GpuEngine::open(f, o), Contains("no mode fits"));
}

TEST_CASE("gpu: run --device cuda prints the mode and its statistics", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  for (const char* mode : {"full", "resident", "lowmem", "fused"}) {
    INFO("mode " << mode);
    std::string out, err;
    REQUIRE(test::run_cli({"run", model, "--device", "cuda", "--mode", mode, "-n", "200", "--temp", "0"}, &out, &err) == 0);
    CHECK(out.rfind(test::kStoriesReference, 0) == 0);
    CHECK_THAT(err, Contains(std::string("mode ") + mode) && Contains("VRAM peak"));
    const bool ring = std::string(mode) != "full" && std::string(mode) != "fused";
    if (ring) CHECK_THAT(err, Contains("decode time") && Contains("weight stalls"));
    if (std::string(mode) == "lowmem") CHECK_THAT(err, Contains("host->device") && Contains("pinned"));
  }
  std::string err;
  REQUIRE(test::run_cli({"run", model, "-n", "4"}, nullptr, &err) == 0);
  CHECK_THAT(err, Contains("chosen by --mode auto"));
}
