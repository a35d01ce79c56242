#include "server/slot_scheduler.h"

#include <algorithm>
#include <chrono>

#include "common/error.h"
#include "common/log.h"
#include "common/timer.h"

namespace cllm::server {

SlotScheduler::SlotScheduler(BatchForwardFn forward, const Tokenizer& tok, const SchedulerOptions& opt, OnDone on_done,
                             EngineResidency residency)
    : forward_(std::move(forward)),
      tok_(tok),
      opt_(opt),
      n_sample_(std::min(opt.n_vocab, tok.n_vocab())),
      on_done_(std::move(on_done)),
      residency_(std::move(residency)),
      sampling_pool_(std::max(1, std::min({opt.slots, hardware_threads(), 8}))) {
  if (opt.slots < 1 || opt.context < 1 || opt.chunk < 1 || opt.n_vocab < 1 || opt.max_queue < 0)
    fail("scheduler: slots ", opt.slots, ", context ", opt.context, ", chunk ", opt.chunk, ", n_vocab ", opt.n_vocab,
         ", max_queue ", opt.max_queue, ": expected each >= 1 (max_queue >= 0)");
  if (opt.batch_capacity < opt.slots)
    fail("scheduler: a batch of ", opt.batch_capacity, " tokens cannot hold one token of each of ", opt.slots,
         " slots: use fewer slots (-np)");
  slots_.resize(static_cast<size_t>(opt.slots));
  for (int i = 0; i < opt.slots; ++i) slots_[static_cast<size_t>(i)].seq = i;
  thread_ = std::thread([this] { loop(); });
}

SlotScheduler::~SlotScheduler() { stop(); }

bool SlotScheduler::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(m_);
    if (stopping_) return false;
    // A job waits only while every slot is taken: a free slot takes it at the next step.
    if (static_cast<int>(queue_.size()) + taken_ >= opt_.max_queue + opt_.slots) return false;
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
  return true;
}

void SlotScheduler::stop() {
  std::lock_guard<std::mutex> one_at_a_time(stop_m_);  // the signal watcher and the main thread may both stop it
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard<std::mutex> lock(m_);
    stopping_ = true;  // the thread ends its running jobs as cancelled after its current step
    dropped.swap(queue_);
  }
  cv_.notify_all();
  for (auto& job : dropped) job->fail(503, "the server is stopping");
  if (thread_.joinable()) thread_.join();
}

int SlotScheduler::queued() const {
  std::lock_guard<std::mutex> lock(m_);
  return static_cast<int>(queue_.size());
}

int SlotScheduler::running() const {
  std::lock_guard<std::mutex> lock(m_);
  return taken_;
}

bool SlotScheduler::wait_for_work(std::vector<std::shared_ptr<Job>>& joining) {
  std::unique_lock<std::mutex> lock(m_);
  const auto work = [&] { return stopping_ || !queue_.empty() || taken_ > 0; };
  if (residency_.idle && residency_.keep_alive_s >= 0 && !idle_told_) {
    const auto keep = std::chrono::duration<double>(residency_.keep_alive_s);
    if (!cv_.wait_for(lock, keep, work)) {  // nothing came: tell the model, then wait on
      lock.unlock();
      residency_.idle();
      idle_told_ = true;
      lock.lock();
    }
  }
  cv_.wait(lock, work);
  if (stopping_) return false;
  while (!queue_.empty() && taken_ < opt_.slots) {
    joining.push_back(std::move(queue_.front()));
    queue_.pop_front();
    ++taken_;
  }
  idle_told_ = false;
  return true;
}

bool SlotScheduler::engine_ready(std::vector<std::shared_ptr<Job>>& joining) {
  if (!residency_.ensure_loaded) return true;
  try {
    if (residency_.ensure_loaded())
      for (Slot& s : slots_) s.cached.clear();  // a fresh engine: every region empty
    return true;
  } catch (const std::exception& e) {
    log_warn("serve: could not load the model for ", joining.size(), " request(s): ", e.what());
    for (auto& job : joining) {
      release();
      job->fail(503, cat("the model could not be loaded: ", e.what()));
    }
    joining.clear();
    return false;
  }
}

