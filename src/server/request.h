// A request to /v1/completions or /v1/chat/completions, parsed and checked. Every refusal is an
// ApiError 400 naming the field, what it expects and what it found:
//   "field 'temperature': expected a number in [0, 2], found 3.5"
#pragma once

#include <string>
#include <vector>

#include "model/sampler.h"
#include "text/chat_template.h"

namespace cllm::server {

struct CompletionRequest {
  std::string model;                  // the model's id (its file name without .cllm)
  bool chat = false;                  // /v1/chat/completions: messages; else prompt
  std::string prompt;                 // completions: the text to continue
  std::vector<ChatMessage> messages;  // chat: the conversation, rendered by the model's template
  int max_tokens = -1;                // tokens to generate; -1: until the end of text or a full context
  SamplerParams sampling;             // temperature, top_p, top_k, min_p, seed; the rest as `run`'s defaults
  std::vector<std::string> stop;      // up to 4 strings that end the text (not included in it)
  bool stream = false;                // server-sent events
  bool include_usage = false;         // stream_options.include_usage: a last chunk with usage
  bool ignore_eos = false;            // llama-server's: end-of-generation tokens do not end the text
};

// Throws ApiError 400 on malformed JSON, a missing or mistyped field, or a value out of range.
CompletionRequest parse_completion_request(const std::string& body, bool chat);

}  // namespace cllm::server
