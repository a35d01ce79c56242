#include "model/sampler.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace cllm {

namespace sampling {

void apply_repeat_penalty(float* logits, int n_vocab, const std::vector<int>& history, float penalty) {
  if (penalty == 1.0f || history.empty()) return;
  std::vector<int> seen(history);
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  for (int id : seen) {
    if (id < 0 || id >= n_vocab) continue;
    float& l = logits[id];
    l = l > 0.0f ? l / penalty : l * penalty;
  }
}

int argmax(const float* logits, int n_vocab) {
  int best = 0;
  for (int i = 1; i < n_vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

namespace {
bool higher(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}
}  // namespace

void top_k(std::vector<Candidate>& c, int k) {
  if (k <= 0 || static_cast<size_t>(k) >= c.size()) {
    std::sort(c.begin(), c.end(), higher);
    return;
  }
  std::partial_sort(c.begin(), c.begin() + k, c.end(), higher);
  c.resize(k);
}

std::vector<float> probabilities(const std::vector<Candidate>& c, float temp) {
  std::vector<float> p(c.size());
  if (c.empty()) return p;
  // (logit - max) / temp, not logit / temp - max / temp: with a tiny temperature logit / temp
  // overflows to inf and inf - inf is NaN, where the difference gives exp(-inf) = 0.
  float max_l = -INFINITY;
  for (const auto& x : c) max_l = std::max(max_l, x.logit);
  double sum = 0.0;
  for (size_t i = 0; i < c.size(); ++i) {
    p[i] = std::exp((c[i].logit - max_l) / temp);
    sum += p[i];
  }
  for (auto& x : p) x = static_cast<float>(x / sum);
  return p;
}

void top_p(std::vector<Candidate>& c, float p) {
  if (p >= 1.0f || c.size() <= 1) return;
  const auto prob = probabilities(c, 1.0f);
  double cum = 0.0;
  for (size_t i = 0; i < c.size(); ++i) {
    cum += prob[i];
    if (cum >= p) {
      c.resize(i + 1);
      return;
    }
  }
}

void min_p(std::vector<Candidate>& c, float min_p) {
  if (min_p <= 0.0f || c.size() <= 1) return;
  // p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p)
  const float threshold = c[0].logit + std::log(min_p);
  size_t keep = 1;
  while (keep < c.size() && c[keep].logit >= threshold) ++keep;
  c.resize(keep);
}

}  // namespace sampling

Sampler::Sampler(const SamplerParams& p) : p_(p) {
  if (p.seed < -1 || p.seed > static_cast<int64_t>(UINT32_MAX))
    fail("seed ", p.seed, " out of range (-1 for random, or 0 .. ", UINT32_MAX, ")");
  seed_ = p.seed == -1 ? std::random_device{}() : static_cast<uint32_t>(p.seed);
  rng_.seed(seed_);
}

void Sampler::accept(int token) {
  if (p_.repeat_last_n == 0) return;
  history_.push_back(token);
  if (p_.repeat_last_n > 0 && history_.size() > static_cast<size_t>(p_.repeat_last_n)) history_.pop_front();
}

int Sampler::sample(const float* logits, int n_vocab) {
  if (n_vocab < 1) fail("sample: empty vocabulary");
  work_.assign(logits, logits + n_vocab);
  // repeat penalty on the recent history
  sampling::apply_repeat_penalty(work_.data(), n_vocab, std::vector<int>(history_.begin(), history_.end()),
                                 p_.repeat_penalty);
  if (p_.temp <= 0.0f) return sampling::argmax(work_.data(), n_vocab);

  // top-k, top-p, min-p on the sorted candidates
  cand_.resize(n_vocab);
  for (int i = 0; i < n_vocab; ++i) cand_[i] = {i, work_[i]};
  sampling::top_k(cand_, p_.top_k);
  sampling::top_p(cand_, p_.top_p);
  sampling::min_p(cand_, p_.min_p);
  // temperature, then one draw from the distribution that is left
  const auto prob = sampling::probabilities(cand_, p_.temp);
  const double u = static_cast<double>(rng_()) * (1.0 / 4294967296.0);  // [0, 1)
  double cum = 0.0;
  for (size_t i = 0; i < cand_.size(); ++i) {
    cum += prob[i];
    if (u < cum) return cand_[i].id;
  }
  return cand_.back().id;  // u landed in the rounding gap at the top
}

}  // namespace cllm
