#include "server/model_set.h"

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

void ModelSet::stop_schedulers() {
  for (ServedModel* m : all()) m->scheduler().stop();
}

}  // namespace cllm::server
