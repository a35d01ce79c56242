// Specification of serve's slot scheduler (continuous batching, issue #18), on a fake engine
// whose logits after a token depend only on its own sequence's tokens: a request's text must
// then be the same whether it runs alone or batched with others, and every batch must be one
// an engine accepts (positions that continue the sequence's cache, one segment per sequence,
// no more tokens than the batch capacity, no segment past the context).
#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "model/batch.h"
#include "server/job.h"
#include "server/slot_scheduler.h"
#include "test_util.h"
#include "text/tokenizer.h"

using namespace cllm;
using namespace cllm::server;

namespace {

constexpr int kVocab = 512;      // tok512
constexpr int kFirstPiece = 259;  // tok512: <unk> <s> </s>, 256 byte tokens, then text pieces
constexpr auto kWait = std::chrono::seconds(30);

const Tokenizer& tok512() {
  static const Tokenizer tok = Tokenizer::from_file(test::shared_model("tok512.model"));
  return tok;
}

// The fake engine: `sequences` KV regions of `context` positions. After the token at position
// p of a sequence, the favoured token is a hash of that sequence's tokens 0..p: EOS once in
// `eos_every` hashes (0: never), else a text piece; the other logits are small hash noise, so
// sampling with a temperature is random but reproducible. Each call is checked as an engine
// would check it (a violation is recorded and thrown) and recorded; on_call runs inside each
// call, before the checks, with the call's index (to submit, cancel, block or fail mid-run).
struct FakeEngine {
  int sequences = 1, context = 64, capacity = 64, eos_every = 40;
  std::vector<std::vector<int>> cache;
  std::function<void(int call)> on_call;

  std::mutex m;  // the scheduler's thread writes, the test reads
  std::vector<std::vector<BatchSegment>> batches;
  std::vector<std::string> violations;
  std::vector<float> logits;

  FakeEngine(int sequences_, int context_, int capacity_)
      : sequences(sequences_), context(context_), capacity(capacity_), cache(static_cast<size_t>(sequences_)) {}

  static uint64_t hash(const std::vector<int>& tokens, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<uint64_t>(tokens[i])) * 1099511628211ull;
    return h;
  }

