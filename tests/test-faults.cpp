// Specification of what codecllm does when the world misbehaves: Ctrl-C, a full disk, a source
// that is missing, unreadable or cut short while it is read, an output that already exists, a
// .cllm file that shrinks or changes under a running process. Nothing crashes and nothing the
// user had is lost: every case is an exit status and a message naming the file.
//
// The CLI runs as a child process (fork + exec) so that the tests can signal it, limit its file
// size and change its files while it runs. Timed cases start the fault once the child has
// visibly begun (its temporary output exists, or its mapping of the file is listed in
// /proc/PID/maps); the inputs are large enough (tens of MB) that it is then far from done.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "common/crc32c.h"
#include "common/error.h"
#include "common/file_io.h"
#include "convert/compress.h"
#include "convert/source_model.h"
#include "format/cllm_reader.h"
#include "format/cllm_writer.h"
#include "model/tensor_data.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Contains;

namespace {

// A llama2.c checkpoint (float32) of the given shape with small pseudo-random weights:
// realistic exponents (|w| < 0.02) at little cost to generate. The default shape is 42 MB,
// which keeps a one-thread compress busy for a good fraction of a second.
struct Shape {
  int dim = 256, hidden = 688, layers = 8, heads = 8, kv_heads = 4, vocab = 16384, seq = 64;
};

std::string write_llama2c(const test::TempDir& dir, const std::string& name, const Shape& s = {}) {
  const uint64_t dim = s.dim, hidden = s.hidden, L = s.layers, kv = s.dim / s.heads * s.kv_heads;
  const uint64_t floats = s.vocab * dim + L * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * hidden * dim) + dim +
                          s.seq * (dim / s.heads);
  const int32_t header[7] = {s.dim, s.hidden, s.layers, s.heads, s.kv_heads, s.vocab, s.seq};
  std::vector<float> w(floats);
  uint64_t x = 88172645463325252ull;
  for (auto& v : w) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;  // xorshift64
    v = (static_cast<float>(x >> 40) / 16777216.0f - 0.5f) * 0.04f;
  }
  const std::string path = dir.file(name);
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(header), sizeof header);
  f.write(reinterpret_cast<const char*>(w.data()), static_cast<std::streamsize>(4 * w.size()));
  REQUIRE(f.good());
  return path;
}

std::string binary() {
  const char* env = std::getenv("CLLM_BINARY");
  return env ? env : CLLM_BINARY;
}

// The CLI running as a child: stdout and stderr go to files in dir.
struct Child {
  pid_t pid = -1;
  std::string out_path, err_path;

  // Exit status, or 128 + the signal that ended it (as a shell reports it).
  int wait() {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    pid = -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
  }
  std::string err() const { return read_text_file(err_path); }
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      wait();
    }
  }
};

// Starts codecllm with args; file_size_limit (bytes) sets RLIMIT_FSIZE in the child only.
void spawn(Child& c, const test::TempDir& logs, const std::vector<std::string>& args,
           rlim_t file_size_limit = RLIM_INFINITY) {
  c.out_path = logs.file("child.out");
  c.err_path = logs.file("child.err");
  const std::string bin = binary();
  std::vector<char*> argv = {const_cast<char*>(bin.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  c.pid = ::fork();
  REQUIRE(c.pid >= 0);
  if (c.pid == 0) {
    const int out = ::open(c.out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(c.err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int in = ::open("/dev/null", O_RDONLY);
    if (out < 0 || err < 0 || in < 0) ::_exit(125);
    ::dup2(in, 0), ::dup2(out, 1), ::dup2(err, 2);
    if (file_size_limit != RLIM_INFINITY) {
      const rlimit lim = {file_size_limit, file_size_limit};
      if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(125);
    }
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
}

// Polls (every millisecond, up to 20 s) until pred() holds; false on timeout.
template <class Pred>
bool wait_until(Pred pred) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

// True once process pid has path memory-mapped.
bool has_mapped(pid_t pid, const std::string& path) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.size() >= path.size() && line.compare(line.size() - path.size(), path.size(), path) == 0) return true;
  return false;
}

// The names in dir, sorted.
std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  const std::string cmd = "ls -A '" + dir + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) {
    std::string s(buf);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    names.push_back(s);
  }
  ::pclose(p);
  return names;
}

uint32_t file_crc(const std::string& path) {
  const auto bytes = read_file(path);
  return crc32c(bytes.data(), bytes.size());
}

}  // namespace

