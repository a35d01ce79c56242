// The CPU engine on the weights' own dtype (model/forward_cpu_native.h), what run and serve use
// on the CPU for bf16 and f16 models (model/cpu_engine.h's make_cpu_engine):
// - it is chosen for bf16 models, the fp32 reference for f32 ones, and CLLM_CPU_ENGINE=fp32
//   forces the reference;
// - on every family's bf16 transformers fixture its logits are the fp32 reference's within the
//   bf16 bound the project holds the GPU to (3e-2 relative to the largest logit: the products
//   round their inputs to bf16, as the GPU's do, where the reference keeps fp32), at a prompt and
//   at every step after it;
// - batching changes no bit: four sequences batched together get each the bits of running alone,
//   and one thread or three, batches of 4 or 64 tokens, a prompt at once or in pieces give the
//   same bits;
// - bad input (token ids, positions past the context, bad batches) throws naming it.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>

#include "common/thread_pool.h"
#include "convert/compress.h"
#include "convert/source_model.h"
#include "format/cllm_reader.h"
#include "model/cpu_engine.h"
#include "model/forward_cpu.h"
#include "model/forward_cpu_native.h"
#include "model/llama_weights.h"
#include "tests/batch_script.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Matchers::Contains;

namespace {

std::string compress_fixture(const test::TempDir& dir, const std::string& name) {
  const SourceModel src = open_source_model(test::fixture_dir(name));
  const std::string out = dir.file(name + ".cllm");
  compress_model(src, out, CompressOptions{});
  return out;
}

// The largest |a - b| over the largest |b|.
double max_rel(const float* a, const float* b, int n) {
  double diff = 0, big = 0;
  for (int i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    big = std::max(big, std::abs(static_cast<double>(b[i])));
  }
  return diff / big;
}

const std::vector<int> kPrompt = {1, 17, 300, 42, 9, 250, 77, 5, 130, 61, 12, 200};

}  // namespace

TEST_CASE("cpu engine: bf16 models run on their own weights, f32 ones on the fp32 reference", "[cpu-native]") {
  test::TempDir dir;
  const CllmFile bf16 = CllmFile::open(compress_fixture(dir, "hf-bf16-llama3-gqa"));
  const CllmFile f32 = CllmFile::open(compress_fixture(dir, "hf-f32-gqa"));
  CHECK(native_linear_dtype(bf16) == DType::BF16);
  CHECK(native_linear_dtype(f32) == DType::F32);
  CHECK(std::string(make_cpu_engine(bf16, {})->arithmetic()) == "bf16 weights");
  CHECK(std::string(make_cpu_engine(f32, {})->arithmetic()) == "fp32");
  ::setenv("CLLM_CPU_ENGINE", "fp32", 1);
  CHECK(std::string(make_cpu_engine(bf16, {})->arithmetic()) == "fp32");
  ::setenv("CLLM_CPU_ENGINE", "fast", 1);
  CHECK_THROWS_WITH(make_cpu_engine(bf16, {}), Contains("CLLM_CPU_ENGINE=fast: expected fp32 or native"));
  ::unsetenv("CLLM_CPU_ENGINE");
  CHECK_THROWS_WITH(CpuNativeForward(f32, {}), Contains("needs bf16 or f16 linear layers"));
}

TEST_CASE("cpu engine: on every family's bf16 fixture, the fp32 reference's logits within 3e-2", "[cpu-native]") {
  test::TempDir dir;
  for (const char* name : {"hf-bf16-llama3-gqa", "hf-mistral-bf16-swa-tied", "hf-qwen2-bf16-tied", "hf-qwen3-bf16-tied",
                           "hf-smollm3-bf16-nope-tied", "hf-phi3-bf16-longrope-gqa", "hf-gemma2-bf16-softcap-tied",
                           "hf-gemma3-bf16-gqa"}) {
    INFO("fixture " << name);
    const CllmFile f = CllmFile::open(compress_fixture(dir, name));
    ThreadPool pool(2);
    const LlamaWeights w = load_llama_weights(f, &pool);
    CpuForward ref(w, {64, 2});
    CpuNativeForward native(f, {64, 2});
    REQUIRE(std::string(native.arithmetic()) == "bf16 weights");
    const int vocab = w.config.vocab_size;
    std::vector<int> prompt = kPrompt;
    for (int& t : prompt) t %= vocab;
    const float* r = ref.forward(prompt.data(), static_cast<int>(prompt.size()), 0);
    std::vector<float> expect(r, r + vocab);
    const float* g = native.forward(prompt.data(), static_cast<int>(prompt.size()), 0);
    CHECK(max_rel(g, expect.data(), vocab) < 3e-2);
    int pos = static_cast<int>(prompt.size());
    for (int step = 0; step < 4; ++step, ++pos) {  // the reference's greedy token, fed to both
      const int next = test::argmax(expect.data(), vocab);
      r = ref.forward(&next, 1, pos);
      expect.assign(r, r + vocab);
      g = native.forward(&next, 1, pos);
      INFO("step " << step);
      CHECK(max_rel(g, expect.data(), vocab) < 3e-2);
    }
  }
}

