// Specification of `codecllm run` and `codecllm tokenize` as a user sees them: exact stdout,
// messages and exit statuses (the binary is run as a child process).
#include <sentencepiece_processor.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <regex>

#include "convert/compress.h"
#include "convert/source_model.h"
#include "cuda/device_info.h"
#include "format/cllm_reader.h"
#include "model/forward_cpu.h"
#include "model/generate.h"
#include "model/llama_weights.h"
#include "tests/test_util.h"
#include "text/tokenizer.h"

using namespace cllm;
using Catch::Contains;

namespace {

// The hash on run's final "# ..." statistics line.
std::string logits_hash_of(const std::string& err) {
  std::smatch m;
  if (std::regex_search(err, m, std::regex("# \\d+ tokens: .* logits hash ([0-9a-f]{16})"))) return m[1];
  return "";
}

}  // namespace

TEST_CASE("run: stories260K greedy prints llama2.c's reference, then a newline", "[run]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  std::string out, err;
  REQUIRE(test::run_cli({"run", model, "-n", "200", "--temp", "0", "-t", "1", "--device", "cpu"}, &out, &err) == 0);
  CHECK(out == std::string(test::kStoriesReference) + "\n");
  CHECK_THAT(err, Contains("prompt eval time") && Contains("eval time") && Contains("load time"));
  CHECK_THAT(err, Contains("# 200 tokens: "));

  // The hash on the statistics line is the CPU library's: same engine, same bits.
  const CllmFile f = CllmFile::open(model);
  const LlamaWeights w = load_llama_weights(f, nullptr);
  const Tokenizer tok = Tokenizer::from_cllm(f);
  CpuForward engine(w, {0, 1, 64});
  GenerateOptions g;
  g.n_predict = 200;
  g.sampling.temp = 0;
  const auto r = generate([&](const int* t, int n, int pos) { return engine.forward(t, n, pos); }, engine.context(),
                          w.config.vocab_size, tok, "", g);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(r.logits_hash));
  CHECK(logits_hash_of(err) == hex);

  // Two threads, -m, and the prompt echoed before the continuation.
  std::string out2, err2;
  REQUIRE(test::run_cli({"run", "-m", model, "-n", "200", "--temp", "0", "-t", "2", "--device", "cpu"}, &out2, &err2) == 0);
  CHECK(out2 == out);
  CHECK(logits_hash_of(err2) == hex);
}

TEST_CASE("run: a prompt is echoed and continued, -f reads it from a file", "[run]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  std::string out, err;
  REQUIRE(test::run_cli({"run", model, "-p", "Once upon a time", "-n", "8", "--temp", "0"}, &out, &err) == 0);
  CHECK(out.rfind("Once upon a time", 0) == 0);  // the prompt, without the leading space after BOS
  CHECK(out == std::string(test::kStoriesReference).substr(0, out.size() - 1) + "\n");  // greedy continues the reference story
  CHECK_THAT(err, Contains("# 8 tokens"));

  std::ofstream(dir.file("prompt.txt")) << "Once upon a time\n";  // the final newline is dropped
  std::string out_f;
  REQUIRE(test::run_cli({"run", model, "-f", dir.file("prompt.txt"), "-n", "8", "--temp", "0"}, &out_f) == 0);
  CHECK(out_f == out);
}

TEST_CASE("run: a fixed seed samples the same text twice", "[run]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  std::string a, b, err_a;
  REQUIRE(test::run_cli({"run", model, "-n", "60", "-s", "42", "--temp", "1.0"}, &a, &err_a) == 0);
  REQUIRE(test::run_cli({"run", model, "-n", "60", "-s", "42", "--temp", "1.0"}, &b) == 0);
  CHECK(a == b);
  CHECK_THAT(err_a, Contains("seed: 42"));
  std::string random_seed_err;
  REQUIRE(test::run_cli({"run", model, "-n", "4"}, nullptr, &random_seed_err) == 0);
  CHECK(std::regex_search(random_seed_err, std::regex("seed: \\d+")));
}

TEST_CASE("run: errors are messages with exit status 1, not crashes", "[run]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  std::string out, err;

  // A prompt longer than the context.
  CHECK(test::run_cli({"run", model, "-c", "8", "-p", "Once upon a time there was a little dog who liked to run"},
                      &out, &err) == 1);
  CHECK_THAT(err, Contains("error: the prompt is") && Contains("longer than the context of 8 tokens"));
  CHECK(out.empty());

  // A context larger than the model's (512).
  CHECK(test::run_cli({"run", model, "-c", "1024"}, &out, &err) == 1);
  CHECK_THAT(err, Contains("larger than the model's context length 512"));

  // A file without a tokenizer.
  const std::string notok = test::compress_stories(dir, false);
  CHECK(test::run_cli({"run", notok, "-n", "4"}, &out, &err) == 1);
  CHECK_THAT(err, Contains("has no tokenizer"));

  // Not a .cllm file.
  CHECK(test::run_cli({"run", test::shared_model("stories260K.bin")}, &out, &err) == 1);
  CHECK_THAT(err, Contains("error: "));

  // --device cuda without a GPU (with one, test-gpu-engine runs it).
  if (cuda::device_count() == 0) {
    CHECK(test::run_cli({"run", model, "--device", "cuda", "-n", "4"}, &out, &err) == 1);
    CHECK_THAT(err, Contains("no CUDA device") && Contains("use --device cpu"));
    // fused is a GPU mode like the others: the same error, not a silent CPU run
    CHECK(test::run_cli({"run", model, "--device", "cuda", "--mode", "fused", "-n", "4"}, &out, &err) == 1);
    CHECK_THAT(err, Contains("no CUDA device") && Contains("use --device cpu"));
  }
  CHECK(test::run_cli({"run", model, "--device", "cpu", "--mode", "fused", "-n", "4"}, &out, &err) == 1);
  CHECK_THAT(err, Contains("--mode fused is a GPU memory mode"));
  // --mode is the GPU's: on the CPU it is an error, not silently ignored.
  CHECK(test::run_cli({"run", model, "--device", "cpu", "--mode", "lowmem", "-n", "4"}, &out, &err) == 1);
  CHECK_THAT(err, Contains("--mode lowmem is a GPU memory mode"));
}

