// A progress bar on stderr: redrawn in place on a terminal; in logs a line every 10% after
// the first second, so logs stay readable. Silent under --quiet.
#pragma once

#include <cstdint>
#include <string>

#include "common/timer.h"

namespace cllm::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  void update(uint64_t done, uint64_t total);  // bytes
  void finish();                               // ends the line

 private:
  std::string label_;
  Timer timer_;
  bool tty_;
  int last_decile_ = -1;
  double last_draw_ = -1;
  bool drawn_ = false;
};

// "1.23 GB", "512.0 MB", "4.0 KB" (powers of 1000, as download tools print).
std::string format_bytes(double bytes);

}  // namespace cllm::cli
