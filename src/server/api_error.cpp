#include "server/api_error.h"

namespace cllm::server {

const char* error_type_for(int status) {
  if (status == 401) return "authentication_error";
  if (status == 404) return "not_found_error";
  if (status >= 500) return status == 503 ? "unavailable_error" : "server_error";
  return "invalid_request_error";
}

nlohmann::json error_json(int status, const std::string& message, const std::string& param) {
  nlohmann::json e = {{"message", message}, {"type", error_type_for(status)}, {"code", status}};
  e["param"] = param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param);
  return {{"error", e}};
}

}  // namespace cllm::server
