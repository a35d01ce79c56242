#include "server/model_set.h"

#include <algorithm>

#include "common/error.h"

namespace cllm::server {

void ModelSet::add(std::unique_ptr<ServedModel> m) {
  std::lock_guard<std::mutex> lock(m_);
  models_.push_back(std::move(m));
}

ServedModel* ModelSet::find(const std::string& id) const {
  std::lock_guard<std::mutex> lock(m_);
  for (const auto& m : models_)
    if (m->id() == id) return m.get();
  return nullptr;
}

ServedModel* ModelSet::only() const {
  std::lock_guard<std::mutex> lock(m_);
  return models_.size() == 1 ? models_.front().get() : nullptr;
}

std::vector<ServedModel*> ModelSet::all() const {
  std::lock_guard<std::mutex> lock(m_);
  std::vector<ServedModel*> out;
  for (const auto& m : models_) out.push_back(m.get());
  return out;
}

std::string ModelSet::ids() const {
  std::string out;
  for (const ServedModel* m : all()) out += (out.empty() ? "" : ", ") + m->id();
  return out;
}

bool ModelSet::make_room(const ServedModel& asking) const {
  std::vector<ServedModel*> others;
  for (ServedModel* m : all())
    if (m != &asking && m->residency().loaded) others.push_back(m);
  std::sort(others.begin(), others.end(),
            [](const ServedModel* a, const ServedModel* b) { return a->last_used() < b->last_used(); });
  for (ServedModel* m : others)
    if (m->park_if_idle(cat("to make room for '", asking.id(), "'"))) return true;
  return false;
}

uint64_t ModelSet::vram_of_others(const ServedModel& asking) const {
  uint64_t sum = 0;
  for (const ServedModel* m : all())
    if (m != &asking) sum += m->vram_planned();
  return sum;
}

void ModelSet::stop_schedulers() {
  for (ServedModel* m : all()) m->scheduler().stop();
}

}  // namespace cllm::server