  void fill_row(float* row, uint64_t h) const {
    for (int i = 0; i < kVocab; ++i) {
      const uint64_t x = (h ^ (static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
      row[i] = i < kFirstPiece ? -10.0f : static_cast<float>((x >> 40) % 1000) / 500.0f;  // [0, 2)
    }
    const bool eos = eos_every > 0 && h % static_cast<uint64_t>(eos_every) == 0;
    row[eos ? tok512().eos_id() : kFirstPiece + static_cast<int>((h >> 8) % (kVocab - kFirstPiece))] = 6.0f;
  }

  void violate(const std::string& what) {
    violations.push_back(what);
    throw std::runtime_error(what);
  }

  BatchForwardFn forward() {
    return [this](const int* tokens, const BatchSegment* segs, int n_segs) -> const float* {
      std::lock_guard<std::mutex> lock(m);
      const int call = static_cast<int>(batches.size());
      batches.emplace_back(segs, segs + n_segs);
      if (on_call) on_call(call);
      int total = 0;
      std::vector<bool> seen(static_cast<size_t>(sequences), false);
      for (int i = 0; i < n_segs; ++i) {
        const BatchSegment& s = segs[i];
        if (s.seq < 0 || s.seq >= sequences || seen[static_cast<size_t>(s.seq)]) violate("bad or repeated sequence");
        seen[static_cast<size_t>(s.seq)] = true;
        if (s.n < 1 || s.pos < 0 || s.pos > static_cast<int>(cache[static_cast<size_t>(s.seq)].size()))
          violate("a segment that does not continue its sequence's cache");
        if (s.pos + s.n > context) violate("a segment past the context");
        total += s.n;
      }
      if (total > capacity) violate("more tokens than the batch capacity");
      logits.assign(static_cast<size_t>(n_segs) * kVocab, 0.0f);
      for (int i = 0; i < n_segs; ++i) {
        std::vector<int>& c = cache[static_cast<size_t>(segs[i].seq)];
        c.resize(static_cast<size_t>(segs[i].pos));
        c.insert(c.end(), tokens, tokens + segs[i].n);
        tokens += segs[i].n;
        fill_row(logits.data() + static_cast<size_t>(i) * kVocab, hash(c, c.size()));
      }
      return logits.data();
    };
  }

  std::vector<std::vector<BatchSegment>> recorded() {
    std::lock_guard<std::mutex> lock(m);
    return batches;
  }
};

struct Setup {
  int slots = 1, context = 64, capacity = 64, chunk = 256, max_queue = 16;
  EngineResidency residency;
};

// A scheduler on its own fake engine; done counts the OnDone calls (the metrics' hook).
struct Bench {
  FakeEngine engine;
  std::atomic<int> done{0};
  std::unique_ptr<SlotScheduler> sched;

  explicit Bench(const Setup& s, int eos_every = 40) : engine(s.slots, s.context, s.capacity) {
    engine.eos_every = eos_every;
    SchedulerOptions o;
    o.slots = s.slots;
    o.context = s.context;
    o.batch_capacity = s.capacity;
    o.chunk = s.chunk;
    o.n_vocab = kVocab;
    o.max_queue = s.max_queue;
    sched = std::make_unique<SlotScheduler>(engine.forward(), tok512(), o,
                                            [this](const GenerationOutput&, double) { ++done; }, s.residency);
  }
  ~Bench() { sched->stop(); }  // before the engine goes

  std::shared_ptr<Job> submit(const GenerationInput& in) {
    auto job = std::make_shared<Job>(in);
    REQUIRE(sched->submit(job));
    return job;
  }
};

GenerationInput request(const std::string& prompt, int max_tokens, float temp = 0.0f, int seed = -1) {
  GenerationInput in;
  in.prompt = tok512().encode(prompt, true);
  in.max_tokens = max_tokens;
  in.sampling.temp = temp;
  in.sampling.seed = seed;
  return in;
}

// The job's output once it has ended without error; its streamed pieces must add up to its text.
GenerationOutput finished(Job& job) {
  REQUIRE(job.wait_done(kWait));
  INFO(job.error_message());
  REQUIRE(job.error_status() == 0);
  std::vector<std::string> pieces;
  job.take_text(&pieces, std::chrono::milliseconds(0));
  std::string streamed;
  for (const auto& p : pieces) streamed += p;
  CHECK(streamed == job.output().text);
  return job.output();
}

// What a request gives alone, on a fresh one-slot scheduler.
GenerationOutput alone(const GenerationInput& in, int context = 64) {
  Setup s;
  s.context = context;
  Bench b(s);
  auto job = b.submit(in);
  return finished(*job);
}

void check_same(const GenerationOutput& got, const GenerationOutput& want) {
  CHECK(got.text == want.text);
  CHECK(got.completion_tokens == want.completion_tokens);
  CHECK(got.finish == want.finish);
}

bool wait_until(const std::function<bool()>& what) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (!what())
    if (std::chrono::steady_clock::now() > deadline) return false;
    else std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return true;
}

}  // namespace

