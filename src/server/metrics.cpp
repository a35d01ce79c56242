#include "server/metrics.h"

#include <sstream>

namespace cllm::server {

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(m_);
  ++requests_[{endpoint, status}];
}

void Metrics::count_generation(const std::string& model, const GenerationOutput& out, double queue_ms) {
  std::lock_guard<std::mutex> lock(m_);
  PerModel& m = models_[model];
  m.prompt_tokens += out.prompt_tokens;
  m.reused_tokens += out.reused_tokens;
  m.completion_tokens += out.completion_tokens;
  if (out.finish == FinishReason::cancelled) ++m.cancelled;
  if (out.completion_tokens > 0) {
    m.ttft_sum_s += (queue_ms + out.first_token_ms) / 1e3;
    ++m.ttft_count;
  }
  if (out.n_decode > 0 && out.decode_ms > 0) m.last_tok_s = out.n_decode * 1e3 / out.decode_ms;
}

namespace {

void header(std::ostringstream& o, const char* name, const char* type, const char* help) {
  o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
}

}  // namespace

std::string Metrics::render(const std::vector<ModelGauges>& models, int models_loaded) const {
  std::lock_guard<std::mutex> lock(m_);
  std::ostringstream o;
  header(o, "codecllm_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
  for (const auto& [key, n] : requests_)
    o << "codecllm_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second << "\"} " << n << '\n';
  auto per_model = [&](const char* name, const char* type, const char* help, auto value) {
    header(o, name, type, help);
    for (const auto& [model, m] : models_) o << name << "{model=\"" << model << "\"} " << value(m) << '\n';
  };
  per_model("codecllm_prompt_tokens_total", "counter", "Prompt tokens of finished generations.",
            [](const PerModel& m) { return m.prompt_tokens; });
  per_model("codecllm_prompt_tokens_reused_total", "counter", "Prompt tokens found in the KV cache, not computed.",
            [](const PerModel& m) { return m.reused_tokens; });
  per_model("codecllm_completion_tokens_total", "counter", "Generated tokens.",
            [](const PerModel& m) { return m.completion_tokens; });
  per_model("codecllm_requests_cancelled_total", "counter", "Generations stopped because the client went away.",
            [](const PerModel& m) { return m.cancelled; });
  header(o, "codecllm_time_to_first_token_seconds", "summary", "From submission (queue included) to the first token.");
  for (const auto& [model, m] : models_) {
    o << "codecllm_time_to_first_token_seconds_sum{model=\"" << model << "\"} " << m.ttft_sum_s << '\n';
    o << "codecllm_time_to_first_token_seconds_count{model=\"" << model << "\"} " << m.ttft_count << '\n';
  }
  per_model("codecllm_decode_tokens_per_second", "gauge", "Single-token passes per second in the last generation.",
            [](const PerModel& m) { return m.last_tok_s; });
  header(o, "codecllm_requests_waiting", "gauge", "Requests waiting for a free slot.");
  for (const auto& g : models) o << "codecllm_requests_waiting{model=\"" << g.model << "\"} " << g.waiting << '\n';
  header(o, "codecllm_requests_running", "gauge", "Requests in slots, being generated.");
  for (const auto& g : models) o << "codecllm_requests_running{model=\"" << g.model << "\"} " << g.running << '\n';
  header(o, "codecllm_model_loaded", "gauge", "1: the model's engine is in memory; 0: parked (compressed in host RAM).");
  for (const auto& g : models) o << "codecllm_model_loaded{model=\"" << g.model << "\"} " << (g.loaded ? 1 : 0) << '\n';
  header(o, "codecllm_model_reload_seconds", "summary", "Parked models loaded again for a request.");
  for (const auto& g : models) {
    o << "codecllm_model_reload_seconds_sum{model=\"" << g.model << "\"} " << g.load_s_sum << '\n';
    o << "codecllm_model_reload_seconds_count{model=\"" << g.model << "\"} " << g.loads << '\n';
  }
  header(o, "codecllm_models_loaded", "gauge", "Models whose engines are in memory (the others are parked).");
  o << "codecllm_models_loaded " << models_loaded << '\n';
  return o.str();
}

}  // namespace cllm::server
