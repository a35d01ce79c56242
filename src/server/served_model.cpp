#include "server/served_model.h"

#include <sys/mman.h>

#include <algorithm>

#include "common/error.h"
#include "common/file_io.h"
#include "common/log.h"
#include "common/timer.h"
#include "common/units.h"
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

namespace {

CllmFile open_file(const std::string& path, const ModelOptions& opt) {
  CllmOpenOptions open_opt;
  open_opt.verify_checksums = opt.verify_checksums;
  open_opt.threads = opt.engine.threads;
  return CllmFile::open(path, open_opt);
}

}  // namespace

ServedModel::ServedModel(const std::string& path, const ModelOptions& opt, Metrics& metrics)
    : id_(model_id_of(path)),
      file_(open_file(path, opt)),
      device_(opt.device),
      engine_opt_(opt.engine),
      keep_alive_s_(opt.keep_alive_s),
      make_room_(opt.make_room),
      shared_budget_(opt.vram_of_others && opt.engine.vram_budget != UINT64_MAX ? opt.engine.vram_budget : 0),
      vram_of_others_(opt.vram_of_others),
      loads_(opt.loads),
      config_(config_from_metadata(file_.metadata())) {
  engine_opt_.sequences = opt.slots;  // one KV cache region per slot, of engine_opt_.context positions
  {
    std::lock_guard<std::mutex> lock(engine_m_);
    load_engine();
  }
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
  EngineResidency residency;
  residency.ensure_loaded = [this] { return ensure_loaded(); };
  residency.idle = [this] {
    std::lock_guard<std::mutex> lock(engine_m_);
    if (engine_->loaded()) park(cat("no request for ", keep_alive_s_, " s"));
  };
  residency.keep_alive_s = keep_alive_s_;
  scheduler_ = std::make_unique<SlotScheduler>(
      engine_->forward_batch(), tok, sched,
      [&metrics, id](const GenerationOutput& out, double queue_ms) { metrics.count_generation(id, out, queue_ms); },
      residency);
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
  std::lock_guard<std::mutex> lock(engine_m_);
  return describe_locked();
}

std::string ServedModel::describe_locked() const {
  if (!engine_->loaded()) return cat("parked: ", format_gib(file_.file_size()), " compressed in host RAM");
  if (!engine_->gpu) return "cpu";
  return cat("cuda, mode ", mode_name(engine_->gpu->mode()));
}

void ServedModel::load_engine() {
  // A model that does not fit parks idle ones (least recently used first) until it does, or
  // none is left to park. The first load builds the engine and the tokenizer; later ones the
  // engine alone.
  Timer t;
  std::unique_lock<std::mutex> one_load_at_a_time;
  if (loads_) one_load_at_a_time = std::unique_lock<std::mutex>(*loads_);
  for (;;) {
    try {
      if (shared_budget_) {  // the server's budget less what the other models planned
        const uint64_t others = vram_of_others_(*this);
        if (others >= shared_budget_)
          fail("--vram-budget ", format_gib(shared_budget_), " is all planned by the other models (",
               format_gib(others), ")");
        engine_opt_.vram_budget = shared_budget_ - others;
      }
      if (!engine_) engine_ = std::make_unique<ModelEngine>(file_, device_, engine_opt_);
      else engine_->load(file_, device_, engine_opt_);
      break;
    } catch (const Error& e) {
      if (!make_room_ || !make_room_(*this)) throw;
      log_info("serve: ", id_, ": did not fit (", e.what(), "); trying again");
    }
  }
  residency_.loaded = true;
  residency_.last_load_s = t.seconds();
  vram_planned_ = engine_->gpu ? engine_->gpu->memory().total() : 0;
  if (shared_budget_)
    log_info("serve: ", id_, ": planned for ", format_gib(engine_opt_.vram_budget), " of the ",
             format_gib(shared_budget_), " --vram-budget (the other models hold ",
             format_gib(shared_budget_ - engine_opt_.vram_budget),
             "): ", format_gib(vram_planned_), " (", engine_->gpu ? engine_->gpu->memory().describe() : "", ")");
  last_used_ = std::chrono::steady_clock::now();
}

bool ServedModel::ensure_loaded() {
  std::lock_guard<std::mutex> lock(engine_m_);
  last_used_ = std::chrono::steady_clock::now();
  if (engine_->loaded()) return false;
  load_engine();
  ++residency_.loads;
  residency_.load_s_sum += residency_.last_load_s;
  log_info("serve: ", id_, ": loaded again from host RAM in ", static_cast<long long>(residency_.last_load_s * 1e3),
           " ms (", describe_locked(), ")");
  return true;
}

void ServedModel::park(const std::string& why) {
  engine_->unload();
  residency_.loaded = false;
  vram_planned_ = 0;
  // Ask the kernel to keep (or bring back) the file's pages: the next load reads host RAM.
  ::madvise(const_cast<uint8_t*>(file_.file_data()), file_.file_size(), MADV_WILLNEED);
  log_info("serve: ", id_, ": parked (", why, "): its memory is given back; ", format_gib(file_.file_size()),
           " of compressed weights stay in host RAM for its next request");
}

bool ServedModel::park_if_idle(const std::string& why) {
  std::unique_lock<std::mutex> lock(engine_m_, std::try_to_lock);
  if (!lock.owns_lock() || !engine_->loaded() || scheduler_->running() > 0 || scheduler_->queued() > 0) return false;
  park(why);
  return true;
}

ServedModel::Residency ServedModel::residency() const {
  std::lock_guard<std::mutex> lock(engine_m_);
  return residency_;
}

std::chrono::steady_clock::time_point ServedModel::last_used() const {
  std::lock_guard<std::mutex> lock(engine_m_);
  return last_used_;
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
