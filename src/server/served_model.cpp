#include "server/served_model.h"

#include <algorithm>

#include "common/error.h"
#include "common/file_io.h"
#include "common/log.h"
#include "model/chat_session.h"
#include "server/api_error.h"

namespace cllm::server {

namespace {

// Prompt tokens a slot reads per step while other slots decode (SchedulerOptions::chunk).
constexpr int kPromptChunk = 256;

}  // namespace

std::string model_id_of(const std::string& path) {
  std::string name = path_basename(path);
  const std::string ext = ".cllm";
  if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0)
    name.resize(name.size() - ext.size());
  return name;
}

ServedModel::ServedModel(const std::string& path, const ModelOptions& opt, Metrics& metrics) : id_(model_id_of(path)) {
  CllmOpenOptions open_opt;
  open_opt.verify_checksums = opt.verify_checksums;
  open_opt.threads = opt.engine.threads;
  const CllmFile file = CllmFile::open(path, open_opt);
  GpuOptions engine_opt = opt.engine;
  engine_opt.sequences = opt.slots;  // one KV cache region per slot, of engine_opt.context positions
  engine_ = std::make_unique<ModelEngine>(file, opt.device, engine_opt);
  const Tokenizer& tok = *engine_->tok;
  specials_ = chat_specials(tok);
  try {
    std::string why;
    chat_ = chat_template_for(tok, opt.chat_template, &why);
    end_of_turn_ = tok.find_piece(chat_end_of_turn(*chat_, specials_));
    log_info("serve: ", id_, ": chat format ", chat_->name, " (", why, ")");
  } catch (const Error& e) {
    chat_error_ = e.what();
    log_info("serve: ", id_, ": no chat format (", e.what(), "): /v1/chat/completions will refuse it");
  }
  SchedulerOptions sched;
  sched.slots = opt.slots;
  sched.context = engine_->context();  // per sequence
  sched.batch_capacity = engine_->batch_capacity();
  sched.chunk = kPromptChunk;
  sched.n_vocab = engine_->config().vocab_size;
  sched.max_queue = opt.max_queue;
  sched.token_delay_ms = opt.token_delay_ms;
  const std::string id = id_;
  scheduler_ = std::make_unique<SlotScheduler>(
      engine_->forward_batch(), tok, sched,
      [&metrics, id](const GenerationOutput& out, double queue_ms) { metrics.count_generation(id, out, queue_ms); });
  for (int i = 0; i < sched.slots; ++i)
    log_info("serve: ", id_, ": slot ", i, ": ", sched.context, " positions");
  log_info("serve: ", id_, ": ", sched.slots, " slot", sched.slots == 1 ? "" : "s", " of ", sched.context,
           " positions (context ", sched.slots * sched.context, " in all), batches of up to ", sched.batch_capacity,
           " tokens, prompt chunks of ", std::min(sched.chunk, sched.batch_capacity), " while others decode");
}

ServedModel::~ServedModel() {
  if (scheduler_) scheduler_->stop();
}

std::string ServedModel::device_description() const {
  if (!engine_->gpu) return "cpu";
  return cat("cuda, mode ", mode_name(engine_->gpu->mode()));
}

GenerationInput ServedModel::completion_input(const std::string& prompt) {
  GenerationInput in;
  std::lock_guard<std::mutex> lock(tokenizer_mutex_);
  const Tokenizer& tok = *engine_->tok;
  in.prompt = tok.encode(prompt, tok.add_bos());
  if (in.prompt.empty()) throw ApiError(400, "field 'prompt': expected some text (this model adds no BOS), found \"\"", "prompt");
  return in;
}

GenerationInput ServedModel::chat_input(const std::vector<ChatMessage>& messages) {
  if (!chat_)
    throw ApiError(400, cat("model '", id_, "' has no chat format (", chat_error_, ")"), "model");
  GenerationInput in;
  std::lock_guard<std::mutex> lock(tokenizer_mutex_);
  try {
    in.prompt = chat_tokenize(*engine_->tok, chat_render_prompt(*engine_->tok, *chat_, messages, specials_));
  } catch (const Error& e) {
    throw ApiError(400, cat("field 'messages': ", e.what()), "messages");
  }
  in.end_of_turn = end_of_turn_;
  return in;
}

}  // namespace cllm::server
