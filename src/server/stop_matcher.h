// Cuts generated text at the first of the request's stop strings. Text is pushed piece by piece
// as tokens decode; what comes back is safe to send: the tail that could still be the start of
// a stop string is held until the next piece tells, so a streamed reply never shows part of a
// stop string (and equals the non-streamed one).
#pragma once

#include <string>
#include <vector>

namespace cllm::server {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // The text that can be sent now. Once a stop string is found, returns the text before it and
  // stopped() is true; later pushes return "".
  std::string push(const std::string& piece);
  // The held tail, when generation ended without a stop string.
  std::string finish();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;  // text not sent yet: it may begin a stop string
  bool stopped_ = false;
};

}  // namespace cllm::server
