// Errors as the OpenAI API returns them: an HTTP status and
//   {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": 400}}
// (code is the status, as llama-server writes it; param names the request field, or null).
// Anything in the server that refuses a request throws ApiError; the routes turn it into JSON.
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace cllm::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "")
      : std::runtime_error(message), status_(status), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& param() const { return param_; }

 private:
  int status_;
  std::string param_;
};

// The error type OpenAI's clients expect for a status: invalid_request_error (400, 404, 413),
// authentication_error (401), server_error (500, 503).
const char* error_type_for(int status);

// {"error": {...}} for a status, message and (optional) request field.
nlohmann::json error_json(int status, const std::string& message, const std::string& param = "");

}  // namespace cllm::server
