// The HTTP side of `codecllm serve` (cpp-httplib): routes, the API key, error bodies, request
// counting. Routes:
//   GET  /                      the chat page (chat_page.h): needs no key; its requests carry it
//   GET  /health                503 while the models load, then 200 {"status": "ok"}
//   GET  /v1/models             the models and where they run
//   POST /v1/completions        completion_route.h
//   POST /v1/chat/completions   completion_route.h
//   GET  /metrics               Prometheus text (metrics.h)
// With an API key, every /v1/ route needs `Authorization: Bearer KEY` (401 otherwise); /health
// and /metrics stay open, as llama-server's. Unknown paths answer 404 and bodies over the limit
// 413, as OpenAI error JSON.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "server/metrics.h"
#include "server/model_set.h"

namespace httplib {
class Server;
}

namespace cllm::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                        // 0: any free port (bind() says which)
  std::string api_key;                    // "": no authentication
  size_t max_body_bytes = 8u << 20;       // larger request bodies get 413
  int timeout_s = 10;                     // longest wait for one read or write of a connection (--timeout)
  int threads = 16;                       // connections served at once (waiting requests hold one each)
};

class HttpServer {
 public:
  HttpServer(const HttpOptions& opt, ModelSet& models, Metrics& metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port; returns the port. Throws cllm::Error naming the address when it cannot.
  int bind();
  // Serves until stop(); call after bind().
  void listen();
  // Stops accepting; listen() returns once the open connections have ended.
  void stop();

 private:
  HttpOptions opt_;
  ModelSet& models_;
  Metrics& metrics_;
  std::unique_ptr<httplib::Server> http_;
  int socket_ = -1;  // the listening socket (set by the socket-options hook at bind)

  void add_routes();
  void add_guards();  // API key, 404/413 bodies, exceptions, request counting
};

}  // namespace cllm::server
