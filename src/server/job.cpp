#include "server/job.h"

namespace cllm::server {

void Job::push_text(const std::string& text) {
  {
    std::lock_guard<std::mutex> lock(m_);
    pending_.push_back(text);
  }
  cv_.notify_all();
}

void Job::finish(const GenerationOutput& out) {
  {
    std::lock_guard<std::mutex> lock(m_);
    output_ = out;
    done_ = true;
  }
  cv_.notify_all();
}

void Job::fail(int status, const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(m_);
    error_status_ = status;
    error_message_ = message;
    done_ = true;
  }
  cv_.notify_all();
}

bool Job::take_text(std::vector<std::string>* pieces, std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(m_);
  cv_.wait_for(lock, wait, [&] { return done_ || !pending_.empty(); });
  pieces->clear();
  pieces->swap(pending_);
  return done_;  // all text pushed before the end has been taken with it
}

bool Job::wait_done(std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(m_);
  return cv_.wait_for(lock, wait, [&] { return done_; });
}

}  // namespace cllm::server
