#include "server/model_worker.h"

#include <chrono>

#include "common/log.h"

namespace cllm::server {

ModelWorker::ModelWorker(Sequence& sequence, int max_queue, OnDone on_done, int token_delay_ms)
    : sequence_(sequence), max_queue_(max_queue), on_done_(std::move(on_done)), token_delay_ms_(token_delay_ms) {
  thread_ = std::thread([this] { loop(); });
}

ModelWorker::~ModelWorker() { stop(); }

bool ModelWorker::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(m_);
    if (stopping_) return false;
    // A job waits only behind a running one: an idle worker takes it at once.
    const int waiting = static_cast<int>(queue_.size()) + (running_ ? 1 : 0);
    if (waiting > max_queue_) return false;
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
  return true;
}

void ModelWorker::stop() {
  std::lock_guard<std::mutex> one_at_a_time(stop_m_);  // the signal watcher and the main thread may both stop it
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard<std::mutex> lock(m_);
    stopping_ = true;
    dropped.swap(queue_);
    if (running_) running_->cancel();
  }
  cv_.notify_all();
  for (auto& job : dropped) job->fail(503, "the server is stopping");
  if (thread_.joinable()) thread_.join();
}

int ModelWorker::queued() const {
  std::lock_guard<std::mutex> lock(m_);
  return static_cast<int>(queue_.size());
}

bool ModelWorker::busy() const {
  std::lock_guard<std::mutex> lock(m_);
  return running_ != nullptr;
}

void ModelWorker::loop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(m_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = queue_.front();
      queue_.pop_front();
      running_ = job;
    }
    job->mark_started();
    run_job(*job);
    if (on_done_) on_done_(*job);
    std::lock_guard<std::mutex> lock(m_);
    running_.reset();
  }
}

void ModelWorker::run_job(Job& job) {
  const auto on_text = [&](const std::string& s) { job.push_text(s); };
  const auto should_stop = [&] {
    if (token_delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(token_delay_ms_));
    return job.cancelled();
  };
  try {
    if (job.cancelled()) {  // the client left while it waited
      GenerationOutput none;
      none.finish = FinishReason::cancelled;
      job.finish(none);
      return;
    }
    job.finish(sequence_.run(job.input(), on_text, should_stop));
  } catch (const std::exception& e) {
    log_warn("serve: a request failed: ", e.what());
    job.fail(500, e.what());
  }
}

}  // namespace cllm::server
