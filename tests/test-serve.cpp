// Specification of `codecllm serve`: its request checks and stop strings here, its slot
// scheduler in tests/test-serve-scheduler.cpp, the whole server over HTTP in
// tests/serve_test.py (run below against stories260K on the CPU, with the openai client where
// it is installed), and its chat page in headless Chromium in tests/chat_page_test.py.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include <filesystem>

#include "server/api_error.h"
#include "server/model_set.h"
#include "server/request.h"
#include "server/stop_matcher.h"
#include "test_util.h"

using namespace cllm;
using namespace cllm::server;
using Catch::Contains;

namespace {

// The status and message of the ApiError that parsing body throws.
std::pair<int, std::string> refusal(const std::string& body, bool chat = false) {
  try {
    parse_completion_request(body, chat);
  } catch (const ApiError& e) {
    return {e.status(), e.what()};
  }
  FAIL("accepted: " << body);
  return {};
}

// The text a StopMatcher lets out for these pieces, and whether it stopped.
std::pair<std::string, bool> after_stops(const std::vector<std::string>& stops, const std::vector<std::string>& pieces) {
  StopMatcher m(stops);
  std::string out;
  for (const auto& p : pieces) out += m.push(p);
  out += m.finish();
  return {out, m.stopped()};
}

}  // namespace

TEST_CASE("serve: a completion request's fields, with run's sampling defaults where absent", "[serve]") {
  const CompletionRequest r = parse_completion_request(
      R"({"model": "m", "prompt": "Hi", "max_tokens": 5, "temperature": 0, "top_k": 3, "top_p": 0.5,
          "min_p": 0.1, "seed": 7, "stop": ["a", "b"], "stream": true, "stream_options": {"include_usage": true}, "ignore_eos": true})",
      false);
  CHECK(r.model == "m");
  CHECK(r.prompt == "Hi");
  CHECK(r.max_tokens == 5);
  CHECK(r.sampling.temp == 0.0f);
  CHECK(r.sampling.top_k == 3);
  CHECK(r.sampling.top_p == 0.5f);
  CHECK(r.sampling.min_p == 0.1f);
  CHECK(r.sampling.seed == 7);
  CHECK(r.stop == std::vector<std::string>{"a", "b"});
  CHECK(r.stream);
  CHECK(r.include_usage);
  CHECK(r.ignore_eos);

  const CompletionRequest d = parse_completion_request(R"({"model": "m", "prompt": ["Hi"], "stop": "x"})", false);
  const SamplerParams defaults;
  CHECK(d.prompt == "Hi");
  CHECK(d.max_tokens == -1);
  CHECK(d.sampling.temp == defaults.temp);
  CHECK(d.sampling.top_k == defaults.top_k);
  CHECK(d.sampling.seed == -1);
  CHECK(d.stop == std::vector<std::string>{"x"});
  CHECK_FALSE(d.stream);
  CHECK_FALSE(d.ignore_eos);
}

TEST_CASE("serve: chat messages, as strings or text parts", "[serve]") {
  const CompletionRequest r = parse_completion_request(
      R"({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}],
          "max_completion_tokens": 9})",
      true);
  REQUIRE(r.messages.size() == 2);
  CHECK(r.messages[0].role == "system");
  CHECK(r.messages[0].content == "Be brief.");
  CHECK(r.messages[1].content == "Hello there");
  CHECK(r.max_tokens == 9);
}

TEST_CASE("serve: a request without a model is for the server's only one (as llama-server takes it)", "[serve]") {
  // parse leaves the id empty; handle_completion takes ModelSet::only(), or answers 400 where
  // the server has several (tests/serve_test.py, check_bad_requests and check_keep_alive)
  CHECK(parse_completion_request(R"({"prompt": "x"})", false).model.empty());
  CHECK(parse_completion_request(R"({"messages": [{"role": "user", "content": "Hi"}]})", true).model.empty());
  CHECK(parse_completion_request(R"({"model": "m", "prompt": "x"})", false).model == "m");
  CHECK(ModelSet().only() == nullptr);
}

