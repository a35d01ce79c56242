// `codecllm serve`: listens first (so /health answers 503 while loading), loads each model,
// then serves until SIGINT or SIGTERM, when it stops accepting, cancels the running
// generations, fails the queued ones with 503, and returns 0.
#pragma once

#include <string>
#include <vector>

#include "server/http_server.h"
#include "server/served_model.h"

namespace cllm::server {

struct ServeOptions {
  std::vector<std::string> model_paths;  // -m, in order; ids must differ
  ModelOptions model;                    // the same for every model
  HttpOptions http;
  int load_delay_ms = 0;                 // tests only: a pause before loading, so that "loading" can be seen
};

// Returns the exit status; throws cllm::Error when a model fails to load or the address is taken.
int serve(const ServeOptions& opt);

}  // namespace cllm::server
