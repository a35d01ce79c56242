// One generation request on its way through a model's scheduler, and the channel between the
// HTTP thread that waits for it and the scheduler that runs it. The scheduler pushes text as it is
// generated and then the outcome; the HTTP thread takes text as it comes (streaming) or waits
// for the end. A client that goes away cancels the job; the scheduler sees it before its next token.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "server/generation.h"

namespace cllm::server {

class Job {
 public:
  explicit Job(GenerationInput input) : input_(std::move(input)) {}

  const GenerationInput& input() const { return input_; }
  std::chrono::steady_clock::time_point submitted() const { return submitted_; }
  // Milliseconds between submission and the scheduler taking the job (after mark_started()).
  double queue_ms() const { return std::chrono::duration<double, std::milli>(started_ - submitted_).count(); }

  // Worker side.
  void mark_started() { started_ = std::chrono::steady_clock::now(); }
  void push_text(const std::string& text);
  void finish(const GenerationOutput& out);
  void fail(int status, const std::string& message);  // an error instead of an outcome

  // HTTP side. Waits up to `wait` for text or the end; moves the pieces that came (one per
  // token, as pushed) into *pieces. True once the job has ended (then output()/error_status()
  // say how).
  bool take_text(std::vector<std::string>* pieces, std::chrono::milliseconds wait);
  bool wait_done(std::chrono::milliseconds wait);  // true once the job has ended
  const GenerationOutput& output() const { return output_; }    // after the end
  int error_status() const { return error_status_; }            // 0: none
  const std::string& error_message() const { return error_message_; }

  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  GenerationInput input_;
  std::chrono::steady_clock::time_point submitted_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point started_ = submitted_;
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<std::string> pending_;  // generated pieces not taken yet
  bool done_ = false;
  GenerationOutput output_;
  int error_status_ = 0;
  std::string error_message_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace cllm::server
