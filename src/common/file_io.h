// Files: read-only memory maps, whole-file reads, and output files that appear only when
// complete (written to a temporary name, renamed at commit, removed on error or Ctrl-C).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cllm {

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
uint64_t file_size(const std::string& path);  // throws Error naming the path
std::string path_join(const std::string& dir, const std::string& name);
std::string path_basename(const std::string& path);

// Whole file into memory; throws Error("reading 'p': <reason>").
std::vector<uint8_t> read_file(const std::string& path);
std::string read_text_file(const std::string& path);

// A read-only memory map of a whole file. Movable, not copyable. If another program truncates
// the file while it is mapped, reading the lost part raises SIGBUS; with the handlers of
// install_cleanup_signal_handlers() that is an error naming the file (exit status 1), not a
// crash. Bytes changed in place show through the map: readers check CRCs and structure.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// An output file that exists under its final name only after commit(). Until then it is
// "<path>.tmp.<pid>"; the destructor (error path) and SIGINT/SIGTERM remove it.
// Refuses to replace an existing file unless overwrite is true.
class AtomicOutputFile {
 public:
  AtomicOutputFile(const std::string& path, bool overwrite);
  ~AtomicOutputFile();
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;

  void write(const void* data, size_t size);                  // appends at the current end
  void pwrite(const void* data, size_t size, uint64_t offset);  // writes at offset
  void pad_to(uint64_t alignment);                              // zero-fills to a multiple
  uint64_t offset() const { return offset_; }
  const std::string& path() const { return path_; }
  void commit();  // fsync, rename over the final name

 private:
  std::string path_, tmp_path_;
  int fd_ = -1;
  int temp_slot_ = -1;  // its entry in the table the signal handlers clean up
  uint64_t offset_ = 0;
  bool overwrite_ = false;
  bool committed_ = false;
};

// Installs SIGINT/SIGTERM handlers that remove every uncommitted AtomicOutputFile and exit
// with status 130 (SIGINT) or 143 (SIGTERM); a SIGBUS handler that turns a read past the end
// of a MappedFile that shrank into "error: '<path>': the file shrank ..." (temporary files
// removed, exit status 1); and ignores SIGXFSZ, so that a file size limit is a write error
// like a full disk. Called once by main().
void install_cleanup_signal_handlers();

}  // namespace cllm
