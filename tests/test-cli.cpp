// Specification of the command line's validation, for every subcommand: an unknown flag, a
// value out of range or of the wrong type is a usage error (exit status 2, CLI11's message
// naming the option, nothing on stdout), refused before any file is read or written. Errors
// found later (a file that is not what it should be) exit 1 (docs/errors.md). `run`'s sampling
// flags are covered in test-run.cpp.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>

#include "common/file_io.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Contains;

namespace {

struct Case {
  std::vector<std::string> args;
  std::string message;  // a part of stderr that names what is wrong
};

// Runs each case and checks: exit status `status`, the message on stderr, nothing on stdout.
void check_refused(const std::vector<Case>& cases, int status) {
  for (const auto& c : cases) {
    std::string cmdline;
    for (const auto& a : c.args) cmdline += " " + a;
    INFO("codecllm" << cmdline);
    std::string out, err;
    CHECK(test::run_cli(c.args, &out, &err) == status);
    CHECK_THAT(err, Contains(c.message));
    CHECK(out.empty());
  }
}

}  // namespace

TEST_CASE("cli: no command, an unknown command, an unknown global flag are usage errors", "[cli]") {
  check_refused({{{}, "A subcommand is required"},
                 {{"frobnicate"}, "unknown command 'frobnicate' (commands: compress, info"},
                 {{"--bogus", "info", "x.cllm"}, "--bogus"}},
                2);
  std::string out;
  CHECK(test::run_cli({"--version"}, &out) == 0);
  CHECK_THAT(out, Contains("codecllm 0.1.0"));
  CHECK(test::run_cli({"--help"}, &out) == 0);
  CHECK_THAT(out, Contains("compress") && Contains("run") && Contains("verify"));
}

TEST_CASE("cli: every subcommand refuses an unknown flag and a missing argument", "[cli]") {
  test::TempDir dir;
  const std::string model = dir.file("m.cllm");
  std::ofstream(model) << "not read: the command line is refused first";
  check_refused({{{"compress", "in.bin", "out.cllm", "--bogus"}, "--bogus"},
                 {{"compress", "in.bin"}, "output is required"},
                 {{"info", model, "--bogus"}, "--bogus"},
                 {{"info"}, "model is required"},
                 {{"verify", model, "--bogus"}, "--bogus"},
                 {{"verify"}, "model is required"},
                 {{"tokenize", model, "x", "--bogus"}, "--bogus"},
                 {{"run", model, "--bogus"}, "--bogus"},
                 {{"run", model, "-n"}, "-n"},  // a flag without its value
                 {{"bench", model, "--codec", "--bogus"}, "--bogus"},
                 {{"bench"}, "model is required"},
                 {{"synth", dir.file("s"), "--preset", "tiny-test", "--bogus"}, "--bogus"}},
                2);
  CHECK(read_text_file(model) == "not read: the command line is refused first");
}

