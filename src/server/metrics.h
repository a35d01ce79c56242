// The server's counters, written out in Prometheus' text format for GET /metrics:
//   codecllm_requests_total{endpoint,status}        requests answered
//   codecllm_prompt_tokens_total{model}             prompt tokens (codecllm_prompt_tokens_reused_total: taken from the KV cache)
//   codecllm_completion_tokens_total{model}         generated tokens
//   codecllm_requests_cancelled_total{model}        generations stopped because the client left
//   codecllm_time_to_first_token_seconds{model}     summary (_sum, _count): submission to the first token, queue included
//   codecllm_decode_tokens_per_second{model}        the last request's decode passes per second (batched: shared with others)
//   codecllm_requests_waiting{model}, codecllm_requests_running{model}, codecllm_models_loaded   gauges
//   codecllm_model_loaded{model}                    gauge: 1 loaded, 0 parked (idle, compressed in host RAM)
//   codecllm_model_reload_seconds{model}            summary (_sum, _count): parked models loaded again
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "server/generation.h"

namespace cllm::server {

// A model's gauges at the moment /metrics is read.
struct ModelGauges {
  std::string model;
  int waiting = 0;
  int running = 0;  // requests in slots
  bool loaded = true;       // its engine is in memory (else parked)
  int loads = 0;            // loaded again after being parked
  double load_s_sum = 0;    // the seconds those loads took
};

class Metrics {
 public:
  void count_request(const std::string& endpoint, int status);
  // queue_ms: from submission to the start of the run.
  void count_generation(const std::string& model, const GenerationOutput& out, double queue_ms);

  std::string render(const std::vector<ModelGauges>& models, int models_loaded) const;

 private:
  struct PerModel {
    long long prompt_tokens = 0, reused_tokens = 0, completion_tokens = 0, cancelled = 0;
    double ttft_sum_s = 0;
    long long ttft_count = 0;
    double last_tok_s = 0;
  };
  mutable std::mutex m_;
  std::map<std::pair<std::string, int>, long long> requests_;  // (endpoint, status) -> count
  std::map<std::string, PerModel> models_;
};

}  // namespace cllm::server