TEST_CASE("scheduler: requests decoded together give the texts each gives alone", "[serve][scheduler]") {
  const std::vector<GenerationInput> inputs = {
      request("Once upon a time", 30),      request("The little dog", 24),
      request("Lily saw a big red ball", 40), request("Tom", 12),
      request("A cat sat", 30, 0.8f, 7),    request("One day, the sun was hot and the birds sang", 20, 1.0f, 42),
  };
  std::vector<GenerationOutput> want;
  for (const auto& in : inputs) want.push_back(alone(in));

  Setup s;
  s.slots = 4;
  s.context = 64;
  s.capacity = 64;
  Bench b(s);
  std::vector<std::shared_ptr<Job>> jobs;
  for (const auto& in : inputs) jobs.push_back(b.submit(in));  // 4 take slots, 2 wait for one to free
  for (size_t i = 0; i < jobs.size(); ++i) {
    INFO("request " << i);
    check_same(finished(*jobs[i]), want[i]);
  }
  CHECK(b.done == static_cast<int>(inputs.size()));
  // They really shared batches: some batch decoded a token of each of the 4 slots.
  size_t widest = 0;
  for (const auto& batch : b.engine.recorded()) widest = std::max(widest, batch.size());
  CHECK(widest == 4);
  CHECK(b.engine.violations.empty());
  CHECK(b.sched->running() == 0);
  CHECK(b.sched->queued() == 0);
}

TEST_CASE("scheduler: a request that comes while others decode joins their batches", "[serve][scheduler]") {
  const GenerationInput first = request("Once upon a time", 40), second = request("The little dog ran to the park", 10);
  Setup s;
  s.slots = 2;
  Bench b(s, 0);  // no EOS: the first request is still decoding when the second comes
  std::shared_ptr<Job> joined;
  b.engine.on_call = [&](int call) {
    if (call == 5) {  // the first request's 5th decoded token is in this batch
      joined = std::make_shared<Job>(second);
      if (!b.sched->submit(joined)) joined.reset();  // no Catch assertions on the scheduler's thread
    }
  };
  auto job = b.submit(first);
  const GenerationOutput got_first = finished(*job);
  REQUIRE(joined);
  const GenerationOutput got_second = finished(*joined);
  Setup one;
  Bench ref1(one, 0), ref2(one, 0);
  auto r1 = ref1.submit(first);
  auto r2 = ref2.submit(second);
  check_same(got_first, finished(*r1));
  check_same(got_second, finished(*r2));
  // Call 6: the first request's next token and the second's whole prompt in one batch.
  const auto batches = b.engine.recorded();
  REQUIRE(batches.size() > 6);
  REQUIRE(batches[6].size() == 2);
  CHECK(batches[6][0].n == 1);
  CHECK(batches[6][1].n == static_cast<int>(second.prompt.size()));
  CHECK(batches[6][1].seq != batches[6][0].seq);
  CHECK(b.engine.violations.empty());
}

TEST_CASE("scheduler: a client that leaves frees its slot at once for the next request", "[serve][scheduler]") {
  Setup s;
  s.slots = 1;
  s.max_queue = 2;
  Bench b(s, 0);
  const GenerationInput endless = request("Once upon a time", -1), next = request("Tom and Sam", 8);
  std::shared_ptr<Job> running, waiting, gone_while_queued;
  b.engine.on_call = [&](int call) {
    if (call == 3) running->cancel();  // seen before the next step: no more batches for it
  };
  running = std::make_shared<Job>(endless);  // set before the scheduler's thread can reach call 3
  REQUIRE(b.sched->submit(running));
  gone_while_queued = std::make_shared<Job>(next);
  gone_while_queued->cancel();  // its client left while it waited: it never reaches a batch
  REQUIRE(b.sched->submit(gone_while_queued));
  waiting = b.submit(next);

  REQUIRE(running->wait_done(kWait));
  CHECK(running->output().finish == FinishReason::cancelled);
  CHECK(running->output().completion_tokens == 4);  // sampled after calls 0 (the prompt) .. 3
  REQUIRE(gone_while_queued->wait_done(kWait));
  CHECK(gone_while_queued->output().finish == FinishReason::cancelled);
  CHECK(gone_while_queued->output().completion_tokens == 0);
  const GenerationOutput got = finished(*waiting);
  CHECK(got.completion_tokens == 8);
  // The batch after the cancelled one is the waiting request's prompt (after the BOS the cache shares).
  const auto batches = b.engine.recorded();
  REQUIRE(batches.size() > 4);
  CHECK(batches[4].size() == 1);
  CHECK(batches[4][0].pos + batches[4][0].n == static_cast<int>(next.prompt.size()));
  CHECK(got.reused_tokens == 1);
  CHECK(b.done == 3);  // the cancelled ones are counted too (the metrics' cancelled counter)
}

