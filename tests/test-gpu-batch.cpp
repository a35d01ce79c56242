// Continuous batching on the GPU engine (GpuEngine::forward_batch, model/batch.h): several
// sequences in one pass, each in its own KV cache region at its own depth.
// - The workload of tests/batch_script.h (four sequences joining at different steps, prompt
//   chunks beside single decode tokens) in every mode: the modes give the same bits as each
//   other (the same kernels for the same batch), and each segment's logits are those of running
//   its sequence alone within the documented tolerance (docs/architecture.md "GPU numerics": a
//   batch of several rows goes through cuBLAS, one token alone through matvec, so the sums are
//   ordered differently; 1e-4 for f32 models, 3e-2 for bf16 ones with their f16 cache).
// - The batched launches (every row's RoPE and cache write in one, the single-token segments'
//   decode attention in one) give the bits of one launch per segment (CLLM_NO_BATCHED_ATTENTION).
// - One segment of sequence 0 is forward(), bit for bit.
// - Several sequences with CPU layers in the plan are refused, naming the reason.
// [gpu] tests skip, visibly, where no CUDA device exists.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "convert/compress.h"
#include "convert/source_model.h"
#include "convert/synth.h"
#include "format/cllm_reader.h"
#include "runtime/gpu_engine.h"
#include "runtime/weight_schedule.h"
#include "tests/batch_script.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Matchers::Contains;

namespace {

std::unique_ptr<GpuEngine> open_gpu(const CllmFile& f, Mode m, int sequences, int max_batch) {
  GpuOptions o;
  o.mode = m;
  o.context = 64;
  o.sequences = sequences;
  o.max_batch = max_batch;
  o.threads = 2;
  return GpuEngine::open(f, o);
}

// The script on an engine of five regions (the sequences on regions 1..4, region 0 idle, so
// that no segment takes the one-sequence path), batches of up to 12 tokens.
std::vector<test::ScriptSequence> run_script(const CllmFile& f, Mode m, int vocab) {
  auto e = open_gpu(f, m, 5, 12);
  REQUIRE(e->mode() == m);
  REQUIRE(e->sequences() == 5);
  std::vector<test::ScriptSequence> seqs = test::four_sequences(vocab);
  const BatchForwardFn fwd = [&](const int* t, const BatchSegment* s, int n) { return e->forward_batch(t, s, n); };
  CHECK(test::run_batch_script(fwd, seqs, vocab, e->batch_capacity(), 1) > 8);
  return seqs;
}

void check_batched(const CllmFile& f, double tol) {
  const int vocab = config_from_metadata(f.metadata()).vocab_size;
  const auto full = run_script(f, Mode::full, vocab);
  {
    // The sequences' single tokens' attention in one launch (and every row's RoPE in one) gives
    // the bits of one launch per segment.
    ::setenv("CLLM_NO_BATCHED_ATTENTION", "1", 1);
    const auto apart = run_script(f, Mode::full, vocab);
    ::unsetenv("CLLM_NO_BATCHED_ATTENTION");
    for (size_t i = 0; i < full.size(); ++i) {
      REQUIRE(apart[i].ran.size() == full[i].ran.size());
      for (size_t j = 0; j < full[i].ran.size(); ++j) {
        INFO("one launch per segment against batched launches: sequence " << i << ", segment " << j);
        CHECK(std::memcmp(apart[i].ran[j].logits.data(), full[i].ran[j].logits.data(), sizeof(float) * vocab) == 0);
      }
    }
  }
  for (Mode m : {Mode::resident, Mode::lowmem, Mode::fused}) {
    INFO("mode " << mode_name(m) << " against full, batched");
    const auto other = run_script(f, m, vocab);
    for (size_t i = 0; i < full.size(); ++i) {
      REQUIRE(other[i].ran.size() == full[i].ran.size());
      for (size_t j = 0; j < full[i].ran.size(); ++j) {
        INFO("sequence " << i << ", segment " << j);
        CHECK(std::memcmp(other[i].ran[j].logits.data(), full[i].ran[j].logits.data(), sizeof(float) * vocab) == 0);
      }
    }
  }
  for (size_t i = 0; i < full.size(); ++i) {
    INFO("sequence " << i << " replayed alone in full mode");
    auto alone = open_gpu(f, Mode::full, 1, 12);
    test::replay_alone([&](const int* t, int n, int pos) { return alone->forward(t, n, pos, false); }, full[i],
                       [&](size_t j, const float* got, const float* want) {
                         INFO("segment " << j << " at position " << full[i].ran[j].pos);
                         CHECK(test::rel_error(got, want, vocab) < tol);
                         // Greedy picks agree up to near ties (random weights have many): the
                         // token alone picks is within 1% of the logits' range of batched's best.
                         const float* hi = std::max_element(got, got + vocab);
                         const float* lo = std::min_element(got, got + vocab);
                         CHECK(*hi - got[test::argmax(want, vocab)] <= 0.01f * (*hi - *lo));
                       });
  }
}

// tiny-test (bf16, f16 cache) read as 4 query and 2 kv heads of 64 (the same weight shapes as
// its 8/4 heads of 32): head_dim 64 takes the tensor-core decode kernel and its batched form.
std::string synth_heads_of_64(const test::TempDir& dir) {
  SynthOptions so;
  so.threads = 2;
  synth_model(find_model_preset("tiny-test"), dir.file("tiny64"), so);
  auto config = nlohmann::json::parse(read_text_file(dir.file("tiny64/config.json")));
  config["num_attention_heads"] = 4;
  config["num_key_value_heads"] = 2;
  std::ofstream(dir.file("tiny64/config.json")) << config.dump(2);
  const std::string out = dir.file("tiny64.cllm");
  compress_model(open_source_model(dir.file("tiny64")), out, CompressOptions{});
  return out;
}

}  // namespace

