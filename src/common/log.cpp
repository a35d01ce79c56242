#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace cllm {

static std::atomic<int> g_level{static_cast<int>(LogLevel::info)};
static std::mutex g_mutex;

void log_set_level(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }

void log_write(LogLevel level, const std::string& msg) {
  static const char* prefix[] = {"error: ", "warning: ", "", "debug: "};
  std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(stderr, "%s%s\n", prefix[static_cast<int>(level)], msg.c_str());
}

}  // namespace cllm
