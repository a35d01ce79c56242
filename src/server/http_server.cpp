#include "server/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include "common/error.h"
#include "server/chat_page.h"
#include "server/completion_route.h"
#include "server/http_reply.h"

namespace cllm::server {

using nlohmann::json;

HttpServer::HttpServer(const HttpOptions& opt, ModelSet& models, Metrics& metrics)
    : opt_(opt), models_(models), metrics_(metrics), http_(std::make_unique<httplib::Server>()) {
  const int threads = opt.threads;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http_->set_payload_max_length(opt.max_body_bytes);
  // A connection holds one of the pool's threads while it is open, so none may idle long:
  // before each request (the first too) it may wait 2 s for the request to begin (shutdown waits
  // for this); then each read of the request, and each write of the answer, gets timeout_s.
  // A stream whose client stops reading fails its write after timeout_s, which cancels it.
  http_->set_keep_alive_timeout(2);
  http_->set_read_timeout(opt.timeout_s, 0);
  http_->set_write_timeout(opt.timeout_s, 0);
  // The library's own socket options, and the socket kept so that bind() can raise the backlog.
  http_->set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    socket_ = static_cast<int>(sock);
  });
  add_guards();
  add_routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  const bool any = opt_.port == 0;
  const int port = any ? http_->bind_to_any_port(opt_.host) : (http_->bind_to_port(opt_.host, opt_.port) ? opt_.port : -1);
  if (port <= 0) fail("serve: cannot listen on ", opt_.host, ":", opt_.port, " (address in use, or not this machine's?)");
  // Debian's compiled cpp-httplib listens with a backlog of 5: a burst of clients connecting at
  // once overflows it, and now and then one of them is reset (seen with 64 load-test clients).
  // listen() again on the same socket only raises the backlog.
  if (socket_ >= 0) ::listen(socket_, SOMAXCONN);
  return port;
}

void HttpServer::listen() { http_->listen_after_bind(); }

void HttpServer::stop() { http_->stop(); }

namespace {

// The endpoint a request is counted under: its route, or "other" (unknown paths must not grow
// the metrics without bound).
std::string endpoint_label(const std::string& path) {
  for (const char* known : {"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions"})
    if (path == known) return path;
  return "other";
}

bool authorized(const httplib::Request& req, const std::string& key) {
  return req.get_header_value("Authorization") == "Bearer " + key;
}

}  // namespace

void HttpServer::add_guards() {
  const std::string key = opt_.api_key;
  http_->set_pre_routing_handler([key](const httplib::Request& req, httplib::Response& res) {
    if (key.empty() || req.path.rfind("/v1/", 0) != 0 || authorized(req, key))
      return httplib::Server::HandlerResponse::Unhandled;
    const bool given = req.has_header("Authorization");
    send_error(res, ApiError(401, given ? "invalid API key (expected 'Authorization: Bearer KEY' with the server's --api-key)"
                                        : "missing API key: send 'Authorization: Bearer KEY'"));
    return httplib::Server::HandlerResponse::Handled;
  });
  // Called for every answer >= 400: fills in the body httplib leaves empty (unknown path, body too large).
  const size_t max_body = opt_.max_body_bytes;
  const httplib::Server::HandlerWithResponse fill_error = [max_body](const httplib::Request& req,
                                                                       httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 404) send_error(res, ApiError(404, cat("no route ", req.method, " ", req.path)));
    else if (res.status == 413) send_error(res, ApiError(413, cat("the request body is over the limit of ", max_body, " bytes")));
    else send_error(res, ApiError(res.status, cat("HTTP ", res.status)));
    return httplib::Server::HandlerResponse::Handled;
  };
  http_->set_error_handler(fill_error);
  http_->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, what));
  });
  Metrics& metrics = metrics_;
  http_->set_logger([&metrics](const httplib::Request& req, const httplib::Response& res) {
    metrics.count_request(endpoint_label(req.path), res.status);
  });
}

void HttpServer::add_routes() {
  ModelSet& models = models_;
  Metrics& metrics = metrics_;
  http_->Get("/", [](const httplib::Request&, httplib::Response& res) {
    const std::string_view page = chat_page_html();
    res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
  });
  http_->Get("/health", [&models](const httplib::Request&, httplib::Response& res) {
    if (models.ready()) send_json(res, 200, {{"status", "ok"}});
    else send_error(res, ApiError(503, "loading models"));
  });
  http_->Get("/v1/models", [&models](const httplib::Request&, httplib::Response& res) {
    json data = json::array();
    for (const ServedModel* m : models.all()) {
      const ServedModel::Residency r = m->residency();
      data.push_back({{"id", m->id()}, {"object", "model"}, {"created", 0}, {"owned_by", "codecllm"},
                      {"meta", {{"context", m->context()}, {"device", m->device_description()},
                                {"status", r.loaded ? "loaded" : "parked"}, {"loads_again", r.loads},
                                {"last_load_s", r.last_load_s},
                                {"n_vocab", m->config().vocab_size}, {"n_layers", m->config().n_layers}}}});
    }
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  });
  http_->Post("/v1/completions", [&models](const httplib::Request& req, httplib::Response& res) {
    handle_completion(req, res, models, false);
  });
  http_->Post("/v1/chat/completions", [&models](const httplib::Request& req, httplib::Response& res) {
    handle_completion(req, res, models, true);
  });
  http_->Get("/metrics", [&models, &metrics](const httplib::Request&, httplib::Response& res) {
    std::vector<ModelGauges> gauges;
    int loaded = 0;
    for (ServedModel* m : models.all()) {
      const ServedModel::Residency r = m->residency();
      gauges.push_back({m->id(), m->scheduler().queued(), m->scheduler().running(), r.loaded, r.loads, r.load_s_sum});
      loaded += r.loaded ? 1 : 0;
    }
    res.set_content(metrics.render(gauges, loaded), "text/plain; version=0.0.4");
  });
}

}  // namespace cllm::server