// ---- compress: interrupted, out of space, bad sources, existing output

TEST_CASE("compress: Ctrl-C (SIGINT) or SIGTERM while writing exits 130 / 143 and leaves no partial output",
          "[faults]") {
  test::TempDir dir, logs;
  const std::string src = write_llama2c(dir, "model.bin");
  const uint32_t src_crc = file_crc(src);
  for (const int sig : {SIGINT, SIGTERM}) {
    DYNAMIC_SECTION("signal " << sig) {
      const std::string out = dir.file("model.cllm");
      Child c;
      spawn(c, logs, {"compress", src, out, "-t", "1"});
      const std::string tmp = out + ".tmp." + std::to_string(c.pid);
      REQUIRE(wait_until([&] { return path_exists(tmp); }));  // the output is being written
      REQUIRE(::kill(c.pid, sig) == 0);
      CHECK(c.wait() == 128 + sig);
      CHECK_THAT(c.err(), Contains("interrupted: removed partial output"));
      CHECK(list_dir(dir.path()) == std::vector<std::string>{"model.bin"});  // no .cllm, no .tmp
      CHECK(file_crc(src) == src_crc);
    }
  }
}

TEST_CASE("compress: a full disk (file size limit) is an error naming the output, nothing is left, the source is untouched",
          "[faults]") {
  test::TempDir dir, logs;
  const std::string src = write_llama2c(dir, "model.bin");
  const uint32_t src_crc = file_crc(src);
  const std::string out = dir.file("model.cllm");
  Child c;
  // The output would be ~35 MB; writes past 1 MiB fail with EFBIG, as a full disk fails with
  // ENOSPC (without the SIGXFSZ that would kill the process by default).
  spawn(c, logs, {"compress", src, out, "-t", "1"}, 1 << 20);
  CHECK(c.wait() == 1);
  const std::string err = c.err();
  CHECK_THAT(err, Contains("error: compressing '" + src + "': writing '" + out + "': File too large") &&
                      Contains("the disk is full or a size limit was reached"));
  CHECK(list_dir(dir.path()) == std::vector<std::string>{"model.bin"});
  CHECK(file_crc(src) == src_crc);
}

TEST_CASE("synth OUT.cllm: Ctrl-C while writing exits 130 and leaves no partial output or side folder", "[faults]") {
  test::TempDir dir, logs;
  const std::string out = dir.file("tl.cllm");
  Child c;
  // ~290 MB of bf16 to generate and encode: a second or more, time to be interrupted.
  spawn(c, logs, {"synth", out, "--preset", "tinyllama-1.1b", "--layers", "1", "-t", "1"});
  const std::string tmp = out + ".tmp." + std::to_string(c.pid);
  REQUIRE(wait_until([&] { return path_exists(tmp); }));
  REQUIRE(::kill(c.pid, SIGINT) == 0);
  CHECK(c.wait() == 130);
  CHECK_THAT(c.err(), Contains("interrupted: removed partial output"));
  CHECK(list_dir(dir.path()).empty());
}

TEST_CASE("synth OUT.cllm: a full disk (file size limit) is an error naming the output, nothing is left", "[faults]") {
  test::TempDir dir, logs;
  const std::string out = dir.file("tiny.cllm");
  Child c;
  // The output would be ~6.8 MB; its writes past 1 MiB fail with EFBIG, on the thread that
  // writes one group while the next is encoded.
  spawn(c, logs, {"synth", out, "--preset", "tiny-test", "-t", "2"}, 1 << 20);
  CHECK(c.wait() == 1);
  CHECK_THAT(c.err(), Contains("error: synthesizing '" + out + "': writing '" + out + "': File too large") &&
                          Contains("the disk is full or a size limit was reached"));
  CHECK(list_dir(dir.path()).empty());  // no .cllm, no .tmp, no side folder
}

