// Specification of the command line's validation, for every subcommand: an unknown flag, a
// value out of range or of the wrong type is a usage error (exit status 2, CLI11's message
// naming the option, nothing on stdout), refused before any file is read or written. Errors
// found later (a file that is not what it should be) exit 1 (docs/errors.md). `run`'s sampling
// flags are covered in test-run.cpp.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/engine_flags.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/thread_pool.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Contains;
using nlohmann::json;

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
  for (const Env e : {Env{"CLLM_ARG_THREADS", "-1", "--threads"}, Env{"CLLM_ARG_THREADS", "many", "--threads"},
                      Env{"CLLM_ARG_DEVICE", "tpu", "--device"}, Env{"CLLM_ARG_MODE", "fast", "--mode"},
                      Env{"CLLM_ARG_VRAM_BUDGET", "lots", "--vram-budget"},
                      Env{"CLLM_ARG_CTX_SIZE", "-3", "--ctx-size"}}) {
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

// The engine flags (cli/engine_flags.h): one declaration for run and bench, each with a
// CLLM_ARG_* variable and its default in the help; the rules between them in one place.
TEST_CASE("cli: run and bench show the engine flags with their defaults and variables", "[cli]") {
  for (const char* command : {"run", "bench"}) {
    INFO(command);
    std::string out;
    REQUIRE(test::run_cli({command, "--help"}, &out) == 0);
    CHECK_THAT(out, Contains("--device TEXT:{cpu,cuda,auto}=auto (Env:CLLM_ARG_DEVICE)"));
    CHECK_THAT(out, Contains("=auto") && Contains("(Env:CLLM_ARG_MODE)"));
    CHECK_THAT(out, Contains("=none: by --mode") && Contains("(Env:CLLM_ARG_VRAM_BUDGET)"));
    CHECK_THAT(out, Contains("-t,--threads") && Contains(cat("=0 (all: ", hardware_threads(), ") (Env:CLLM_ARG_THREADS)")));
    CHECK_THAT(out, Contains("-c,--ctx-size") && Contains("(Env:CLLM_ARG_CTX_SIZE)"));
    CHECK_THAT(out, Contains("--no-verify") && Contains("(Env:CLLM_ARG_NO_VERIFY)"));
  }
  std::string out;
  REQUIRE(test::run_cli({"run", "--help"}, &out) == 0);
  CHECK_THAT(out, Contains("=min(model, 4096) (Env:CLLM_ARG_CTX_SIZE)"));
  REQUIRE(test::run_cli({"bench", "--help"}, &out) == 0);
  CHECK_THAT(out, Contains("=0 (d + max(p, n)) (Env:CLLM_ARG_CTX_SIZE)") && Contains("-d,--n-depth") &&
                      Contains("-p,--n-prompt") && Contains("=512"));
}

TEST_CASE("cli: each rule between device, mode and budget exits 1 naming the flag to change", "[cli]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  check_refused({{{"run", model, "--device", "cpu", "--mode", "full"}, "--mode full is a GPU memory mode: use --device cuda"},
                 {{"run", model, "--device", "cpu", "--vram-budget", "2G"}, "--vram-budget plans GPU memory: use --device cuda"},
                 {{"bench", model, "--device", "cpu", "--mode", "auto,lowmem"}, "--mode lowmem is a GPU memory mode"},
                 {{"bench", model, "--device", "cpu", "--vram-budget", "1G,2G"}, "--vram-budget plans GPU memory"},
                 {{"run", model, "--mode", "full,lowmem"}, "--mode takes one mode here"},
                 {{"run", model, "--vram-budget", "1G,2G"}, "--vram-budget takes one size here"},
                 {{"bench", model, "--device", "cpu", "-d", "8", "-p", "16", "-n", "4", "-c", "20"},
                  "the tests need 24 positions (depth -d plus the longest of -p and -n), more than -c 20: use -c 24"},
                 {{"bench", model, "--device", "cpu", "-d", "600"}, "exceed the model's context of 512: use smaller -d"}},
                1);
  if (test::run_cli({"run", model, "--device", "cuda", "-n", "1"}) == 0) {  // a GPU: the budget-and-mode rule
    check_refused({{{"run", model, "--vram-budget", "2G", "--mode", "full"}, "--vram-budget plans where each layer lives: leave --mode out"},
                   {{"bench", model, "--vram-budget", "2G", "--mode", "full"}, "leave --mode out"}},
                  1);
  }
  // Values that are no mode or no size are usage errors, from a flag or its variable.
  check_refused({{{"run", model, "--vram-budget", "2X"}, "--vram-budget: '2X': unknown size unit 'X'"},
                 {{"bench", model, "--vram-budget", "2G,lots"}, "'lots' is not a size"},
                 {{"bench", model, "--mode", "full,fast"}, "--mode: 'fast' is not a mode"}},
                2);
}