void SlotScheduler::loop() {
  for (;;) {
    std::vector<std::shared_ptr<Job>> joining;
    if (!wait_for_work(joining)) break;
    if (!engine_ready(joining)) continue;
    for (auto& job : joining) start(std::move(job));
    try {
      step();
    } catch (const std::exception& e) {  // not the engine's (step catches those): fail what runs, keep serving
      log_warn("serve: scheduler step failed: ", e.what());
      for (Slot& s : slots_)
        if (s.job) {
          s.cached.clear();
          free_slot(s)->fail(500, e.what());
        }
    }
  }
  for (Slot& s : slots_)
    if (s.job) {
      s.job->cancel();
      s.gen->cancel();
      end(s);
    }
}

void SlotScheduler::release() {
  std::lock_guard<std::mutex> lock(m_);
  --taken_;
}

// The free slot whose cache shares the longest prefix with the prompt. A prefix of one token
// (a BOS every prompt begins with) is not worth another request's cache: then, and among equals,
// the least recently used slot. At least the prompt's last token is always fed: its logits are
// the ones sampled.
SlotScheduler::Slot& SlotScheduler::slot_for(const std::vector<int>& prompt) {
  Slot* best = nullptr;
  size_t best_same = 0;
  for (Slot& s : slots_) {
    if (s.job) continue;
    size_t same = 0;
    while (same < s.cached.size() && same + 1 < prompt.size() && s.cached[same] == prompt[same]) ++same;
    if (same < 2) same = 0;
    if (!best || same > best_same || (same == best_same && s.order < best->order)) {
      best = &s;
      best_same = same;
    }
  }
  if (!best) fail("scheduler: no free slot for a job it took (a bug: taken_ disagrees with the slots)");
  // What it shares, the ignored single token included.
  size_t keep = 0;
  while (keep < best->cached.size() && keep + 1 < prompt.size() && best->cached[keep] == prompt[keep]) ++keep;
  best->cached.resize(keep);
  return *best;
}

void SlotScheduler::start(std::shared_ptr<Job> job) {
  job->mark_started();
  if (job->cancelled()) {  // the client left while it waited
    GenerationOutput none;
    none.finish = FinishReason::cancelled;
    release();
    if (on_done_) on_done_(none, job->queue_ms());
    job->finish(none);
    return;
  }
  const int n_prompt = static_cast<int>(job->input().prompt.size());
  if (n_prompt == 0 || n_prompt > opt_.context) {  // the route checks first
    release();
    job->fail(500, cat("the prompt is ", n_prompt, " tokens; a prompt needs 1 to ", opt_.context, " (a slot's context)"));
    return;
  }
  Slot& s = slot_for(job->input().prompt);
  s.reused = s.fed = static_cast<int>(s.cached.size());
  s.next_token = -1;
  s.order = ++jobs_taken_;
  Job* j = job.get();
  s.gen = std::make_unique<Generation>(job->input(), tok_, n_sample_, [j](const std::string& t) { j->push_text(t); });
  s.job = std::move(job);
}

// The slot is free (and the job counted) before the client hears of the end, so that what it
// reads next (the gauges, the metrics) already tells of it.
void SlotScheduler::end(Slot& s) {
  GenerationOutput out = s.gen->output();
  out.prompt_tokens = static_cast<int>(s.job->input().prompt.size());
  out.reused_tokens = s.reused;
  const std::shared_ptr<Job> job = free_slot(s);
  if (on_done_) on_done_(out, job->queue_ms());
  job->finish(out);
}

std::shared_ptr<Job> SlotScheduler::free_slot(Slot& s) {
  s.gen.reset();  // it refers to the job's input
  std::shared_ptr<Job> job = std::move(s.job);
  s.job.reset();
  s.next_token = -1;
  release();
  return job;
}