TEST_CASE("run: out-of-range flag values are refused with a message", "[run]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  const std::vector<std::vector<std::string>> bad = {
      {"-n", "-2"},          {"--temp", "-0.5"},          {"--top-p", "0"},   {"--top-p", "1.5"},
      {"--min-p", "-0.1"},   {"--min-p", "1.01"},         {"-t", "-1"},       {"-c", "-1"},
      {"--top-k", "-3"},     {"--repeat-penalty", "0"},  {"-s", "-7"},       {"--device", "gpu"},
      {"--repeat-last-n", "-2"}, {"-n", "many"}, {"-t", "4097"}};  // -t 0 and -c 0: the defaults (test-cli)
  for (const auto& flags : bad) {
    std::vector<std::string> args = {"run", model};
    args.insert(args.end(), flags.begin(), flags.end());
    std::string out, err;
    INFO(flags[0] << " " << flags[1]);
    CHECK(test::run_cli(args, &out, &err) == 2);  // usage error (docs/cli.md)
    CHECK_THAT(err, Contains(flags[0]));
    CHECK(out.empty());
  }
  std::string err;
  CHECK(test::run_cli({"run"}, nullptr, &err) == 2);
  CHECK_THAT(err, Contains("MODEL"));
  CHECK(test::run_cli({"run", model, "-p", "x", "-f", model}, nullptr, &err) == 2);
}

TEST_CASE("tokenize --ids equals SentencePiece's own ids (Llama-2 tokenizer)", "[run]") {
  const std::string spm_path = test::shared_model("tokenizer.model");
  sentencepiece::SentencePieceProcessor sp;
  REQUIRE(sp.Load(spm_path).ok());
  const std::vector<std::string> texts = {
      "Hello world",
      " leading space",
      "   three leading spaces",
      "trailing spaces   ",
      "runs    of     spaces",
      "line one\nline two\n\nline four\n",
      "tabs\tand\ttabs",
      "digits 0123456789 and 3.14159 and 1,000,000",
      "naïve café, Ünïcödé – “quotes” — 日本語 한국어 Привет",
      "emoji 🦙🚀 and a lone é",
      "<s> is not special in text </s>",
  };
  for (const auto& text : texts) {
    std::string want = "[1";
    for (int id : sp.EncodeAsIds(text)) want += ", " + std::to_string(id);
    want += "]\n";
    std::string out, err;
    INFO("text: '" << text << "'\n" << err);
    REQUIRE(test::run_cli({"tokenize", "--tokenizer", spm_path, "--ids", text}, &out, &err) == 0);
    CHECK(out == want);
  }
  // Known ids, independent of the library above.
  std::string out;
  REQUIRE(test::run_cli({"tokenize", "--tokenizer", spm_path, "--ids", "Hello world"}, &out) == 0);
  CHECK(out == "[1, 15043, 3186]\n");
  REQUIRE(test::run_cli({"tokenize", "--tokenizer", spm_path, "--ids", "--no-bos", "Hello world"}, &out) == 0);
  CHECK(out == "[15043, 3186]\n");
  REQUIRE(test::run_cli({"tokenize", "--tokenizer", spm_path, "--ids", ""}, &out) == 0);
  CHECK(out == "[1]\n");
}

TEST_CASE("tokenize: a .cllm's own tokenizer, llama-tokenize's listing, -f", "[run]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);
  std::string out, err;
  REQUIRE(test::run_cli({"tokenize", model, "Once upon"}, &out, &err) == 0);
  CHECK(out == "     1 -> '<s>'\n   403 -> ' Once'\n   407 -> ' upon'\n");
  REQUIRE(test::run_cli({"tokenize", "-m", model, "--ids", "-p", "Once upon"}, &out) == 0);
  CHECK(out == "[1, 403, 407]\n");
  std::ofstream(dir.file("text.txt")) << "Once upon";
  REQUIRE(test::run_cli({"tokenize", model, "--ids", "-f", dir.file("text.txt")}, &out) == 0);
  CHECK(out == "[1, 403, 407]\n");

  CHECK(test::run_cli({"tokenize", test::compress_stories(dir, false), "x"}, &out, &err) == 1);
  CHECK_THAT(err, Contains("has no tokenizer"));
  CHECK(test::run_cli({"tokenize", model}, &out, &err) == 2);  // no text
  CHECK_THAT(err, Contains("TEXT"));
  CHECK(test::run_cli({"tokenize", model, "--tokenizer", test::shared_model("tok512.model"), "x"}, &out, &err) != 0);
}