TEST_CASE("cli: the runtime says what would help, the CLI says it as the flag to change", "[cli]") {
  using cllm::cli::remedy_in_flags;
  CHECK(remedy_in_flags({Remedy::mode, "lowmem"}) == "use --mode lowmem");
  CHECK(remedy_in_flags({Remedy::context_at_most, "512"}) == "use -c 512 or less");
  CHECK(remedy_in_flags({Remedy::smaller_context, "33280"}) == "use a -c smaller than 33280");
  CHECK(remedy_in_flags({Remedy::cpu_device, ""}) == "use --device cpu");
  CHECK(remedy_in_flags({}).empty());
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  check_refused({{{"run", model, "--device", "cpu", "-c", "100000", "-n", "1"},
                  "context size 100000 is larger than the model's context length 512: use -c 512 or less"}},
                1);
}

TEST_CASE("cli: the variables set the engine flags, the flags win over them", "[cli]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  struct Env {
    const char *name, *value;
    std::vector<std::string> args;
    int status;
    std::string err;
  };
  for (const Env& e : {Env{"CLLM_ARG_DEVICE", "cpu", {"run", model, "-n", "1"}, 0, "device: cpu"},
                       Env{"CLLM_ARG_THREADS", "1", {"run", model, "-n", "1", "--device", "cpu"}, 0, "1 threads"},
                       Env{"CLLM_ARG_CTX_SIZE", "20", {"run", model, "-n", "1", "--device", "cpu"}, 0, "context 20 of 512"},
                       Env{"CLLM_ARG_CTX_SIZE", "20", {"run", model, "-n", "1", "--device", "cpu", "-c", "30"}, 0, "context 30 of 512"},
                       Env{"CLLM_ARG_MODE", "full", {"run", model, "-n", "1", "--device", "cpu"}, 1, "--mode full is a GPU memory mode"},
                       Env{"CLLM_ARG_MODE", "auto,lowmem", {"bench", model, "--device", "cpu"}, 1, "--mode lowmem is a GPU memory mode"},
                       Env{"CLLM_ARG_VRAM_BUDGET", "2G", {"bench", model, "--device", "cpu"}, 1, "--vram-budget plans GPU memory"},
                       Env{"CLLM_ARG_MODEL", "", {"run", "-n", "1", "--device", "cpu"}, 0, "model: stories260K.cllm"}}) {
    const std::string value = std::string(e.name) == "CLLM_ARG_MODEL" ? model : e.value;
    INFO(e.name << "=" << value);
    ::setenv(e.name, value.c_str(), 1);
    std::string err;
    const int status = test::run_cli(e.args, nullptr, &err);
    ::unsetenv(e.name);
    CHECK(status == e.status);
    CHECK_THAT(err, Contains(e.err));
  }
  // --no-verify from its variable (a flag: any true value).
  ::setenv("CLLM_ARG_NO_VERIFY", "1", 1);
  std::string err;
  const int status = test::run_cli({"bench", model, "--device", "cpu", "-p", "4", "-n", "0", "-r", "1"}, nullptr, &err);
  ::unsetenv("CLLM_ARG_NO_VERIFY");
  CHECK(status == 0);
}

