#include "server/request.h"

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "server/api_error.h"

namespace cllm::server {

namespace {

using nlohmann::json;

// The JSON type of a value, as a person would say it ("a string", "an array").
std::string json_kind(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}

[[noreturn]] void refuse(const std::string& field, const std::string& expected, const std::string& found) {
  throw ApiError(400, cat("field '", field, "': expected ", expected, ", found ", found), field);
}

// A number in [lo, hi] (an integer is a number too).
double number_in(const json& v, const std::string& field, double lo, double hi) {
  const std::string expected = cat("a number in [", lo, ", ", hi, "]");
  if (!v.is_number()) refuse(field, expected, json_kind(v));
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi)) refuse(field, expected, v.dump());
  return x;
}

int64_t integer_in(const json& v, const std::string& field, int64_t lo, int64_t hi) {
  const std::string expected = cat("an integer in [", lo, ", ", hi, "]");
  if (!v.is_number_integer()) refuse(field, expected, v.is_number() ? v.dump() : json_kind(v));
  const int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                        ? INT64_MAX
                        : v.get<int64_t>();
  if (x < lo || x > hi) refuse(field, expected, v.dump());
  return x;
}

const std::string& string_of(const json& v, const std::string& field) {
  if (!v.is_string()) refuse(field, "a string", json_kind(v));
  return v.get_ref<const std::string&>();
}

// "stop": a string or an array of at most 4 non-empty strings.
std::vector<std::string> parse_stop(const json& v) {
  if (v.is_null()) return {};
  if (v.is_string()) return v.get<std::string>().empty() ? std::vector<std::string>{} : std::vector<std::string>{v};
  if (!v.is_array()) refuse("stop", "a string or an array of strings", json_kind(v));
  if (v.size() > 4) refuse("stop", "at most 4 strings", cat(v.size()));
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string& s = string_of(v[i], cat("stop[", i, "]"));
    if (!s.empty()) out.push_back(s);
  }
  return out;
}

// "prompt": a string, or an array holding one string (OpenAI's batch of prompts, of one).
std::string parse_prompt(const json& v) {
  if (v.is_string()) return v;
  if (v.is_array() && v.size() == 1 && v[0].is_string()) return v[0];
  if (v.is_array() && v.size() != 1) refuse("prompt", "a string or an array of one string", cat("an array of ", v.size()));
  refuse("prompt", "a string", json_kind(v));
}

// A message's content: a string, or an array of {"type": "text", "text": ...} parts, joined.
std::string parse_content(const json& v, const std::string& field) {
  if (v.is_string()) return v;
  if (!v.is_array()) refuse(field, "a string or an array of text parts", json_kind(v));
  std::string text;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string part = cat(field, "[", i, "]");
    if (!v[i].is_object() || v[i].value("type", "") != "text" || !v[i].contains("text"))
      refuse(part, "{\"type\": \"text\", \"text\": ...}", v[i].dump());
    text += string_of(v[i]["text"], part + ".text");
  }
  return text;
}

std::vector<ChatMessage> parse_messages(const json& v) {
  if (!v.is_array() || v.empty()) refuse("messages", "a non-empty array", v.is_array() ? "[]" : json_kind(v));
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string field = cat("messages[", i, "]");
    if (!v[i].is_object()) refuse(field, "an object", json_kind(v[i]));
    if (!v[i].contains("role")) refuse(field + ".role", "\"system\", \"user\" or \"assistant\"", "nothing");
    const std::string& role = string_of(v[i]["role"], field + ".role");
    if (role != "system" && role != "user" && role != "assistant")
      refuse(field + ".role", "\"system\", \"user\" or \"assistant\"", "\"" + role + "\"");
    if (!v[i].contains("content")) refuse(field + ".content", "a string", "nothing");
    out.push_back({role, parse_content(v[i]["content"], field + ".content")});
  }
  return out;
}

// The sampling fields, over `run`'s defaults (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05).
void parse_sampling(const json& j, SamplerParams& s) {
  auto given = [&](const char* name) { return j.contains(name) && !j[name].is_null(); };
  if (given("temperature")) s.temp = static_cast<float>(number_in(j["temperature"], "temperature", 0, 2));
  if (given("top_p")) {
    const double p = number_in(j["top_p"], "top_p", 0, 1);
    if (p == 0) refuse("top_p", "a number in (0, 1]", "0");
    s.top_p = static_cast<float>(p);
  }
  if (given("top_k")) s.top_k = static_cast<int>(integer_in(j["top_k"], "top_k", 0, INT32_MAX));
  if (given("min_p")) s.min_p = static_cast<float>(number_in(j["min_p"], "min_p", 0, 1));
  if (given("seed")) s.seed = integer_in(j["seed"], "seed", 0, UINT32_MAX);
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body, bool chat) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw ApiError(400, cat("the request body is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) throw ApiError(400, cat("the request body must be a JSON object, found ", json_kind(j)));
  CompletionRequest r;
  r.chat = chat;
  // Absent: the server's only model (handle_completion), as llama-server answers without one.
  if (j.contains("model")) r.model = string_of(j["model"], "model");
  if (chat) {
    if (!j.contains("messages")) refuse("messages", "an array of messages", "nothing");
    r.messages = parse_messages(j["messages"]);
  } else {
    if (!j.contains("prompt")) refuse("prompt", "a string", "nothing");
    r.prompt = parse_prompt(j["prompt"]);
  }
  // max_completion_tokens is the chat API's newer name for max_tokens.
  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (j.contains(name) && !j[name].is_null()) r.max_tokens = static_cast<int>(integer_in(j[name], name, 1, INT32_MAX));
  parse_sampling(j, r.sampling);
  if (j.contains("stop")) r.stop = parse_stop(j["stop"]);
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) refuse("stream", "a boolean", json_kind(j["stream"]));
    r.stream = j["stream"];
  }
  if (j.contains("ignore_eos") && !j["ignore_eos"].is_null()) {
    if (!j["ignore_eos"].is_boolean()) refuse("ignore_eos", "a boolean", json_kind(j["ignore_eos"]));
    r.ignore_eos = j["ignore_eos"];
  }
  if (j.contains("stream_options") && j["stream_options"].is_object())
    r.include_usage = j["stream_options"].value("include_usage", false);
  return r;
}

}  // namespace cllm::server
