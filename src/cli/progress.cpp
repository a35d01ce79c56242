#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>

#include "common/log.h"

namespace cllm::cli {

std::string format_bytes(double b) {
  const char* unit[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000.0 && u < 4) {
    b /= 1000.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", b, unit[u]);
  return buf;
}

ProgressBar::ProgressBar(std::string label) : label_(std::move(label)), tty_(::isatty(STDERR_FILENO)) {}

void ProgressBar::update(uint64_t done, uint64_t total) {
  if (log_level() < LogLevel::info || total == 0) return;
  const double frac = static_cast<double>(done) / static_cast<double>(total);
  const double t = timer_.seconds();
  const double rate = t > 0 ? static_cast<double>(done) / t : 0.0;
  if (tty_) {
    if (t - last_draw_ < 0.1 && done < total) return;  // at most 10 redraws a second
    last_draw_ = t;
    constexpr int width = 30;
    const int fill = static_cast<int>(frac * width);
    std::string bar(static_cast<size_t>(fill), '=');
    if (fill < width) bar += '>' + std::string(static_cast<size_t>(width - fill - 1), ' ');
    std::fprintf(stderr, "\r%s [%s] %3.0f%% %s / %s  %s/s  ", label_.c_str(), bar.c_str(), frac * 100,
                 format_bytes(static_cast<double>(done)).c_str(), format_bytes(static_cast<double>(total)).c_str(),
                 format_bytes(rate).c_str());
    drawn_ = true;
  } else {
    // Logs: a line per 10%, and none at all for jobs that finish within a second.
    const int decile = static_cast<int>(frac * 10);
    if (decile == last_decile_ || t < 1.0) return;
    last_decile_ = decile;
    std::fprintf(stderr, "%s: %3d%% %s / %s  %s/s\n", label_.c_str(), decile * 10,
                 format_bytes(static_cast<double>(done)).c_str(), format_bytes(static_cast<double>(total)).c_str(),
                 format_bytes(rate).c_str());
  }
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (tty_ && drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

}  // namespace cllm::cli
