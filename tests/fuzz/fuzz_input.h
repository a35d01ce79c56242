// Shared by the fuzz targets: the readers under test take a path (they memory-map it), so each
// input is written to one scratch file per process and target, then read back from there.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "common/log.h"

namespace cllm::fuzz {

// /dev/shm when it exists (no disk I/O per input), else $TMPDIR or /tmp.
inline std::string scratch_path(const char* target) {
  const char* dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/cllm-fuzz-" + target + "-" + std::to_string(::getpid());
}

// Replaces the file at path with size bytes of data; aborts on failure (a harness error, not a
// finding: nothing under test has run yet).
inline void write_input(const std::string& path, const uint8_t* data, size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) std::abort();
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

// Warnings ("no tokenizer in the GGUF metadata") would flood the fuzzer's output.
inline void quiet_logs() { log_set_level(LogLevel::error); }

// Removes the scratch file when the process exits normally (libFuzzer's -runs / time limit).
struct ScratchFile {
  std::string path;
  explicit ScratchFile(const char* target) : path(scratch_path(target)) {}
  ~ScratchFile() { ::unlink(path.c_str()); }
};

// Reads every 64th byte of each tensor (anything with .data and .size): each must lie inside
// the file's mapping, or ASan (or a SIGBUS) reports it.
template <class Tensors>
void touch_tensors(const Tensors& tensors) {
  uint8_t x = 0;
  for (const auto& t : tensors)
    for (uint64_t i = 0; i < t.size; i += 64) x ^= t.data[i];
  volatile uint8_t sink = x;
  (void)sink;
}

// One input through a reader that takes a path: written to this target's scratch file, then
// read(path); a cllm::Error is the expected way to refuse it, anything else escapes (a finding).
template <class Read>
int read_one(const char* target, const uint8_t* data, size_t size, Read read) {
  static const ScratchFile scratch(target);
  write_input(scratch.path, data, size);
  try {
    read(scratch.path);
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace cllm::fuzz