namespace {

// The batch script (tests/batch_script.h) through one native engine of four sequences, each
// sequence replayed alone on an engine of one: every segment's logits bit for bit.
void check_batched_equals_alone(const CllmFile& f, int threads, int max_batch) {
  CpuNativeForward batched(f, {0, threads, max_batch, 4});
  const int vocab = batched.config().vocab_size;
  REQUIRE(batched.batch_capacity() == max_batch);
  std::vector<test::ScriptSequence> seqs = test::four_sequences(vocab);
  const BatchForwardFn fwd = [&](const int* t, const BatchSegment* s, int n) { return batched.forward_batch(t, s, n); };
  CHECK(test::run_batch_script(fwd, seqs, vocab, batched.batch_capacity(), 0) > 8);
  for (size_t i = 0; i < seqs.size(); ++i) {
    INFO("sequence " << i << " (prompt of " << seqs[i].prompt.size() << " tokens)");
    CpuNativeForward alone(f, {0, threads, max_batch});
    test::replay_alone([&](const int* t, int n, int pos) { return alone.forward(t, n, pos); }, seqs[i],
                       [&](size_t j, const float* got, const float* want) {
                         INFO("segment " << j << " at position " << seqs[i].ran[j].pos);
                         CHECK(std::memcmp(got, want, sizeof(float) * vocab) == 0);
                       });
  }
}

}  // namespace

TEST_CASE("cpu engine: four sequences batched together get each the bits of running alone", "[cpu-native]") {
  test::TempDir dir;
  for (const char* name : {"hf-bf16-llama3-gqa", "hf-mistral-bf16-swa-tied", "hf-qwen3-bf16-tied"}) {
    INFO("fixture " << name);
    const CllmFile f = CllmFile::open(compress_fixture(dir, name));
    check_batched_equals_alone(f, 2, 12);
  }
}

TEST_CASE("cpu engine: threads, batch sizes and prompt pieces change no bit", "[cpu-native]") {
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::synth_tiny_bf16(dir));
  const auto last_logits = [&](int threads, int max_batch, const std::vector<int>& pieces) {
    CpuNativeForward e(f, {64, threads, max_batch});
    const int vocab = e.config().vocab_size;
    std::vector<int> prompt = kPrompt;
    for (int& t : prompt) t %= vocab;
    const float* l = nullptr;
    int pos = 0;
    for (int n : pieces) {
      l = e.forward(prompt.data() + pos, n, pos);
      pos += n;
    }
    REQUIRE(pos == static_cast<int>(prompt.size()));
    return std::vector<float>(l, l + vocab);
  };
  const std::vector<float> want = last_logits(1, 64, {12});
  CHECK(last_logits(3, 64, {12}) == want);
  CHECK(last_logits(2, 4, {12}) == want);
  CHECK(last_logits(2, 64, {5, 1, 6}) == want);
  CHECK(last_logits(1, 64, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}) == want);
}

TEST_CASE("cpu engine: bad token ids, positions and batches are refused with a message", "[cpu-native]") {
  test::TempDir dir;
  const CllmFile f = CllmFile::open(test::synth_tiny_bf16(dir));
  CpuNativeForward e(f, {32, 1, 8, 2});
  const int vocab = e.config().vocab_size;
  const std::vector<int> t = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const int bad = vocab;
  CHECK_THROWS_WITH(e.forward(&bad, 1, 0), Contains("token id " + std::to_string(vocab) + " out of range"));
  CHECK_THROWS_WITH(e.forward(t.data(), 3, 30), Contains("positions 30..32 do not fit the context of 32 tokens"));
  CHECK_THROWS_WITH(e.forward(t.data(), 0, 0), Contains("no tokens"));
  const BatchSegment twice[2] = {{1, 0, 2}, {1, 2, 1}};
  CHECK_THROWS_WITH(e.forward_batch(t.data(), twice, 2), Contains("segment 1 names sequence 1 again"));
  const BatchSegment big[2] = {{0, 0, 5}, {1, 0, 5}};
  CHECK_THROWS_WITH(e.forward_batch(t.data(), big, 2), Contains("more than the batch capacity of 8 tokens"));
  CHECK_THROWS_WITH(CpuNativeForward(f, {32, 1, 8, 0}), Contains("sequences must be >= 1, found 0"));
}
