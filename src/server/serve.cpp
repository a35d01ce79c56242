#include "server/serve.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <set>
#include <thread>

#include "common/error.h"
#include "common/log.h"
#include "common/timer.h"
#include "server/completion_route.h"
#include "server/model_set.h"

namespace cllm::server {

namespace {

// SIGINT and SIGTERM, blocked in every thread the server starts, so that only the watcher
// takes them (sigtimedwait) and stops the server from an ordinary thread. Threads that libraries
// start with their own masks (the CUDA driver's) may still receive one: for them the handler
// below only records it, and the watcher sees the record at its next poll.
volatile sig_atomic_t g_stop_signal = 0;

extern "C" void record_stop_signal(int sig) { g_stop_signal = sig; }

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// Waits for a stop signal until `over` is set; on a signal, runs on_signal once.
void watch_signals(const std::atomic<bool>& over, const std::function<void(int)>& on_signal) {
  const sigset_t set = stop_signals();
  const timespec poll = {0, 200 * 1000 * 1000};  // 200 ms: how soon the watcher notices `over`
  while (!over) {
    const int sig = sigtimedwait(&set, nullptr, &poll);
    if (sig > 0) return on_signal(sig);
    if (g_stop_signal) return on_signal(g_stop_signal);
  }
}

void check_model_ids(const std::vector<std::string>& paths) {
  std::set<std::string> seen;
  for (const auto& p : paths)
    if (!seen.insert(model_id_of(p)).second)
      fail("serve: two models have the id '", model_id_of(p), "' (a model's id is its file name without .cllm): rename one");
}

// The HTTP server listening on its own thread.
class Listener {
 public:
  explicit Listener(HttpServer& http) : http_(http), thread_([this] {
    http_.listen();
    over_ = true;
  }) {}
  // httplib's stop() does nothing before listen() has started: repeat it until listen() returns.
  void stop() {
    while (!over_) {
      http_.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  void join() { thread_.join(); }

 private:
  HttpServer& http_;
  std::atomic<bool> over_{false};  // before thread_: the thread sets it
  std::thread thread_;
};

// Loads the models in order, each into `models` as soon as it is ready; stops early on a signal.
void load_models(const ServeOptions& opt, ModelSet& models, Metrics& metrics, const std::atomic<bool>& signalled) {
  for (int ms = 0; ms < opt.load_delay_ms && !signalled; ms += 10) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ModelOptions model_opt = opt.model;
  model_opt.make_room = [&models](const ServedModel& asking) { return models.make_room(asking); };
  model_opt.vram_of_others = [&models](const ServedModel& asking) { return models.vram_of_others(asking); };
  model_opt.loads = std::make_shared<std::mutex>();
  for (const auto& path : opt.model_paths) {
    if (signalled) return;
    Timer load;
    models.add(std::make_unique<ServedModel>(path, model_opt, metrics));
    const ServedModel& m = *models.all().back();
    log_info("serve: loaded '", m.id(), "' (", m.device_description(), ", context ", m.context(), " per slot) in ",
             static_cast<long long>(load.ms()), " ms");
  }
}

}  // namespace

int serve(const ServeOptions& opt) {
  check_model_ids(opt.model_paths);
  ::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error return, not the end of the server
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any thread starts: they all inherit it
  struct sigaction record = {};
  record.sa_handler = record_stop_signal;
  sigemptyset(&record.sa_mask);
  for (int sig : {SIGINT, SIGTERM}) sigaction(sig, &record, nullptr);  // instead of the CLI's cleanup-and-exit

  Metrics metrics;
  ModelSet models;
  HttpOptions http_opt = opt.http;
  // Every running or queued request holds a connection thread; a few more serve /health and /metrics.
  http_opt.threads = static_cast<int>(opt.model_paths.size()) * (opt.model.max_queue + opt.model.slots) + 8;
  HttpServer http(http_opt, models, metrics);
  const int port = http.bind();
  Listener listener(http);
  std::printf("codecllm serve: listening on http://%s:%d\n", opt.http.host.c_str(), port);
  std::fflush(stdout);

  std::atomic<bool> over{false}, signalled{false};
  auto stop_serving = [&] {
    models.stop_schedulers();  // running generations end, waiting ones get 503
    // Their streams write that end once woken; httplib would cut them off once stopped.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (open_streams() > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    listener.stop();
  };
  std::thread watcher([&] {
    watch_signals(over, [&](int sig) {
      log_info("serve: ", sig == SIGINT ? "SIGINT" : "SIGTERM", ": stopping");
      signalled = true;
      stop_serving();
    });
  });
  try {
    load_models(opt, models, metrics, signalled);
  } catch (...) {
    over = true;
    stop_serving();
    listener.join();
    watcher.join();
    throw;
  }
  if (!signalled) {
    models.set_ready();
    log_info("serve: ready: ", models.ids());
  }
  listener.join();  // until a signal stops the server
  over = true;
  watcher.join();
  models.stop_schedulers();  // a model that finished loading after the signal
  log_info("serve: stopped");
  return 0;
}

}  // namespace cllm::server