TEST_CASE("compress: a missing, unreadable or directory source is refused naming it, nothing is written",
          "[faults]") {
  test::TempDir dir;
  const std::string out = dir.file("out.cllm");
  std::string err;

  SECTION("missing") {
    CHECK(test::run_cli({"compress", dir.file("nope.bin"), out}, nullptr, &err) == 1);
    CHECK_THAT(err, Contains("nope.bin") && Contains("no such file or directory"));
  }
  SECTION("a Hugging Face folder whose weights file is a directory") {
    ::mkdir(dir.file("hf").c_str(), 0755);
    std::ofstream(dir.file("hf/config.json")) << read_text_file(test::fixture_dir("hf-f32-gqa") + "/config.json");
    ::mkdir(dir.file("hf/model.safetensors").c_str(), 0755);
    CHECK(test::run_cli({"compress", dir.file("hf"), out}, nullptr, &err) == 1);
    CHECK_THAT(err, Contains("model.safetensors") && Contains("directory"));
  }
  SECTION("without read permission") {
    const std::string src = write_llama2c(dir, "locked.bin", Shape{64, 172, 1, 8, 4, 512, 32});
    REQUIRE(::chmod(src.c_str(), 0) == 0);
    if (::access(src.c_str(), R_OK) == 0) {
      WARN("running as root: permission bits do not stop reading, nothing to check");
    } else {
      CHECK(test::run_cli({"compress", src, out}, nullptr, &err) == 1);
      CHECK_THAT(err, Contains("locked.bin") && Contains("Permission denied"));
    }
  }
  CHECK_FALSE(path_exists(out));
  for (const auto& name : list_dir(dir.path())) CHECK(name.find(".tmp.") == std::string::npos);
}

TEST_CASE("compress: a source truncated while it is read is an error naming it, not a crash (SIGBUS)", "[faults]") {
  test::TempDir dir, logs;
  const std::string src = write_llama2c(dir, "model.bin");
  const std::string out = dir.file("model.cllm");
  Child c;
  spawn(c, logs, {"compress", src, out, "-t", "1"});
  // Once the output exists the source is mapped and checked, and encoding has not yet begun.
  REQUIRE(wait_until([&] { return path_exists(out + ".tmp." + std::to_string(c.pid)); }));
  REQUIRE(::truncate(src.c_str(), 4096) == 0);
  CHECK(c.wait() == 1);
  CHECK_THAT(c.err(), Contains("error: '" + src + "': the file shrank while codecllm was reading it") &&
                          Contains("truncated or rewritten by another program"));
  CHECK(list_dir(dir.path()) == std::vector<std::string>{"model.bin"});
}

TEST_CASE("compress: an existing output is left untouched without --force and replaced with it", "[faults]") {
  test::TempDir dir;
  const std::string src = write_llama2c(dir, "model.bin", Shape{64, 172, 2, 8, 4, 512, 32});
  const std::string out = dir.file("model.cllm");
  std::ofstream(out) << "precious";
  std::string err;
  CHECK(test::run_cli({"compress", src, out}, nullptr, &err) == 1);
  CHECK_THAT(err, Contains("'" + out + "' already exists: refusing to overwrite it (use --force)"));
  CHECK(read_text_file(out) == "precious");
  CHECK(list_dir(dir.path()) == (std::vector<std::string>{"model.bin", "model.cllm"}));

  CHECK(test::run_cli({"compress", src, out, "--force"}, nullptr, &err) == 0);
  CHECK(test::run_cli({"verify", out, src}) == 0);
  CHECK(list_dir(dir.path()) == (std::vector<std::string>{"model.bin", "model.cllm"}));
}

// ---- a .cllm file that changes under a running process

TEST_CASE("verify: a .cllm truncated while it runs is an error naming the file, not a crash (SIGBUS)", "[faults]") {
  test::TempDir dir, logs;
  const SourceModel m = open_source_model(write_llama2c(dir, "model.bin"));
  const std::string model = dir.file("model.cllm");
  CompressOptions co;
  co.threads = 2;
  compress_model(m, model, co);
  Child c;
  spawn(c, logs, {"verify", model, "-t", "1"});
  REQUIRE(wait_until([&] { return has_mapped(c.pid, model); }));  // opened; checking and decoding follow
  REQUIRE(::truncate(model.c_str(), 4096) == 0);
  CHECK(c.wait() == 1);
  CHECK_THAT(c.err(), Contains("error: '" + model + "': the file shrank while codecllm was reading it"));
}