TEST_CASE("cli: numeric flags out of range or not numbers are usage errors", "[cli]") {
  test::TempDir dir;
  const std::string model = dir.file("m.cllm");
  std::ofstream(model) << "never opened";
  check_refused({// compress
                 {{"compress", "in.bin", dir.file("o.cllm"), "-t", "-1"}, "--threads"},
                 {{"compress", "in.bin", dir.file("o.cllm"), "-t", "two"}, "--threads"},
                 {{"compress", "in.bin", dir.file("o.cllm"), "--tile-elems", "32767"}, "--tile-elems"},
                 {{"compress", "in.bin", dir.file("o.cllm"), "--tile-elems", "16777217"}, "--tile-elems"},
                 {{"compress", "in.bin", dir.file("o.cllm"), "--tile-elems", "-5"}, "--tile-elems"},
                 {{"compress", "in.bin", dir.file("o.cllm"), "--tokenizer", dir.file("none.model")}, "--tokenizer"},
                 // verify
                 {{"verify", model, "-t", "-1"}, "--threads"},
                 {{"verify", model, "--tokenizer", dir.file("none.model")}, "--tokenizer"},
                 // tokenize
                 {{"tokenize", "--tokenizer", dir.file("none.model"), "x"}, "--tokenizer"},
                 {{"tokenize", model, "-f", dir.file("none.txt")}, "--file"},
                 {{"tokenize", "--tokenizer", model, "-m", model, "x"}, "not both"},
                 {{"tokenize", model, "-p", "x", "y"}, "give the text once"},
                 // run: what test-run.cpp does not cover
                 {{"run", model, "-t", "5000"}, "--threads"},
                 {{"run", model, "-c", "4294967296"}, "--ctx-size"},
                 {{"run", model, "-n", "99999999999"}, "--n-predict"},
                 {{"run", model, "--temp", "nan"}, "--temp"},
                 {{"run", model, "--top-p", "nan"}, "--top-p"},
                 {{"run", model, "--min-p", "nan"}, "--min-p"},
                 {{"run", model, "--repeat-penalty", "nan"}, "--repeat-penalty"},
                 {{"run", model, "--repeat-penalty", "-1"}, "--repeat-penalty"},
                 {{"run", model, "-s", "4294967296"}, "--seed"},
                 {{"run", model, "-f", dir.file("none.txt")}, "--file"},
                 // bench
                 {{"bench", model, "--codec", "-r", "0"}, "--repetitions"},
                 {{"bench", model, "--codec", "-r", "1001"}, "--repetitions"},
                 {{"bench", model, "--codec", "-t", "-2"}, "--threads"},
                 {{"bench", model, "--codec", "-o", "xml"}, "--output"},
                 {{"bench", model, "--codec", "--device", "gpu"}, "--device"},
                 // synth
                 {{"synth", dir.file("s"), "--preset", "tiny-test", "--layers", "0"}, "--layers"},
                 {{"synth", dir.file("s"), "--preset", "tiny-test", "-t", "-1"}, "--threads"}},
                2);
  CHECK_FALSE(path_exists(dir.file("o.cllm")));
  CHECK_FALSE(path_exists(dir.file("s")));
}

TEST_CASE("cli: out-of-range values from the environment are refused like the flags they stand for", "[cli]") {
  test::TempDir dir;
  const std::string model = dir.file("m.cllm");
  std::ofstream(model) << "never opened";
  struct Env {
    const char *name, *value, *flag;  // CLI11's message names the flag, not the variable
  };
  for (const Env e : {Env{"CLLM_THREADS", "0", "--threads"}, Env{"CLLM_THREADS", "many", "--threads"},
                      Env{"CLLM_DEVICE", "tpu", "--device"}}) {
    INFO(e.name << "=" << e.value);
    ::setenv(e.name, e.value, 1);
    std::string out, err;
    const int status = test::run_cli({"run", model}, &out, &err);
    ::unsetenv(e.name);
    CHECK(status == 2);
    CHECK_THAT(err, Contains(e.flag) && Contains(e.value));
    CHECK(out.empty());
  }
}

TEST_CASE("cli: a temperature too small for logits / temp to be finite samples like greedy", "[cli]") {
  // logits / 1e-45 overflow to inf; the sampler must still pick the most likely token, not
  // turn inf - inf into NaN probabilities (which picked the least likely one).
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  std::string greedy, tiny;
  REQUIRE(test::run_cli({"run", model, "-n", "40", "--temp", "0"}, &greedy) == 0);
  REQUIRE(test::run_cli({"run", model, "-n", "40", "--temp", "1e-45", "-s", "1"}, &tiny) == 0);
  CHECK(tiny == greedy);
}

TEST_CASE("cli: valid usage whose inputs are wrong exits 1 with a message naming them", "[cli]") {
  test::TempDir dir;
  const std::string junk = dir.file("junk.cllm");
  std::ofstream(junk) << "this is not a model";
  std::string err;
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"info", junk}, {"verify", junk}, {"run", junk, "-n", "1"},
                                             {"tokenize", junk, "x"}, {"bench", junk, "--codec", "--device", "cpu"}}) {
    INFO(args[0]);
    CHECK(test::run_cli(args, nullptr, &err) == 1);
    CHECK_THAT(err, Contains("error: '" + junk + "'") && Contains("too small for the 64-byte header"));
  }
  CHECK(test::run_cli({"synth", dir.file("s"), "--preset", "llama9-1t"}, nullptr, &err) == 1);
  CHECK_THAT(err, Contains("llama9-1t") && Contains("tiny-test"));
  CHECK(test::run_cli({"compress", junk, dir.file("o.cllm")}, nullptr, &err) == 1);
  CHECK_THAT(err, Contains("junk.cllm"));
  CHECK_FALSE(path_exists(dir.file("o.cllm")));
}
