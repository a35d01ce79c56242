#include "common/file_io.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "common/error.h"

namespace cllm {

bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

uint64_t file_size(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail("'", path, "': ", errno_string(errno));
  return static_cast<uint64_t>(st.st_size);
}

std::string path_join(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

std::string path_basename(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

std::vector<uint8_t> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("reading '", path, "': ", errno_string(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    const int err = S_ISDIR(st.st_mode) ? EISDIR : errno;
    ::close(fd);
    fail("reading '", path, "': ", errno_string(err));
  }
  std::vector<uint8_t> out(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      fail("reading '", path, "': ", n == 0 ? "file shrank while reading" : errno_string(err));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

std::string read_text_file(const std::string& path) {
  const auto bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

// ---- Mapped ranges, so that a SIGBUS (a mapped file that shrank under us) names the file.
// A fixed table: the handler reads it without allocating or locking.

namespace {

constexpr int kMaxMappings = 256;
struct MappingSlot {
  std::atomic<const uint8_t*> begin{nullptr};  // null: free
  uint64_t size = 0;
  char path[512];
};
MappingSlot g_mappings[kMaxMappings];
std::mutex g_mappings_mutex;

void mapping_register(const uint8_t* begin, uint64_t size, const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mappings_mutex);
  for (auto& m : g_mappings) {
    if (m.begin.load() != nullptr) continue;
    m.size = size;
    const size_t n = std::min(path.size(), sizeof(m.path) - 1);
    std::memcpy(m.path, path.data(), n);
    m.path[n] = '\0';
    m.begin.store(begin);  // published last: the handler sees a complete slot
    return;
  }  // table full: the mapping works, a SIGBUS in it is just not explained
}

void mapping_unregister(const uint8_t* begin) {
  std::lock_guard<std::mutex> lock(g_mappings_mutex);
  for (auto& m : g_mappings)
    if (m.begin.load() == begin) m.begin.store(nullptr);
}

}  // namespace

// ---- MappedFile

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("opening '", path, "': ", errno_string(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("opening '", path, "': ", errno_string(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail("opening '", path, "': is a directory, expected a file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail("mapping '", path, "': ", errno_string(err));
    }
    data_ = static_cast<const uint8_t*>(p);
    mapping_register(data_, size_, path_);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) {
    mapping_unregister(data_);
    ::munmap(const_cast<uint8_t*>(data_), size_);
  }
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(o.data_), size_(o.size_) {
  o.data_ = nullptr;
  o.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (data_) {
      mapping_unregister(data_);
      ::munmap(const_cast<uint8_t*>(data_), size_);
    }
    path_ = std::move(o.path_);
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

// ---- Temporary files removed on a signal. A fixed table, so the handler needs no allocation.

namespace {

constexpr int kMaxTempFiles = 16;
char g_temp_paths[kMaxTempFiles][4096];
volatile sig_atomic_t g_temp_used[kMaxTempFiles];
std::mutex g_temp_mutex;

int temp_register(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_temp_mutex);
  for (int i = 0; i < kMaxTempFiles; ++i) {
    if (!g_temp_used[i] && path.size() < sizeof(g_temp_paths[i])) {
      std::memcpy(g_temp_paths[i], path.c_str(), path.size() + 1);
      g_temp_used[i] = 1;
      return i;
    }
  }
  return -1;
}

void temp_unregister(int slot) {
  if (slot < 0) return;
  std::lock_guard<std::mutex> lock(g_temp_mutex);
  g_temp_used[slot] = 0;
}

void remove_temp_files() {
  for (int i = 0; i < kMaxTempFiles; ++i)
    if (g_temp_used[i]) ::unlink(g_temp_paths[i]);
}

void write_stderr(const char* s) {
  if (::write(STDERR_FILENO, s, std::strlen(s)) < 0) {
  }
}

extern "C" void cleanup_on_signal(int sig) {
  remove_temp_files();
  write_stderr("\ninterrupted: removed partial output\n");
  ::_exit(128 + sig);
}

// Decimal digits of v into buf (no allocation, no stdio: async-signal-safe).
const char* u64_to_chars(uint64_t v, char (&buf)[24]) {
  char* p = buf + sizeof(buf) - 1;
  *p = '\0';
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  return p;
}

// A read from a mapped file past its current end: another program truncated or replaced the
// file while codecllm was reading it. Explain, remove partial output, exit 1. A SIGBUS
// anywhere else is not ours to explain: the default action (core dump) runs.
extern "C" void explain_sigbus(int sig, siginfo_t* info, void*) {
  const auto* addr = static_cast<const uint8_t*>(info->si_addr);
  for (const auto& m : g_mappings) {
    const uint8_t* begin = m.begin.load();
    if (!begin || addr < begin || addr >= begin + m.size) continue;
    remove_temp_files();
    char at[24], size[24];
    write_stderr("error: '");
    write_stderr(m.path);
    write_stderr("': the file shrank while codecllm was reading it (byte ");
    write_stderr(u64_to_chars(static_cast<uint64_t>(addr - begin), at));
    write_stderr(" of the ");
    write_stderr(u64_to_chars(m.size, size));
    write_stderr(" it had when opened is gone): was it truncated or rewritten by another program? "
                 "Run again once the file is complete\n");
    ::_exit(1);
  }
  ::signal(sig, SIG_DFL);  // returning re-runs the faulting access, which now dumps core
}

}  // namespace

void install_cleanup_signal_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = cleanup_on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  struct sigaction bus;
  std::memset(&bus, 0, sizeof(bus));
  bus.sa_sigaction = explain_sigbus;
  bus.sa_flags = SA_SIGINFO;
  sigemptyset(&bus.sa_mask);
  ::sigaction(SIGBUS, &bus, nullptr);
  // A file size limit (ulimit -f) makes write() fail with EFBIG, reported like a full disk,
  // instead of killing the process with the temporary file left behind.
  ::signal(SIGXFSZ, SIG_IGN);
}

// ---- AtomicOutputFile

AtomicOutputFile::AtomicOutputFile(const std::string& path, bool overwrite)
    : path_(path), overwrite_(overwrite) {
  if (!overwrite && path_exists(path))
    fail("'", path, "' already exists: refusing to overwrite it (use --force)");
  if (is_directory(path)) fail("'", path, "' is a directory, expected a file name");
  tmp_path_ = path + ".tmp." + std::to_string(::getpid());
  // Registered before it exists: a signal arriving between the open and the registration
  // would otherwise leave the new file behind.
  temp_slot_ = temp_register(tmp_path_);
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    temp_unregister(temp_slot_);
    fail("creating '", tmp_path_, "': ", errno_string(err));
  }
}

AtomicOutputFile::~AtomicOutputFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_path_.c_str());
  temp_unregister(temp_slot_);  // last: until the file is gone, a signal must still remove it
}

void AtomicOutputFile::pwrite(const void* data, size_t size, uint64_t offset) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = ::pwrite(fd_, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      if (err == ENOSPC || err == EDQUOT || err == EFBIG)
        fail("writing '", path_, "': ", errno_string(err),
             " (the disk is full or a size limit was reached; the partial file is removed: free some space and retry)");
      fail("writing '", path_, "': ", errno_string(err));
    }
    if (n == 0) fail("writing '", path_, "': no progress (disk full?)");
    p += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

void AtomicOutputFile::write(const void* data, size_t size) {
  pwrite(data, size, offset_);
  offset_ += size;
}

void AtomicOutputFile::pad_to(uint64_t alignment) {
  static const uint8_t zeros[4096] = {};
  uint64_t pad = (alignment - offset_ % alignment) % alignment;
  while (pad > 0) {
    const size_t n = pad < sizeof(zeros) ? static_cast<size_t>(pad) : sizeof(zeros);
    write(zeros, n);
    pad -= n;
  }
}

void AtomicOutputFile::commit() {
  if (::fsync(fd_) != 0) fail("writing '", path_, "': ", errno_string(errno));
  if (!overwrite_ && path_exists(path_))
    fail("'", path_, "' appeared while writing: refusing to overwrite it (use --force)");
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0)
    fail("renaming '", tmp_path_, "' to '", path_, "': ", errno_string(errno));
  committed_ = true;
}

}  // namespace cllm
