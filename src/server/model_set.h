// The models a server holds, filled while it already listens (so /health can say "loading"),
// read by every HTTP thread. Models are never removed before the server stops, so the pointers
// find() gives stay valid.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "server/served_model.h"

namespace cllm::server {

class ModelSet {
 public:
  void add(std::unique_ptr<ServedModel> m);
  ServedModel* find(const std::string& id) const;  // nullptr when none has this id
  ServedModel* only() const;                        // the one model; nullptr when there are several
  std::vector<ServedModel*> all() const;
  std::string ids() const;                          // "a, b" for messages

  void set_ready() { ready_ = true; }               // every model given on the command line is loaded
  bool ready() const { return ready_; }
  void stop_schedulers();                              // cancels and fails every job (shutdown)
  // ModelOptions::make_room: parks the idle loaded model, other than `asking`, used least
  // recently; false when no other model can be parked now.
  bool make_room(const ServedModel& asking) const;
  // ModelOptions::vram_of_others: the VRAM the loaded models other than `asking` planned.
  uint64_t vram_of_others(const ServedModel& asking) const;

 private:
  mutable std::mutex m_;
  std::vector<std::unique_ptr<ServedModel>> models_;
  std::atomic<bool> ready_{false};
};

}  // namespace cllm::server
