// A model the server serves: its id (the file name without .cllm), its engine and tokenizer,
// its chat format, and the scheduler that decodes its requests in slots (one engine sequence each).
#pragma once

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
  const LlamaConfig& config() const { return engine_->config(); }
  std::string device_description() const;  // "cpu" or "cuda, mode resident"
  SlotScheduler& scheduler() { return *scheduler_; }

  // A completion's prompt: the text's ids, BOS first when the tokenizer adds one.
  GenerationInput completion_input(const std::string& prompt);
  // A chat's prompt: the messages in the model's chat format, ending with the assistant's header;
  // the reply ends at the format's end of turn. Throws ApiError 400 when the model has no chat
  // format or the format refuses the messages (roles out of turn, a system message).
  GenerationInput chat_input(const std::vector<ChatMessage>& messages);

 private:
  std::string id_;
  std::unique_ptr<ModelEngine> engine_;
  std::unique_ptr<SlotScheduler> scheduler_;
  std::optional<ChatTemplate> chat_;  // none: the model has no chat format (chat_error_ says why)
  std::string chat_error_;
  int end_of_turn_ = -1;
  ChatSpecials specials_;
  std::mutex tokenizer_mutex_;  // encode() caches pieces: one HTTP thread at a time
};

}  // namespace cllm::server