TEST_CASE("serve: a bad request is a 400 naming the field, what it expects and what it found", "[serve]") {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"{", {"not valid JSON"}},
      {"3", {"JSON object", "an integer"}},
      {R"({"model": 1, "prompt": "x"})", {"'model'", "a string", "an integer"}},
      {R"({"model": "m"})", {"'prompt'"}},
      {R"({"model": "m", "prompt": ["a", "b"]})", {"'prompt'", "an array of 2"}},
      {R"({"model": "m", "prompt": "x", "max_tokens": 0})", {"'max_tokens'", "[1, ", "found 0"}},
      {R"({"model": "m", "prompt": "x", "max_tokens": 2.5})", {"'max_tokens'", "2.5"}},
      {R"({"model": "m", "prompt": "x", "temperature": -1})", {"'temperature'", "[0, 2]", "-1"}},
      {R"({"model": "m", "prompt": "x", "top_p": 0})", {"'top_p'", "(0, 1]"}},
      {R"({"model": "m", "prompt": "x", "min_p": 2})", {"'min_p'", "[0, 1]"}},
      {R"({"model": "m", "prompt": "x", "top_k": -2})", {"'top_k'"}},
      {R"({"model": "m", "prompt": "x", "seed": "s"})", {"'seed'", "a string"}},
      {R"({"model": "m", "prompt": "x", "ignore_eos": 1})", {"'ignore_eos'", "a boolean", "an integer"}},
      {R"({"model": "m", "prompt": "x", "stop": ["1", "2", "3", "4", "5"]})", {"'stop'", "at most 4", "5"}},
      {R"({"model": "m", "prompt": "x", "stop": [1]})", {"'stop[0]'", "a string"}},
      {R"({"model": "m", "prompt": "x", "stream": "yes"})", {"'stream'", "a boolean"}},
  };
  for (const auto& [body, words] : cases) {
    INFO(body);
    const auto [status, message] = refusal(body);
    CHECK(status == 400);
    for (const auto& w : words) CHECK_THAT(message, Contains(w));
  }
  CHECK_THAT(refusal(R"({"model": "m", "messages": []})", true).second, Contains("'messages'"));
  CHECK_THAT(refusal(R"({"model": "m", "messages": [{"role": "user"}]})", true).second,
             Contains("'messages[0].content'"));
  CHECK_THAT(refusal(R"({"model": "m", "messages": [{"role": "tool", "content": "x"}]})", true).second,
             Contains("\"tool\""));
}

TEST_CASE("serve: error JSON has OpenAI's shape", "[serve]") {
  const auto j = error_json(413, "too long", "prompt");
  CHECK(j["error"]["message"] == "too long");
  CHECK(j["error"]["type"] == "invalid_request_error");
  CHECK(j["error"]["code"] == 413);
  CHECK(j["error"]["param"] == "prompt");
  CHECK(error_json(401, "x")["error"]["type"] == "authentication_error");
  CHECK(error_json(503, "x")["error"]["param"].is_null());
}

TEST_CASE("serve: stop strings cut the text, and no part of one is ever let out", "[serve]") {
  CHECK(after_stops({"END"}, {"Hello ", "wor", "ld"}) == std::make_pair(std::string("Hello world"), false));
  CHECK(after_stops({"END"}, {"Hello E", "N", "D more"}) == std::make_pair(std::string("Hello "), true));
  CHECK(after_stops({"END"}, {"Hello EN", "d"}) == std::make_pair(std::string("Hello ENd"), false));
  // The earliest of several, across pieces.
  CHECK(after_stops({"cat", "at the"}, {"look at", " the cat"}) == std::make_pair(std::string("look "), true));
  // What is held back while it may begin a stop string.
  StopMatcher m({"</s>"});
  CHECK(m.push("a <") == "a ");
  CHECK(m.push("/") == "");
  CHECK(m.push("x") == "</x");
  CHECK(m.push("</s") == "");
  CHECK(m.push(">tail") == "");
  CHECK(m.stopped());
  CHECK(m.finish() == "");
}

