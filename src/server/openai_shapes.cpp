#include "server/openai_shapes.h"

#include <cstdio>
#include <random>

namespace cllm::server {

using nlohmann::json;

ResponseHeader make_response_header(const std::string& model, bool chat) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(rng()));
  return {std::string(chat ? "chatcmpl-" : "cmpl-") + hex, model, std::time(nullptr), chat};
}

namespace {

json envelope(const ResponseHeader& h, bool chunk) {
  const char* object = h.chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", h.id}, {"object", object}, {"created", static_cast<long long>(h.created)}, {"model", h.model}};
}

}  // namespace

json usage_json(const GenerationOutput& out) {
  return {{"prompt_tokens", out.prompt_tokens},
          {"completion_tokens", out.completion_tokens},
          {"total_tokens", out.prompt_tokens + out.completion_tokens}};
}

json completion_json(const ResponseHeader& h, const GenerationOutput& out) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason_name(out.finish)}};
  if (h.chat) choice["message"] = {{"role", "assistant"}, {"content", out.text}};
  else choice["text"] = out.text;
  json j = envelope(h, false);
  j["choices"] = json::array({choice});
  j["usage"] = usage_json(out);
  return j;
}

json text_chunk_json(const ResponseHeader& h, const std::string& text, bool first) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (h.chat) {
    choice["delta"] = {{"content", text}};
    if (first) choice["delta"]["role"] = "assistant";
  } else {
    choice["text"] = text;
  }
  json j = envelope(h, true);
  j["choices"] = json::array({choice});
  return j;
}

json final_chunk_json(const ResponseHeader& h, FinishReason finish) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason_name(finish)}};
  if (h.chat) choice["delta"] = json::object();
  else choice["text"] = "";
  json j = envelope(h, true);
  j["choices"] = json::array({choice});
  return j;
}

json usage_chunk_json(const ResponseHeader& h, const GenerationOutput& out) {
  json j = envelope(h, true);
  j["choices"] = json::array();
  j["usage"] = usage_json(out);
  return j;
}

std::string sse_event(const json& j) {
  // Invalid UTF-8 (a token cut inside a character) is replaced, never a thrown exception.
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

}  // namespace cllm::server