TEST_CASE("cli: the engine flags reach the GPU engine's options as typed values", "[cli]") {
  cli::EngineFlags f;
  f.use = cli::EngineFlagsFor::one_engine;
  GpuOptions g = cli::gpu_options(f);
  CHECK_FALSE(g.mode.has_value());  // auto
  CHECK(g.vram_budget == 0);
  CHECK(g.context == 0);
  CHECK(g.threads == hardware_threads());
  f.modes = {"resident"};
  f.context = 300;
  f.threads = 3;
  g = cli::gpu_options(f);
  REQUIRE(g.mode.has_value());
  CHECK(*g.mode == Mode::resident);
  CHECK(g.context == 300);
  CHECK(g.threads == 3);
  f.modes = {"auto"};
  f.budgets = {"2.5G"};
  g = cli::gpu_options(f);
  CHECK_FALSE(g.mode.has_value());
  CHECK(g.vram_budget == 2684354560ull);
  f.budgets = {"auto"};
  CHECK(cli::gpu_options(f).vram_budget == UINT64_MAX);

  CHECK(cli::parse_mode_choice("full") == Mode::full);
  CHECK(cli::parse_mode_choice("lowmem") == Mode::lowmem);
  CHECK(cli::parse_mode_choice("fused") == Mode::fused);
  CHECK_FALSE(cli::parse_mode_choice("auto").has_value());
  CHECK_THROWS_WITH(cli::parse_mode_choice("hybrid"), Contains("unknown mode 'hybrid'") && Contains("full, resident, lowmem, fused or auto"));
  CHECK(cli::split_list({"a,b", "c"}) == std::vector<std::string>{"a", "b", "c"});

  // The rules, one place: the CPU takes no mode and no budget; a budget takes no mode.
  cli::EngineFlags r;
  CHECK_NOTHROW(cli::check_engine_flags(r, Device::cpu));
  r.modes = {"full"};
  CHECK_THROWS_WITH(cli::check_engine_flags(r, Device::cpu), Contains("--mode full") && Contains("--device cuda"));
  CHECK_NOTHROW(cli::check_engine_flags(r, Device::cuda));
  r.budgets = {"2G"};
  CHECK_THROWS_WITH(cli::check_engine_flags(r, Device::cuda), Contains("--vram-budget") && Contains("leave --mode out"));
  r.modes = {"auto"};
  CHECK_NOTHROW(cli::check_engine_flags(r, Device::cuda));
  CHECK_THROWS_WITH(cli::check_engine_flags(r, Device::cpu), Contains("--vram-budget plans GPU memory"));
}