namespace {

// The exit status of tests/<script> run by python (python3 when ""), given the build's binary
// and stories260K compressed into dir; extra goes to the end of its command line.
int run_python_spec(const std::string& script, const std::string& python, const test::TempDir& dir,
                    const std::string& extra = "") {
  const std::string model = test::compress_stories(dir);
  const char* binary = std::getenv("CLLM_BINARY");
  const std::string cmd = "'" + (python.empty() ? std::string("python3") : python) + "' '" +
                          test::source_path("tests/" + script) + "' --binary '" + (binary ? binary : CLLM_BINARY) +
                          "' --model '" + model + "'" + extra;
  INFO(cmd);
  const int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

// A test whose tool is missing: FAILs under CI (which installs it), else prints
// "SKIPPED [tag] <test>: <why>" and exits with status 4, which ctest reports as skipped.
void skip_unless_ci(const char* tag, const std::string& why) {
  if (std::getenv("CI")) FAIL(why);
  std::printf("SKIPPED [%s] %s: %s\n", tag, Catch::getResultCapture().getCurrentTestName().c_str(), why.c_str());
  std::fflush(stdout);
  std::_Exit(4);
}

}  // namespace

TEST_CASE("serve: the server over HTTP: completions, chat, streaming, errors, auth, queue, metrics, stop",
          "[serve][http]") {
  const std::string py = test::python_with("openai");
  {
    test::TempDir dir;  // removed before a skip, which exits without unwinding
    REQUIRE(run_python_spec("serve_test.py", py, dir, py.empty() ? " --no-openai" : "") == 0);
  }
  if (py.empty())
    skip_unless_ci("http", "the Python package 'openai' is missing (scripts/setup.sh installs it into .deps/venv; or "
                           "set CLLM_PYTHON to a python3 that has it): the checks with the openai client did not run");
}

TEST_CASE("serve: the chat page at / lists the models, streams replies, stops, sends the API key (headless Chromium)",
          "[serve][http][chromium]") {
  int status = 0;
  {
    test::TempDir dir;  // removed before a skip, which exits without unwinding
    status = run_python_spec("chat_page_test.py", test::python_with("json"), dir);
  }
  if (status == 4)  // chat_page_test.py found no browser
    skip_unless_ci("chromium", "no Chromium (scripts/setup.sh installs Debian's 'chromium'; or set CLLM_CHROMIUM to "
                               "the browser): the chat page was not tested");
  REQUIRE(status == 0);
}

// Models that do not fit park idle ones (ModelSet::make_room): the least recently used first,
// never the asking model nor one with requests; a parked model's next request loads it again.
TEST_CASE("serve: make_room parks the idle model used least recently, and a request brings it back", "[serve]") {
  test::TempDir dir;
  const std::string first = test::compress_stories(dir);
  for (const char* name : {"second", "third"})
    std::filesystem::copy_file(first, dir.file(std::string(name) + ".cllm"));
  Metrics metrics;
  ModelSet models;
  ModelOptions o;
  o.device = Device::cpu;
  o.engine.context = 64;
  o.engine.threads = 1;
  o.make_room = [&models](const ServedModel& asking) { return models.make_room(asking); };
  for (const std::string& path : {first, dir.file("second.cllm"), dir.file("third.cllm")})
    models.add(std::make_unique<ServedModel>(path, o, metrics));  // loaded in this order: used in this order
  ServedModel& a = *models.find("stories260K");
  ServedModel& b = *models.find("second");
  ServedModel& c = *models.find("third");
  CHECK(models.make_room(c));
  CHECK_FALSE(a.residency().loaded);
  CHECK(b.residency().loaded);
  CHECK_THAT(a.device_description(), Contains("parked: "));
  CHECK(models.make_room(c));
  CHECK_FALSE(b.residency().loaded);
  CHECK_FALSE(models.make_room(c));  // only the asking model is left loaded
  CHECK(c.residency().loaded);

  GenerationInput in;
  in.prompt = {1, 403, 407};
  in.max_tokens = 4;
  in.sampling.temp = 0;
  auto job = std::make_shared<Job>(in);
  REQUIRE(a.scheduler().submit(job));
  REQUIRE(job->wait_done(std::chrono::seconds(60)));
  CHECK(job->error_status() == 0);
  CHECK(job->output().completion_tokens == 4);
  const ServedModel::Residency r = a.residency();
  CHECK(r.loaded);
  CHECK(r.loads == 1);
  // Now `third` is the least recently used: asked for by `second`, it is parked first.
  CHECK(models.make_room(b));
  CHECK_FALSE(c.residency().loaded);
  CHECK(a.residency().loaded);
  models.stop_schedulers();
}
