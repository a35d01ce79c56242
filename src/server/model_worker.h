// A model's scheduler: one worker thread that runs the model's jobs one at a time, in order,
// on its one sequence (the engine has one KV cache), from a bounded queue. A job submitted
// while the queue is full is refused (the route answers 503).
//
// The interface (submit, stop, the Job channel) is what a batched scheduler will keep when the
// engine decodes several sequences per step (issue #18, continuous batching): it would take
// several jobs off the same queue into slots and step them together.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "server/job.h"
#include "server/sequence.h"

namespace cllm::server {

class ModelWorker {
 public:
  // Called on the worker thread after each job ends (metrics).
  using OnDone = std::function<void(const Job&)>;

  // max_queue: jobs that may wait behind the running one. token_delay_ms: a pause before each
  // token (tests only: it holds a job long enough to fill the queue deterministically).
  ModelWorker(Sequence& sequence, int max_queue, OnDone on_done, int token_delay_ms = 0);
  ~ModelWorker();
  ModelWorker(const ModelWorker&) = delete;
  ModelWorker& operator=(const ModelWorker&) = delete;

  // False when the queue is full or the worker stopped.
  bool submit(std::shared_ptr<Job> job);
  // Cancels the running job, fails the waiting ones (503, "the server is stopping"), joins the thread.
  void stop();

  int queued() const;  // jobs waiting, the running one not counted
  bool busy() const;   // a job is running

 private:
  Sequence& sequence_;
  const int max_queue_;
  OnDone on_done_;
  const int token_delay_ms_;
  mutable std::mutex m_;
  std::mutex stop_m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::shared_ptr<Job> running_;
  bool stopping_ = false;
  std::thread thread_;

  void loop();
  void run_job(Job& job);
};

}  // namespace cllm::server
