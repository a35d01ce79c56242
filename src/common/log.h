// Logging to stderr. stdout is reserved for results (generated text, tables, JSON).
#pragma once

#include <string>

#include "common/error.h"

namespace cllm {

enum class LogLevel { error = 0, warn = 1, info = 2, debug = 3 };

void log_set_level(LogLevel level);
LogLevel log_level();
void log_write(LogLevel level, const std::string& msg);

template <class... Args> void log_info(Args&&... a) { if (log_level() >= LogLevel::info) log_write(LogLevel::info, cat(std::forward<Args>(a)...)); }
template <class... Args> void log_warn(Args&&... a) { if (log_level() >= LogLevel::warn) log_write(LogLevel::warn, cat(std::forward<Args>(a)...)); }
template <class... Args> void log_debug(Args&&... a) { if (log_level() >= LogLevel::debug) log_write(LogLevel::debug, cat(std::forward<Args>(a)...)); }

}  // namespace cllm