TEST_CASE("a mapped .cllm that shrinks: decoding ends with an error naming the file, exit status 1", "[faults]") {
  // The same in a forked process running the library directly: no timing involved.
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  const std::string err_path = dir.file("child.err");
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(err, 2);
    install_cleanup_signal_handlers();  // as main() does
    try {
      CllmOpenOptions opt;
      opt.verify_checksums = false;
      const CllmFile f = CllmFile::open(model, opt);
      if (::truncate(model.c_str(), 4096) != 0) ::_exit(3);
      for (const auto& t : f.tensors()) {
        std::vector<uint8_t> out(t.raw_bytes());
        decode_tensor(f, t, out.data(), nullptr);
      }
    } catch (...) {
      ::_exit(2);  // a read of the lost bytes must not come back as data or as an exception
    }
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  const std::string err = read_text_file(err_path);
  CHECK_THAT(err, Contains("error: '" + model + "': the file shrank while codecllm was reading it (byte "));
}

TEST_CASE("a .cllm whose tile bytes change after open: decoding never crashes, the checksums name the tile",
          "[faults]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  const CllmFile f = CllmFile::open(model);  // checksums verified here
  const TensorInfo& t = f.get("blk.2.ffn_up.weight");
  std::vector<uint8_t> before(t.raw_bytes());
  decode_tensor(f, t, before.data(), nullptr);

  // Another program rewrites part of the tile in place (same size): the map shows the new bytes.
  const TileInfo& tile = t.tiles[0];
  {
    const int fd = ::open(model.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    const std::vector<uint8_t> junk(tile.size / 2, 0xA5);
    REQUIRE(::pwrite(fd, junk.data(), junk.size(), static_cast<off_t>(tile.offset + tile.size / 4)) ==
            static_cast<ssize_t>(junk.size()));
    ::close(fd);
  }
  std::vector<uint8_t> after(t.raw_bytes());
  try {
    decode_tensor(f, t, after.data(), nullptr);
    CHECK(after != before);  // decoded, to different values: the checksum below is what catches it
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("tensor 'blk.2.ffn_up.weight' tile 0"));
  }
  CHECK_THROWS_WITH(f.verify_checksums(1), Contains("'" + model + "': tensor 'blk.2.ffn_up.weight' tile 0: checksum mismatch"));
  std::string err;
  CHECK(test::run_cli({"verify", model}, nullptr, &err) == 1);
  CHECK_THAT(err, Contains("tensor 'blk.2.ffn_up.weight' tile 0: checksum mismatch"));
}

// ---- limits: what a small file can make a reader allocate

TEST_CASE("a tile that claims more elements than its bytes can hold is refused before anything is allocated",
          "[faults]") {
  // A 1 MB file whose index says one tensor decodes to 1 GiB: without the bound, `verify`
  // would allocate (and zero) that much before the codec found the tile too short.
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  auto bytes = read_file(model);
  const CllmHeader h = parse_header(bytes.data(), bytes.size());
  CllmIndex index = parse_index(bytes.data() + h.index_offset, h.index_size, bytes.size());
  TensorInfo* t = nullptr;
  for (auto& x : index.tensors)
    if (x.name == "blk.0.attn_q.weight") t = &x;
  REQUIRE(t);
  REQUIRE(t->tiles.size() == 1);
  const uint32_t tile_size = t->tiles[0].size;
  t->shape = {64, 64 << 16};  // 2^28 f32 elements
  t->tiles[0].n_elems = 1u << 28;
  const auto ib = serialize_index(index);
  REQUIRE(ib.size() == h.index_size);  // same field widths: the layout does not move
  std::copy(ib.begin(), ib.end(), bytes.begin() + static_cast<std::ptrdiff_t>(h.index_offset));
  CllmHeader h2 = h;
  h2.index_crc32c = crc32c(ib.data(), ib.size());
  const auto hb = serialize_header(h2);
  std::copy(hb.begin(), hb.end(), bytes.begin());
  {
    std::ofstream f(model, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  const std::string expect = "'blk.0.attn_q.weight': tile 0: n_elems 268435456 is more than its " +
                             std::to_string(tile_size) + " bytes can hold (at least one byte per element)";
  CHECK_THROWS_WITH(CllmFile::open(model), Contains("'" + model + "': index: ") && Contains(expect));
  std::string err;
  CHECK(test::run_cli({"verify", model}, nullptr, &err) == 1);
  CHECK_THAT(err, Contains(expect));
}
