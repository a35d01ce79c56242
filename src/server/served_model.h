// A model the server serves: its id (the file name without .cllm), its engine and tokenizer,
// its chat format, and the scheduler that decodes its requests in slots (one engine sequence each).
//
// Idle models (issue #18): a model without a request for --keep-alive seconds unloads its engine
// (parks: its VRAM, or the CPU's decoded weights, are given back) and keeps its .cllm mapped, so
// the compressed weights stay in host RAM (the page cache) and its next request loads them back
// over PCIe, not from disk. A model that does not fit the memory left, at start or when it comes
// back, first parks the idle model used least recently (make_room), then tries again. With
// --vram-budget SIZE the models share the one budget: each is planned for what the others left.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "runtime/model_engine.h"
#include "server/metrics.h"
#include "server/slot_scheduler.h"
#include "text/chat_template.h"

namespace cllm::server {

struct ModelOptions {
  Device device = Device::cpu;
  GpuOptions engine;             // mode or budget, context PER SLOT, threads (the CPU engine reads context and threads)
  bool verify_checksums = true;
  std::string chat_template;     // --chat-template: a format name instead of the model's own ("": its own)
  int slots = 1;                 // -np: requests decoded together, each on its own engine sequence
  int max_queue = 16;            // requests that may wait while every slot is taken
  int token_delay_ms = 0;        // tests only (SchedulerOptions)
  double keep_alive_s = -1;      // --keep-alive: park after this long without a request (< 0: never)
  // Parks the idle model, other than `asking`, used least recently; false when none can be
  // parked. Set by the server over all its models; empty: nothing is parked to make room.
  std::function<bool(const class ServedModel& asking)> make_room;
  // With engine.vram_budget a size (not 0, not auto): the budget of ALL the server's models.
  // Each load plans this model for the budget less what the others loaded now planned (this
  // callback's sum); when that is too little, make_room parks idle ones first. Loads take
  // `loads` (one mutex for all models) so that two never plan against the same bytes.
  std::function<uint64_t(const class ServedModel& asking)> vram_of_others;
  std::shared_ptr<std::mutex> loads;
};

// "models/stories260K.cllm" -> "stories260K"
std::string model_id_of(const std::string& path);

class ServedModel {
 public:
  // Opens and loads the model and starts its scheduler. Throws cllm::Error as `run` would.
  ServedModel(const std::string& path, const ModelOptions& opt, Metrics& metrics);
  ~ServedModel();  // stops the scheduler first
  ServedModel(const ServedModel&) = delete;
  ServedModel& operator=(const ServedModel&) = delete;

  const std::string& id() const { return id_; }
  int context() const { return scheduler_->options().context; }  // a slot's positions: the longest prompt
  const LlamaConfig& config() const { return config_; }
  std::string device_description() const;  // "cpu" or "cuda, mode resident"
  SlotScheduler& scheduler() { return *scheduler_; }

  // Where its weights are, for /v1/models and /metrics.
  struct Residency {
    bool loaded = false;     // the engine is in memory (else parked: the compressed file in host RAM)
    int loads = 0;           // loads after the first (a parked model's requests bringing it back)
    double load_s_sum = 0;   // their seconds
    double last_load_s = 0;  // the last load's seconds, the first included
  };
  Residency residency() const;
  // Parks the engine if no request runs or waits and it is loaded; false otherwise (or when
  // another thread holds the engine). For make_room, from another model's thread.
  bool park_if_idle(const std::string& why);
  std::chrono::steady_clock::time_point last_used() const;
  // Bytes of VRAM its engine planned (GpuEngine::memory().total()); 0 parked or on the CPU.
  uint64_t vram_planned() const { return vram_planned_.load(); }

  // A completion's prompt: the text's ids, BOS first when the tokenizer adds one.
  GenerationInput completion_input(const std::string& prompt);
  // A chat's prompt: the messages in the model's chat format, ending with the assistant's header;
  // the reply ends at the format's end of turn. Throws ApiError 400 when the model has no chat
  // format or the format refuses the messages (roles out of turn, a system message).
  GenerationInput chat_input(const std::vector<ChatMessage>& messages);

 private:
  bool ensure_loaded();  // the scheduler's, before each step: loads a parked engine (true)
  void load_engine();    // under engine_m_: makes room as needed
  void park(const std::string& why);  // under engine_m_
  std::string describe_locked() const;  // device_description(), under engine_m_

  std::string id_;
  CllmFile file_;      // kept open: a parked model loads again from it
  Device device_;
  GpuOptions engine_opt_;
  double keep_alive_s_;
  std::function<bool(const ServedModel&)> make_room_;
  uint64_t shared_budget_ = 0;  // the server's --vram-budget when all models share it; 0: none
  std::function<uint64_t(const ServedModel&)> vram_of_others_;
  std::shared_ptr<std::mutex> loads_;
  std::atomic<uint64_t> vram_planned_{0};
  LlamaConfig config_;
  mutable std::mutex engine_m_;  // loading, parking, and the check that the engine is there
  Residency residency_;          // under engine_m_
  std::chrono::steady_clock::time_point last_used_;  // under engine_m_
  std::unique_ptr<ModelEngine> engine_;
  std::unique_ptr<SlotScheduler> scheduler_;
  std::optional<ChatTemplate> chat_;  // none: the model has no chat format (chat_error_ says why)
  std::string chat_error_;
  int end_of_turn_ = -1;
  ChatSpecials specials_;
  std::mutex tokenizer_mutex_;  // encode() caches pieces: one HTTP thread at a time
};

}  // namespace cllm::server
