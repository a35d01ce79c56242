// Continuous batching on the CPU engine (model/batch.h, CpuForward::forward_batch): several
// sequences in one forward pass, each in its own KV cache region.
// - Four sequences at different depths, their prompt chunks and single decode tokens mixed in
//   the same batches (tests/batch_script.h), on stories260K (GQA 8/4) and on transformers
//   fixtures (Llama with GQA, Mistral's sliding window, Qwen3's q/k norms): each segment's
//   logits are BITWISE those of running its sequence alone. The CPU kernels compute every row
//   alike whatever shares its batch (cpu_ops.h, cpu_attention.h), so no tolerance.
// - A bad batch (sequence out of range or named twice, no tokens, past the context, more tokens
//   than the capacity, a token id out of range) throws a message naming the segment, before
//   any cache changes.
#include <catch2/catch.hpp>
#include <cstring>

#include "common/thread_pool.h"
#include "convert/compress.h"
#include "convert/source_model.h"
#include "format/cllm_reader.h"
#include "model/forward_cpu.h"
#include "model/llama_weights.h"
#include "tests/batch_script.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Matchers::Contains;

namespace {

// The weights and the file they may point into (kept open while they are used).
struct Loaded {
  CllmFile file;
  LlamaWeights weights;
  explicit Loaded(const std::string& cllm) : file(CllmFile::open(cllm)) {
    ThreadPool pool(2);
    weights = load_llama_weights(file, &pool);
  }
};

std::string compress_fixture(const test::TempDir& dir, const std::string& name) {
  const SourceModel src = open_source_model(test::fixture_dir(name));
  const std::string out = dir.file(name + ".cllm");
  compress_model(src, out, CompressOptions{});
  return out;
}

// The script through one engine of `sequences` regions (the script's on regions 1..4 when
// there are five, leaving region 0 idle), each sequence replayed alone on an engine of one.
void check_batched_equals_alone(const LlamaWeights& w, int threads, int max_batch, int sequences) {
  const int vocab = w.config.vocab_size;
  CpuForward batched(w, {0, threads, max_batch, sequences});
  REQUIRE(batched.sequences() == sequences);
  REQUIRE(batched.batch_capacity() == max_batch);
  std::vector<test::ScriptSequence> seqs = test::four_sequences(vocab);
  const BatchForwardFn fwd = [&](const int* t, const BatchSegment* s, int n) { return batched.forward_batch(t, s, n); };
  const int steps = test::run_batch_script(fwd, seqs, vocab, batched.batch_capacity(), sequences - 4);
  CHECK(steps > 8);
  for (size_t i = 0; i < seqs.size(); ++i) {
    INFO("sequence " << i << " (prompt of " << seqs[i].prompt.size() << " tokens)");
    REQUIRE(seqs[i].ran.size() > static_cast<size_t>(seqs[i].decode));
    CpuForward alone(w, {0, threads, max_batch});
    test::replay_alone([&](const int* t, int n, int pos) { return alone.forward(t, n, pos); }, seqs[i],
                       [&](size_t j, const float* got, const float* want) {
                         INFO("segment " << j << " at position " << seqs[i].ran[j].pos << ", "
                                         << seqs[i].ran[j].tokens.size() << " tokens");
                         CHECK(std::memcmp(got, want, sizeof(float) * vocab) == 0);
                       });
  }
}

}  // namespace

TEST_CASE("stories260K: four sequences batched together get each the bits of running alone", "[batch]") {
  test::TempDir dir;
  const Loaded m(test::compress_stories(dir));
  const LlamaWeights& w = m.weights;
  SECTION("four regions, batches of up to 16 tokens, one thread") { check_batched_equals_alone(w, 1, 16, 4); }
  SECTION("five regions (region 0 idle), batches of up to 9 tokens, three threads") {
    check_batched_equals_alone(w, 3, 9, 5);
  }
}

TEST_CASE("transformers fixtures (GQA, sliding window, q/k norms): batched sequences match alone, bit for bit",
          "[batch]") {
  test::TempDir dir;
  for (const char* name : {"hf-f32-gqa", "hf-mistral-f32-swa", "hf-qwen3-f32-gqa"}) {
    INFO("fixture " << name);
    const Loaded m(compress_fixture(dir, name));
    const LlamaWeights& w = m.weights;
    check_batched_equals_alone(w, 2, 12, 4);
  }
}