TEST_CASE("gpu: sequences batched together match each running alone, in every mode", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  SECTION("tiny-test as heads of 64 (bf16, f16 cache: the decode kernel's batched form)") {
    const CllmFile f = CllmFile::open(synth_heads_of_64(dir));
    REQUIRE(config_from_metadata(f.metadata()).head_dim == 64);
    check_batched(f, 3e-2);
  }
  SECTION("stories260K (f32, GQA 8/4)") { check_batched(CllmFile::open(test::compress_stories(dir)), 1e-4); }
  SECTION("transformers fixtures: Llama 3 bf16 GQA, Qwen3 f32 (q/k norms), Gemma 3 bf16 (sliding window)") {
    for (const char* name : {"hf-bf16-llama3-gqa", "hf-qwen3-f32-gqa", "hf-gemma3-bf16-gqa"}) {
      INFO("fixture " << name);
      const std::string path = dir.file(std::string(name) + ".cllm");
      compress_model(open_source_model(test::fixture_dir(name)), path, CompressOptions{});
      const bool bf16 = std::strstr(name, "bf16") != nullptr;
      check_batched(CllmFile::open(path), bf16 ? 3e-2 : 1e-4);
    }
  }
}

TEST_CASE("gpu: one segment of sequence 0 is forward(), bit for bit", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::compress_stories(dir));
  const int vocab = config_from_metadata(f.metadata()).vocab_size;
  auto a = open_gpu(f, Mode::full, 3, 16);
  auto b = open_gpu(f, Mode::full, 1, 16);
  const std::vector<int> prompt = {1, 400, 32, 77, 5, 9, 300};
  const BatchSegment seg{0, 0, 7};
  const float* l = a->forward_batch(prompt.data(), &seg, 1);
  std::vector<float> got(l, l + vocab);
  CHECK(std::memcmp(got.data(), b->forward(prompt.data(), 7, 0, false), sizeof(float) * vocab) == 0);
  const int next = 42;
  const BatchSegment step{0, 7, 1};
  l = a->forward_batch(&next, &step, 1);
  got.assign(l, l + vocab);
  CHECK(std::memcmp(got.data(), b->forward(&next, 1, 7, false), sizeof(float) * vocab) == 0);
  CHECK_THROWS_WITH(a->forward_batch(&next, std::vector<BatchSegment>{{3, 0, 1}}.data(), 1),
                    Contains("segment 0 names sequence 3, the engine holds sequences 0..2"));
}

TEST_CASE("gpu: several sequences with CPU layers in the plan are refused", "[gpu]") {
  CLLM_REQUIRE_GPU();
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::compress_stories(dir));
  const WeightSchedule s = plan_weight_schedule(f, config_from_metadata(f.metadata()));
  GpuOptions o;
  o.context = 64;
  o.sequences = 2;
  o.threads = 2;
  for (size_t l = 0; l < s.layers.size(); ++l) o.placements.push_back(l % 2 ? Placement::resident : Placement::cpu);
  o.placements.insert(o.placements.end(), s.classifier.size(), Placement::resident);
  CHECK_THROWS_WITH(GpuEngine::open(f, o), Contains("2 sequences need every layer on the GPU"));
}