// bench -d, as llama-bench: each test after d tokens fill the KV cache (untimed).
TEST_CASE("cli: bench -d runs each test at a depth, named and reported as llama-bench does", "[cli]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  std::string out, err;
  REQUIRE(test::run_cli({"bench", model, "--device", "cpu", "-d", "0,8", "-p", "16", "-n", "4", "-r", "2", "-o", "json"},
                        &out, &err) == 0);
  const json j = json::parse(out);
  REQUIRE(j["rows"].size() == 4);
  const char* names[] = {"pp16", "tg4", "pp16 @ d8", "tg4 @ d8"};
  for (size_t i = 0; i < 4; ++i) {
    const json& r = j["rows"][i];
    INFO(r.dump());
    CHECK(r["test"] == names[i]);
    CHECK(r["n_depth"] == (i < 2 ? 0 : 8));
    CHECK(r["n_prompt"] == (i % 2 == 0 ? 16 : 0));
    CHECK(r["n_gen"] == (i % 2 == 0 ? 0 : 4));
    CHECK(r["n_tokens"] == (i % 2 == 0 ? 16 : 4));
    REQUIRE(r["samples_ts"].size() == 2);
    REQUIRE(r["samples_ns"].size() == 2);
    CHECK(r["avg_ts"].get<double>() > 0);
    CHECK(r["avg_ts"] == r["mean_tps"]);
    CHECK(r["stddev_ts"] == r["std_tps"]);
    // samples_ts are tokens per second of each repetition; avg_ts their mean.
    const double t0 = r["samples_ts"][0], t1 = r["samples_ts"][1];
    CHECK(std::abs((t0 + t1) / 2 - r["avg_ts"].get<double>()) <= 1e-6 * (t0 + t1));
    CHECK(std::abs(t0 - r["n_tokens"].get<double>() / r["samples_s"][0].get<double>()) <= 1e-9 * t0);
    CHECK(r["avg_ns"].get<double>() > 0);
  }
  CHECK_THAT(err, Contains("filling the KV cache with 8 tokens"));

  // md and csv carry the depth too.
  REQUIRE(test::run_cli({"bench", model, "--device", "cpu", "-d", "8", "-p", "16", "-n", "0", "-r", "1"}, &out) == 0);
  CHECK_THAT(out, Contains("| pp16 @ d8 |"));
  REQUIRE(test::run_cli({"bench", model, "--device", "cpu", "-d", "8", "-p", "0", "-n", "4", "-r", "1", "-o", "csv"}, &out) == 0);
  CHECK_THAT(out, Contains(",n_prompt,n_gen,n_depth,avg_ts,stddev_ts,samples_ts,n_parallel\n"));
  CHECK_THAT(out, Contains("\"tg4 @ d8\",4,") && Contains(",0,4,8,"));
}

// bench -np, as llama-batched-bench's -npl: tg tests of several sequences decoding together,
// each with its own cache at the depth; pp tests at one sequence only.
TEST_CASE("cli: bench -np runs tg tests of several sequences together and counts all their tokens", "[cli]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  std::string out, err;
  REQUIRE(test::run_cli({"bench", model, "--device", "cpu", "-np", "1,3", "-d", "0,8", "-p", "16", "-n", "4", "-r", "2",
                         "-o", "json"},
                        &out, &err) == 0);
  const json j = json::parse(out);
  const char* names[] = {"pp16", "tg4", "pp16 @ d8", "tg4 @ d8", "tg4 x3", "tg4 x3 @ d8"};
  REQUIRE(j["rows"].size() == 6);
  for (size_t i = 0; i < 6; ++i) {
    const json& r = j["rows"][i];
    INFO(r.dump());
    CHECK(r["test"] == names[i]);
    const int parallel = i < 4 ? 1 : 3;
    CHECK(r["n_parallel"] == parallel);
    if (r["n_gen"] == 4) CHECK(r["n_tokens"] == 4 * parallel);
    // tokens per second count every sequence's tokens
    const double t0 = r["samples_ts"][0];
    CHECK(std::abs(t0 - r["n_tokens"].get<double>() / r["samples_s"][0].get<double>()) <= 1e-9 * t0);
  }
  CHECK_THAT(err, Contains("filling the KV cache with 8 tokens for each of 3 sequences"));
  REQUIRE(test::run_cli({"bench", model, "--device", "cpu", "-np", "2", "-p", "16", "-n", "4", "-r", "1", "-o", "csv"},
                        &out) == 0);
  CHECK_THAT(out, Contains(",samples_ts,n_parallel\n") && Contains("\"tg4 x2\",8,") && !Contains("pp16"));
  CHECK(test::run_cli({"bench", model, "--device", "cpu", "-np", "0", "-r", "1"}, &out, &err) == 2);  // a usage error
  CHECK_THAT(err, Contains("--parallel: Value 0 not in range 1 to 1024"));
}
