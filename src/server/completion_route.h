// POST /v1/completions and POST /v1/chat/completions: parse and check the request, build the
// prompt, queue it on the model's scheduler, then answer with the whole text or stream it as
// server-sent events ending with `data: [DONE]`.
#pragma once

#include <httplib.h>

#include "server/metrics.h"
#include "server/model_set.h"

namespace cllm::server {

void handle_completion(const httplib::Request& req, httplib::Response& res, ModelSet& models, bool chat);

}  // namespace cllm::server