TEST_CASE("one sequence in forward_batch is forward(): the same bits, and sequences 1 is today's engine", "[batch]") {
  test::TempDir dir;
  const Loaded m(test::compress_stories(dir));
  const LlamaWeights& w = m.weights;
  const int vocab = w.config.vocab_size;
  CpuForward a(w, {64, 1, 16}), b(w, {64, 1, 16});
  CHECK(a.sequences() == 1);
  const std::vector<int> prompt = {1, 400, 32, 77, 5, 9, 300};
  const BatchSegment seg{0, 0, 7};
  const float* l = a.forward_batch(prompt.data(), &seg, 1);
  std::vector<float> got(l, l + vocab);
  CHECK(std::memcmp(got.data(), b.forward(prompt.data(), 7, 0), sizeof(float) * vocab) == 0);
  const int next = 42;
  const BatchSegment step{0, 7, 1};
  l = a.forward_batch(&next, &step, 1);
  got.assign(l, l + vocab);
  CHECK(std::memcmp(got.data(), b.forward(&next, 1, 7), sizeof(float) * vocab) == 0);
}

TEST_CASE("a bad batch is refused with a message naming the segment, and no cache changes", "[batch]") {
  test::TempDir dir;
  const Loaded m(test::compress_stories(dir));
  const LlamaWeights& w = m.weights;
  const int vocab = w.config.vocab_size;
  CpuForward e(w, {32, 1, 8, 2});  // two sequences of 32 positions, batches of up to 8 tokens
  const std::vector<int> t = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const auto run = [&](std::vector<BatchSegment> segs, const int* tokens) {
    e.forward_batch(tokens, segs.data(), static_cast<int>(segs.size()));
  };
  CHECK_THROWS_WITH(run({{2, 0, 1}}, t.data()), Contains("segment 0 names sequence 2, the engine holds sequences 0..1"));
  CHECK_THROWS_WITH(run({{-1, 0, 1}}, t.data()), Contains("names sequence -1"));
  CHECK_THROWS_WITH(run({{1, 0, 2}, {1, 2, 1}}, t.data()),
                    Contains("segment 1 names sequence 1 again (segment 0 has it)"));
  CHECK_THROWS_WITH(run({{0, 0, 0}}, t.data()), Contains("segment 0 (sequence 0) has 0 tokens, expected >= 1"));
  CHECK_THROWS_WITH(run({{0, 0, 1}, {1, 30, 3}}, t.data()),
                    Contains("segment 1 (sequence 1): positions 30..32 do not fit the context of 32 tokens per sequence"));
  CHECK_THROWS_WITH(run({{0, -1, 1}}, t.data()), Contains("do not fit the context"));
  CHECK_THROWS_WITH(run({{0, 0, 5}, {1, 0, 5}}, t.data()),
                    Contains("10 tokens in 2 segments, more than the batch capacity of 8 tokens"));
  const std::vector<int> bad = {1, 2, 3, vocab};
  CHECK_THROWS_WITH(run({{0, 0, 2}, {1, 0, 2}}, bad.data()),
                    Contains("segment 1 (sequence 1): token id 512 out of range (vocabulary of 512)"));
  CHECK_THROWS_WITH(run({}, t.data()), Contains("no segments"));

  // The refused batches wrote nothing: both sequences continue as if alone.
  CpuForward alone(w, {32, 1, 8});
  const BatchSegment ok[2] = {{1, 0, 3}, {0, 0, 4}};
  const float* logits = e.forward_batch(t.data(), ok, 2);
  std::vector<float> rows(logits, logits + 2 * vocab);
  CHECK(std::memcmp(rows.data(), alone.forward(t.data(), 3, 0), sizeof(float) * vocab) == 0);
  CpuForward alone0(w, {32, 1, 8});
  CHECK(std::memcmp(rows.data() + vocab, alone0.forward(t.data() + 3, 4, 0), sizeof(float) * vocab) == 0);
  CHECK_THROWS_WITH(CpuForward(w, {32, 1, 8, 0}), Contains("sequences must be >= 1, found 0"));
}