TEST_CASE("scheduler: with every slot taken and the queue full a request is refused", "[serve][scheduler]") {
  Setup s;
  s.slots = 2;
  s.max_queue = 1;
  Bench b(s);
  std::atomic<bool> entered{false}, release{false};
  b.engine.on_call = [&](int call) {
    if (call == 0) {
      entered = true;
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  std::vector<std::shared_ptr<Job>> jobs;
  jobs.push_back(b.submit(request("Once upon a time", 4)));
  REQUIRE(wait_until([&] { return entered.load(); }));  // the first runs, its forward pass held
  CHECK(b.sched->running() == 1);
  jobs.push_back(b.submit(request("Tom", 4)));  // a free slot: takes it at the next step
  jobs.push_back(b.submit(request("Sam", 4)));  // the queue's one place
  CHECK(b.sched->queued() == 2);
  CHECK_FALSE(b.sched->submit(std::make_shared<Job>(request("Ann", 4))));
  release = true;
  for (auto& j : jobs) finished(*j);
  CHECK(b.sched->submit(std::make_shared<Job>(request("Ann", 4))));  // room again
}

TEST_CASE("scheduler: long prompts are read in chunks, small ones while others decode", "[serve][scheduler]") {
  const GenerationInput longer = request("One day, the sun was hot and the birds sang in the big green tree", 6);
  const int n_long = static_cast<int>(longer.prompt.size());
  REQUIRE(n_long > 12);

  SECTION("alone: as much of the batch capacity as it can use") {
    Setup s;
    s.capacity = 8;
    s.chunk = 4;
    Bench b(s);
    check_same(finished(*b.submit(longer)), alone(longer));
    const auto batches = b.engine.recorded();
    int pos = 0;
    for (int i = 0; pos < n_long; ++i) {
      REQUIRE(batches[static_cast<size_t>(i)].size() == 1);
      const BatchSegment seg = batches[static_cast<size_t>(i)][0];
      CHECK(seg.pos == pos);
      CHECK(seg.n == std::min(8, n_long - pos));
      pos += seg.n;
    }
  }
  SECTION("beside a decoding request: chunks of at most `chunk` tokens beside its token") {
    Setup s;
    s.slots = 2;
    s.capacity = 16;
    s.chunk = 4;
    Bench b(s, 0);
    std::shared_ptr<Job> joined;
    b.engine.on_call = [&](int call) {
      if (call == 2) {
        joined = std::make_shared<Job>(longer);
        if (!b.sched->submit(joined)) joined.reset();  // no Catch assertions on the scheduler's thread
      }
    };
    auto decoding = b.submit(request("Once upon a time", 30));
    finished(*decoding);
    REQUIRE(joined);
    Setup one;
    Bench ref(one, 0);
    check_same(finished(*joined), finished(*ref.submit(longer)));
    int chunks = 0;
    for (const auto& batch : b.engine.recorded())
      if (batch.size() == 2) {
        CHECK(batch[0].n == 1);
        CHECK(batch[1].n <= 4);
        ++chunks;
      }
    CHECK(chunks >= (n_long + 3) / 4);
    CHECK(b.engine.violations.empty());
  }
}

TEST_CASE("scheduler: a request reuses the slot whose cache shares the longest prefix with its prompt",
          "[serve][scheduler]") {
  Setup s;
  s.slots = 2;
  Bench b(s, 0);
  const GenerationInput a = request("Once upon a time", 3), c = request("The little dog ran", 3);
  const int na = static_cast<int>(a.prompt.size()), nc = static_cast<int>(c.prompt.size());
  auto ja = b.submit(a);
  const GenerationOutput first_a = finished(*ja);
  CHECK(first_a.reused_tokens == 0);
  const int seq_a = b.engine.recorded().at(0).front().seq;
  // c shares only the BOS with a's cache: it takes the other, unused slot, keeping a's.
  size_t calls = b.engine.recorded().size();
  auto jc = b.submit(c);
  finished(*jc);
  CHECK(b.engine.recorded().at(calls).front().seq == 1 - seq_a);

  // The same prompt again: only its last token is fed, on the slot that holds it.
  calls = b.engine.recorded().size();
  auto again = b.submit(a);
  const GenerationOutput second_a = finished(*again);
  CHECK(second_a.text == first_a.text);
  CHECK(second_a.reused_tokens == na - 1);
  BatchSegment seg = b.engine.recorded().at(calls).front();
  CHECK(seg.seq == seq_a);
  CHECK(seg.pos == na - 1);
  CHECK(seg.n == 1);

  // A prompt that goes on from c's prompt and reply: the two reply tokens that were fed are reused.
  std::vector<int> cache_c;
  {
    std::lock_guard<std::mutex> lock(b.engine.m);
    cache_c = b.engine.cache[static_cast<size_t>(1 - seq_a)];
  }
  REQUIRE(static_cast<int>(cache_c.size()) == nc + 2);  // max_tokens 3: the last sampled token is never fed
  GenerationInput go_on = c;
  go_on.prompt = cache_c;
  go_on.prompt.push_back(tok512().encode(" and", false).front());
  calls = b.engine.recorded().size();
  const GenerationOutput on = finished(*b.submit(go_on));
  CHECK(on.reused_tokens == nc + 2);
  seg = b.engine.recorded().at(calls).front();
  CHECK(seg.seq == 1 - seq_a);
  CHECK(seg.pos == nc + 2);
}

TEST_CASE("scheduler: a request ends as asked: EOS, stop strings, max_tokens, a full context", "[serve][scheduler]") {
  // A full context: 16 positions, a prompt of n, no EOS: 16 - n sampled tokens are fed, the next ends it.
  Setup s;
  s.context = 16;
  Bench b(s, 0);
  GenerationInput in = request("Once upon a time", -1);
  const int n = static_cast<int>(in.prompt.size());
  const GenerationOutput full = finished(*b.submit(in));
  CHECK(full.finish == FinishReason::length);
  CHECK(full.completion_tokens == 16 - n + 1);

  // EOS: the fake engine ends every text by itself once in a while; not counted, not in the text.
  Setup t;
  t.context = 256;
  Bench e(t, 8);
  const GenerationOutput eos = finished(*e.submit(request("Once upon a time", -1)));
  CHECK(eos.finish == FinishReason::stop);
  CHECK(eos.completion_tokens < 200);
  // ignore_eos (llama-server's, for load tests): the same engine runs to max_tokens.
  GenerationInput endless = request("Once upon a time", 200);
  endless.ignore_eos = true;
  const GenerationOutput kept = finished(*e.submit(endless));
  CHECK(kept.finish == FinishReason::length);
  CHECK(kept.completion_tokens == 200);

  // A stop string: the text up to it.
  Bench st(s, 0);
  const GenerationOutput whole = finished(*st.submit(request("Once upon a time", 8)));
  REQUIRE(whole.text.size() > 6);
  GenerationInput stopped = request("Once upon a time", 8);
  stopped.stop = {whole.text.substr(4, 3)};
  const GenerationOutput cut = finished(*st.submit(stopped));
  CHECK(cut.finish == FinishReason::stop);
  CHECK(cut.text == whole.text.substr(0, whole.text.find(stopped.stop[0])));
}

TEST_CASE("scheduler: a failed forward pass fails its requests with 500, and the slot serves again",
          "[serve][scheduler]") {
  Setup s;
  Bench b(s, 0);
  b.engine.on_call = [&](int call) {
    if (call == 3) throw std::runtime_error("device lost");
  };
  const GenerationInput in = request("Once upon a time", 10);
  auto failed = b.submit(in);
  REQUIRE(failed->wait_done(kWait));
  CHECK(failed->error_status() == 500);
  CHECK(failed->error_message() == "device lost");
  Bench ref(s, 0);
  check_same(finished(*b.submit(in)), finished(*ref.submit(in)));
}

TEST_CASE("scheduler: stop() ends running requests as cancelled and refuses queued and new ones",
          "[serve][scheduler]") {
  Setup s;
  Bench b(s, 0);
  std::atomic<bool> entered{false}, release{false};
  b.engine.on_call = [&](int call) {
    if (call == 2) {  // hold the running request until stop() has begun
      entered = true;
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  auto running = b.submit(request("Once upon a time", -1));
  REQUIRE(wait_until([&] { return entered.load(); }));
  auto waiting = b.submit(request("Tom", 4));
  std::thread stopper([&] { b.sched->stop(); });
  // Once stopping, it refuses new requests (a probe accepted before that is failed with the queue).
  REQUIRE(wait_until([&] { return !b.sched->submit(std::make_shared<Job>(request("Ann", 4))); }));
  release = true;
  stopper.join();
  REQUIRE(running->wait_done(kWait));
  CHECK(running->output().finish == FinishReason::cancelled);
  REQUIRE(waiting->wait_done(kWait));
  CHECK(waiting->error_status() == 503);
  CHECK(waiting->error_message() == "the server is stopping");
}

TEST_CASE("scheduler: refuses a batch capacity below one token per slot", "[serve][scheduler]") {
  SchedulerOptions o;
  o.slots = 4;
  o.context = 64;
  o.batch_capacity = 3;
  o.n_vocab = kVocab;
  CHECK_THROWS_WITH(SlotScheduler([](const int*, const BatchSegment*, int) -> const float* { return nullptr; },
                                  tok512(), o, {}),
                    Catch::Contains("4 slots"));
}

TEST_CASE("scheduler: an idle model is told after keep_alive, a loaded-again engine starts with empty caches, a failed "
          "load answers 503",
          "[serve][scheduler]") {
  std::atomic<int> idles{0}, loads{0};
  std::atomic<bool> parked{false}, fail_load{false};
  Setup s;
  s.residency.keep_alive_s = 0.05;
  s.residency.idle = [&] {
    ++idles;
    parked = true;
  };
  s.residency.ensure_loaded = [&] {
    if (!parked) return false;
    if (fail_load) throw std::runtime_error("out of VRAM: 9 GiB needed, 2 GiB free");
    parked = false;
    ++loads;
    return true;
  };
  Bench b(s, 0);
  const GenerationInput in = request("Once upon a time", 8);
  const GenerationOutput first = finished(*b.submit(in));
  CHECK(loads == 0);  // loaded from the start

  // Idle for keep_alive: parked. The next request loads it again and reuses nothing of the old
  // cache (the same prompt on a loaded engine would reuse all but its last token).
  REQUIRE(wait_until([&] { return idles == 1; }));
  const GenerationOutput second = finished(*b.submit(in));
  CHECK(loads == 1);
  CHECK(second.reused_tokens == 0);
  check_same(second, first);
  CHECK(b.engine.violations.empty());

  // A load that fails answers the request 503 with the reason; the next one serves again.
  REQUIRE(wait_until([&] { return idles == 2; }));
  fail_load = true;
  auto refused = std::make_shared<Job>(in);
  REQUIRE(b.sched->submit(refused));
  REQUIRE(refused->wait_done(kWait));
  CHECK(refused->error_status() == 503);
  CHECK_THAT(refused->error_message(), Catch::Contains("the model could not be loaded: out of VRAM"));
  fail_load = false;
  check_same(finished(*b.submit(in)), first);
  CHECK(loads == 2);
  CHECK(b.sched->running() == 0);
  CHECK(b.sched->queued() == 0);
}