void SlotScheduler::step() {
  for (Slot& s : slots_)
    if (s.job && s.job->cancelled()) {  // the client left: free the slot before computing for it
      s.gen->cancel();
      end(s);
    }
  std::vector<Slot*> prompting;
  bool decoding = false;
  for (Slot& s : slots_) {
    if (!s.job) continue;
    if (s.next_token >= 0) decoding = true;
    else prompting.push_back(&s);
  }
  if (!decoding && prompting.empty()) return;
  if (opt_.token_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(opt_.token_delay_ms));

  // The batch: a token for each generating slot, then prompt chunks, oldest job first.
  batch_tokens_.clear();
  batch_segs_.clear();
  batch_slots_.clear();
  int room = opt_.batch_capacity;
  auto add = [&](Slot& s, const int* tokens, int n) {
    batch_segs_.push_back({s.seq, static_cast<int>(s.cached.size()), n});
    batch_tokens_.insert(batch_tokens_.end(), tokens, tokens + n);
    batch_slots_.push_back(&s);
    room -= n;
  };
  for (Slot& s : slots_)
    if (s.job && s.next_token >= 0) add(s, &s.next_token, 1);
  std::sort(prompting.begin(), prompting.end(), [](const Slot* a, const Slot* b) { return a->order < b->order; });
  for (Slot* s : prompting) {
    if (room == 0) break;
    const std::vector<int>& prompt = s->job->input().prompt;
    int n = std::min(static_cast<int>(prompt.size()) - s->fed, room);
    if (decoding) n = std::min(n, opt_.chunk);
    add(*s, prompt.data() + s->fed, n);
  }

  const int n_segs = static_cast<int>(batch_segs_.size());
  Timer timer;
  const float* logits = nullptr;
  try {
    logits = forward_(batch_tokens_.data(), batch_segs_.data(), n_segs);
  } catch (const std::exception& e) {
    log_warn("serve: a batch of ", n_segs, " requests failed: ", e.what());
    for (int i = 0; i < n_segs; ++i) {
      Slot& s = *batch_slots_[static_cast<size_t>(i)];
      s.cached.resize(static_cast<size_t>(batch_segs_[static_cast<size_t>(i)].pos));  // what the engine kept
      free_slot(s)->fail(500, e.what());
    }
    return;
  }
  const double ms = timer.ms();

  // Each segment's row: sample where it decoded a token or finished its prompt.
  sampling_slots_.clear();
  sampling_rows_.clear();
  size_t at = 0;
  for (int i = 0; i < n_segs; ++i) {
    const BatchSegment& seg = batch_segs_[static_cast<size_t>(i)];
    Slot& s = *batch_slots_[static_cast<size_t>(i)];
    s.cached.insert(s.cached.end(), batch_tokens_.begin() + static_cast<long>(at),
                    batch_tokens_.begin() + static_cast<long>(at + static_cast<size_t>(seg.n)));
    at += static_cast<size_t>(seg.n);
    if (s.next_token >= 0) {
      s.gen->output().decode_ms += ms;
      ++s.gen->output().n_decode;
    } else {
      s.fed += seg.n;
      if (s.fed < static_cast<int>(s.job->input().prompt.size())) continue;  // more prompt to read first
    }
    sampling_slots_.push_back(&s);
    sampling_rows_.push_back(logits + static_cast<size_t>(i) * static_cast<size_t>(opt_.n_vocab));
  }
  sampled_.resize(sampling_slots_.size());
  sampling_pool_.parallel_for(sampling_slots_.size(),
                              [&](size_t k) { sampled_[k] = sampling_slots_[k]->gen->sample(sampling_rows_[k]); });
  for (size_t k = 0; k < sampling_slots_.size(); ++k) {
    Slot& s = *sampling_slots_[k];
    s.next_token = s.gen->next(sampled_[k], static_cast<int>(s.cached.size()) < opt_.context);
    if (s.next_token < 0) end(s);
  }
}

}  // namespace cllm::server
