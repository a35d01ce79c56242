// POST /v1/completions and POST /v1/chat/completions: parse and check the request, build the
// prompt, queue it on the model's scheduler, then answer with the whole text or stream it as
// server-sent events ending with `data: [DONE]`.
#pragma once

#include <httplib.h>

#include "server/metrics.h"
#include "server/model_set.h"

namespace cllm::server {

void handle_completion(const httplib::Request& req, httplib::Response& res, ModelSet& models, bool chat);

// Streams whose connection is still being written (their end event and `data: [DONE]` not yet
// sent, or their client not yet found gone). Shutdown waits for them after stopping the
// schedulers: httplib stops writing chunked answers as soon as the server stops.
int open_streams();

}  // namespace cllm::server
