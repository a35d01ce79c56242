// codecllm serve -m A.cllm [-m B.cllm ...]: an OpenAI-compatible HTTP server (src/server), with
// llama-server's flag names.
#include <climits>
#include <memory>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "common/error.h"
#include "runtime/device_select.h"
#include "server/serve.h"
#include "text/chat_template.h"

namespace cllm::cli {

namespace {

struct ServeArgs {
  std::vector<std::string> models;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
  int slots = 1;
  int max_queue = 16;
  double keep_alive_s = -1;
  int timeout_s = 10;
  std::string chat_template;
  EngineFlags engine;  // --device, --mode, --vram-budget, -t, -c, --no-verify (cli/engine_flags.h)
  int token_delay_ms = 0, load_delay_ms = 0;  // tests only
};

int run_serve(const ServeArgs& a) {
  const Device device = select_device(a.engine.device);
  check_engine_flags(a.engine, device);
  server::ServeOptions opt;
  opt.model_paths = a.models;
  opt.model.device = device;
  opt.model.engine = gpu_options(a.engine);
  // -c is the context of all slots together, as in llama-server: each slot (one engine
  // sequence) gets c / np positions; without -c each slot gets the engine's default.
  if (a.engine.context > 0) {
    opt.model.engine.context = a.engine.context / a.slots;
    if (opt.model.engine.context < 1)
      fail("-c ", a.engine.context, " gives each of -np ", a.slots, " slots no position: use -c ", a.slots,
           " or more (-c is the context of all slots together)");
  }
  opt.model.slots = a.slots;
  opt.model.verify_checksums = !a.engine.no_verify;
  opt.model.chat_template = a.chat_template;
  opt.model.max_queue = a.max_queue;
  opt.model.keep_alive_s = a.keep_alive_s;
  opt.model.token_delay_ms = a.token_delay_ms;
  opt.http.host = a.host;
  opt.http.port = a.port;
  opt.http.api_key = a.api_key;
  opt.http.timeout_s = a.timeout_s;
  opt.load_delay_ms = a.load_delay_ms;
  return server::serve(opt);
}

}  // namespace

void register_serve(CLI::App& app, Action& action) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve .cllm models over an OpenAI-compatible HTTP API");
  cmd->option_defaults()->always_capture_default();
  cmd->add_option("-m,--model", a->models, "A .cllm file to serve (repeat for several; its id is the file name "
                                           "without .cllm)")
      ->required()
      ->check(CLI::ExistingFile)
      ->envname("CLLM_ARG_MODEL");
  cmd->add_option("--host", a->host, "Address to listen on")->envname("CLLM_ARG_HOST");
  cmd->add_option("--port", a->port, "Port to listen on (0: any free port, printed)")
      ->check(CLI::Range(0, 65535))
      ->envname("CLLM_ARG_PORT");
  cmd->add_option("--api-key", a->api_key, "Require 'Authorization: Bearer KEY' on /v1/ routes")
      ->default_str("none")
      ->envname("CLLM_API_KEY");
  cmd->add_option("--parallel", a->slots, "Slots per model (alias -np): requests decoded together, each with "
                                          "-c / np positions of context")
      ->check(CLI::Range(1, 1024))
      ->envname("CLLM_ARG_N_PARALLEL");
  cmd->add_option("--keep-alive", a->keep_alive_s,
                  "Seconds a model stays loaded without requests; then it is parked (its VRAM given back, the "
                  "compressed weights kept in host RAM) until its next request loads it again (-1: never; 0: at once)")
      ->default_str("-1")
      ->check(CLI::Range(-1.0, 1e9))
      ->envname("CLLM_ARG_KEEP_ALIVE");
  cmd->add_option("--max-queue", a->max_queue, "Requests that may wait per model while its slots are all taken; more get 503")
      ->check(CLI::Range(0, 4096))
      ->envname("CLLM_ARG_MAX_QUEUE");
  cmd->add_option("--timeout", a->timeout_s, "Seconds a client may leave a read or write of its connection waiting "
                                             "(alias -to): a stalled request gets 400, a stream nobody reads is "
                                             "cancelled")
      ->check(CLI::Range(1, 3600))
      ->envname("CLLM_ARG_TIMEOUT");
  cmd->add_option("--chat-template", a->chat_template,
                  "Chat format for /v1/chat/completions instead of the model's own template: " + chat_template_names())
      ->check([](const std::string& name) {
        try {
          chat_template_from_name(name);
          return std::string();
        } catch (const std::exception& e) {
          return std::string(e.what());
        }
      });
  add_engine_flags(cmd, a->engine, EngineFlagsFor::one_engine);
  // Tests only, hidden from --help: a pause before each token, so that a request is still
  // running when the next ones arrive (the queue-full and disconnect tests), and one before
  // loading, so that /health can be seen answering 503.
  cmd->add_option("--test-token-delay-ms", a->token_delay_ms)->check(CLI::Range(0, 10000))->group("");
  cmd->add_option("--test-load-delay-ms", a->load_delay_ms)->check(CLI::Range(0, 60000))->group("");
  cmd->callback([a, &action] { action = [a] { return run_serve(*a); }; });
}

}  // namespace cllm::cli
