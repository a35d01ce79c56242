// The OpenAI API's response shapes, as JSON:
//   completion  {"id": "cmpl-..", "object": "text_completion", "created", "model",
//                "choices": [{"index": 0, "text", "logprobs": null, "finish_reason"}], "usage"}
//   chat        {"id": "chatcmpl-..", "object": "chat.completion", ...,
//                "choices": [{"index": 0, "message": {"role": "assistant", "content"}, "finish_reason"}], "usage"}
//   chunks      the same with "object": "text_completion" / "chat.completion.chunk", a choice's
//               "text" / "delta" holding only the new text, finish_reason null until the last
//   usage       {"prompt_tokens", "completion_tokens", "total_tokens"}
//   models      {"object": "list", "data": [{"id", "object": "model", "created", "owned_by", ...}]}
#pragma once

#include <ctime>
#include <string>

#include <nlohmann/json.hpp>

#include "server/generation.h"

namespace cllm::server {

// What every response of one request shares.
struct ResponseHeader {
  std::string id;       // "cmpl-<hex>" or "chatcmpl-<hex>"
  std::string model;
  std::time_t created;  // seconds since the epoch
  bool chat = false;
};

// A fresh header: a random id with the endpoint's prefix, the time now.
ResponseHeader make_response_header(const std::string& model, bool chat);

nlohmann::json usage_json(const GenerationOutput& out);
// The whole answer of a request that did not stream.
nlohmann::json completion_json(const ResponseHeader& h, const GenerationOutput& out);
// A streamed chunk carrying text; the first chat chunk also carries the role.
nlohmann::json text_chunk_json(const ResponseHeader& h, const std::string& text, bool first);
// The last chunk: no text, the finish reason.
nlohmann::json final_chunk_json(const ResponseHeader& h, FinishReason finish);
// stream_options.include_usage: after the last chunk, one with no choices and the usage.
nlohmann::json usage_chunk_json(const ResponseHeader& h, const GenerationOutput& out);

// One server-sent event: "data: <json>\n\n".
std::string sse_event(const nlohmann::json& j);
constexpr const char* kSseDone = "data: [DONE]\n\n";

}  // namespace cllm::server
