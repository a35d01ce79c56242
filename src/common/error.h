// Errors with context. Code throws cllm::Error with a message a user can act on;
// callers add context on the way up ("loading 'x.cllm': tensor 'blk.3.attn_q.weight' tile 7: ...");
// main() catches once, prints it and exits 1.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace cllm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Concatenates anything streamable: cat("tensor '", name, "': expected ", n, " bytes").
template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(cat(std::forward<Args>(args)...));
}

// Runs fn(); an Error escaping it is rethrown with "context: " in front.
template <class Fn>
auto with_context(const std::string& context, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    throw Error(context + ": " + e.what());
  }
}

// strerror(errno) as a std::string.
std::string errno_string(int err);

}  // namespace cllm

#define CLLM_CHECK(cond, ...)                      \
  do {                                             \
    if (!(cond)) ::cllm::fail(__VA_ARGS__);        \
  } while (0)
