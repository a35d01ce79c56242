// A model's scheduler (continuous batching, issue #18): one thread that decodes up to `slots`
// requests together on the engine's sequences (one KV cache region of `context` positions per
// slot), taking them from a bounded queue. A job submitted while every slot is taken and the
// queue is full is refused (the route answers 503).
//
// Each step is one BatchForwardFn call: one token for every slot that is generating, then
// prompt chunks of the slots still reading their prompts, up to the engine's batch capacity (a
// chunk is at most `chunk` tokens while others decode, so that they do not stall behind a long
// prompt). Then each slot that decoded a token or finished its prompt samples its next token
// through its Generation (the rows on several threads, the text in slot order); a slot whose request ended, or whose client left, is freed at once,
// and queued jobs join between steps. A new job takes the free slot whose cache shares the
// longest prefix with its prompt, and is fed only from where they differ.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/thread_pool.h"
#include "model/batch.h"
#include "server/generation.h"
#include "server/job.h"
#include "text/tokenizer.h"

namespace cllm::server {

struct SchedulerOptions {
  int slots = 1;           // requests decoded together (-np); sequence ids 0 .. slots-1
  int context = 0;         // positions per slot (its sequence's KV region)
  int batch_capacity = 0;  // tokens one forward call takes; at least `slots`
  int chunk = 256;         // prompt tokens per slot per step while other slots decode
  int n_vocab = 0;         // length of a logits row (the model's vocabulary)
  int max_queue = 16;      // jobs that may wait while every slot is taken
  int token_delay_ms = 0;  // tests only: a pause before each step, to hold jobs long enough
};

// How a scheduler keeps its model's engine in memory (serve's idle models, served_model.h),
// both called on the scheduler's thread: ensure_loaded() before every step that has jobs (true
// when it loaded the engine again, whose caches are then empty; throwing fails the jobs that
// were about to start, 503), and idle() once no job came for keep_alive_s seconds (it may
// unload the engine). Without them the engine is always loaded.
struct EngineResidency {
  std::function<bool()> ensure_loaded;
  std::function<void()> idle;
  double keep_alive_s = -1;  // < 0: idle() is never called
};

class SlotScheduler {
 public:
  // Called on the scheduler's thread when a job ends, before the job is told (metrics).
  using OnDone = std::function<void(const GenerationOutput& out, double queue_ms)>;

  // forward and tok (and the engine behind them) must outlive this object.
  SlotScheduler(BatchForwardFn forward, const Tokenizer& tok, const SchedulerOptions& opt, OnDone on_done,
                EngineResidency residency = {});
  ~SlotScheduler();
  SlotScheduler(const SlotScheduler&) = delete;
  SlotScheduler& operator=(const SlotScheduler&) = delete;

  // False when every slot is taken and the queue is full, or the scheduler stopped.
  bool submit(std::shared_ptr<Job> job);
  // Cancels the running jobs (before their next token), fails the waiting ones (503, "the
  // server is stopping"), joins the thread.
  void stop();

  int queued() const;   // jobs waiting for a slot
  int running() const;  // jobs in slots
  bool busy() const { return running() > 0; }
  const SchedulerOptions& options() const { return opt_; }

 private:
  // A sequence of the engine and the request on it, if any.
  struct Slot {
    int seq = 0;
    std::vector<int> cached;          // the tokens in its KV region, position = index
    std::shared_ptr<Job> job;         // none: free
    std::unique_ptr<Generation> gen;
    int fed = 0;                      // prompt tokens in the cache; the prompt is read until fed == its size
    int reused = 0;                   // of those, found there when the job came
    int next_token = -1;              // generating: the sampled token to feed in the next step
    uint64_t order = 0;               // when it was last given a job (prompt chunks go oldest first; ties in reuse go to the least recent)
  };

  BatchForwardFn forward_;
  const Tokenizer& tok_;
  const SchedulerOptions opt_;
  const int n_sample_;
  OnDone on_done_;
  EngineResidency residency_;
  bool idle_told_ = false;   // idle() was called and no job came since
  std::vector<Slot> slots_;  // the scheduler thread's alone
  uint64_t jobs_taken_ = 0;
  std::vector<int> batch_tokens_;
  std::vector<BatchSegment> batch_segs_;
  std::vector<Slot*> batch_slots_;  // the slot of each segment
  // Sampling a 128k-entry row takes ~0.1 ms; 16 slots one after the other would add ~1.6 ms to
  // every step, so the rows are sampled on up to 8 threads (the engine is idle meanwhile).
  ThreadPool sampling_pool_;
  std::vector<Slot*> sampling_slots_;
  std::vector<const float*> sampling_rows_;
  std::vector<int> sampled_;

  mutable std::mutex m_;
  std::mutex stop_m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  int taken_ = 0;  // slots holding a job, or about to (under m_)
  bool stopping_ = false;
  std::thread thread_;

  void loop();
  // Waits for work (true) or stopping (false); calls residency_.idle() on the way when no job comes for keep_alive_s.
  bool wait_for_work(std::vector<std::shared_ptr<Job>>& joining);
  bool engine_ready(std::vector<std::shared_ptr<Job>>& joining);  // false: the joining jobs failed, none runs
  void start(std::shared_ptr<Job> job);
  Slot& slot_for(const std::vector<int>& prompt);
  void step();
  void end(Slot& s);                          // the job's outcome: counted, told, its slot freed
  std::shared_ptr<Job> free_slot(Slot& s);    // empties the slot; returns its job
  void release();                             // one slot fewer taken
};

}  // namespace cllm::server
