// Writing JSON answers into cpp-httplib responses.
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "server/api_error.h"

namespace cllm::server {

// JSON text; invalid UTF-8 in generated text (a reply cut inside a character) is replaced.
std::string json_text(const nlohmann::json& j);
void send_json(httplib::Response& res, int status, const nlohmann::json& j);
void send_error(httplib::Response& res, const ApiError& e);

}  // namespace cllm::server
