// Errors with context. Code throws cllm::Error with a message a user can act on;
// callers add context on the way up ("loading 'x.cllm': tensor 'blk.3.attn_q.weight' tile 7: ...");
// main() catches once, prints it and exits 1.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace cllm {

// What the user can change to get past an error, in the problem's own terms; the CLI says it
// with its flags ("use --mode lowmem", "use -c 2048 or less", "use --device cpu"), so lower
// layers never name a flag.
struct Remedy {
  enum Kind {
    none,
    mode,             // value: the mode that would work ("lowmem")
    context_at_most,  // value: the largest context that works
    smaller_context,  // value: the context that did not fit
    cpu_device,       // run on the CPU instead
  } kind = none;
  std::string value;
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, Remedy remedy = {}) : std::runtime_error(what), remedy_(std::move(remedy)) {}
  const Remedy& remedy() const { return remedy_; }

 private:
  Remedy remedy_;
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

// fail() with what the user can change (Remedy).
template <class... Args>
[[noreturn]] void fail_with(Remedy remedy, Args&&... args) {
  throw Error(cat(std::forward<Args>(args)...), std::move(remedy));
}

// Runs fn(); an Error escaping it is rethrown with "context: " in front.
template <class Fn>
auto with_context(const std::string& context, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    throw Error(context + ": " + e.what(), e.remedy());
  }
}

// strerror(errno) as a std::string.
std::string errno_string(int err);

}  // namespace cllm

#define CLLM_CHECK(cond, ...)                      \
  do {                                             \
    if (!(cond)) ::cllm::fail(__VA_ARGS__);        \
  } while (0)
