#include "server/served_model.h"

#include "common/error.h"
#include "common/file_io.h"
#include "common/log.h"
#include "model/chat_session.h"
#include "server/api_error.h"

namespace cllm::server {

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
  engine_ = std::make_unique<ModelEngine>(file, opt.device, opt.engine);
  const Tokenizer& tok = *engine_->tok;
  sequence_ = std::make_unique<Sequence>(engine_->forward(), engine_->context(), engine_->config().vocab_size, tok);
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
  const std::string id = id_;
  worker_ = std::make_unique<ModelWorker>(
      *sequence_, opt.max_queue,
      [&metrics, id](const Job& job) { metrics.count_generation(id, job.output(), job.queue_ms()); },
      opt.token_delay_ms);
}

ServedModel::~ServedModel() {
  if (worker_) worker_->stop();
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
