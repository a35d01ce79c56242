// Picks the next token from logits. temp <= 0 is greedy (argmax, lowest id on ties, after
// the repeat penalty); otherwise llama.cpp's default chain, in its order:
//   repeat penalty -> top-k -> top-p -> min-p -> temperature -> draw (seeded std::mt19937).
// Deterministic for a fixed seed.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <vector>

namespace cllm {

struct SamplerParams {
  float temp = 0.8f;
  int top_k = 40;               // <= 0: off
  float top_p = 0.95f;          // 1: off
  float min_p = 0.05f;          // 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;       // tokens of history the penalty looks at; 0 off, -1 all
  int64_t seed = -1;            // -1: a random seed (see Sampler::seed())
};

// The stages, on a candidate list; exposed for tests.
namespace sampling {

struct Candidate {
  int id;
  float logit;
};

// llama.cpp's repeat penalty: every distinct token of history gets logit / penalty when its
// logit is > 0, logit * penalty otherwise.
void apply_repeat_penalty(float* logits, int n_vocab, const std::vector<int>& history, float penalty);
// Greedy: the highest logit, the lowest id among equals.
int argmax(const float* logits, int n_vocab);
// Sorts by logit, highest first (ties: lower id first), and keeps the k best (k <= 0: all).
void top_k(std::vector<Candidate>& c, int k);
// c sorted: keeps the shortest prefix whose softmax probability reaches p (at least one).
void top_p(std::vector<Candidate>& c, float p);
// c sorted: keeps the candidates with probability >= min_p x the top one's (at least one).
void min_p(std::vector<Candidate>& c, float min_p);
// softmax(logit / temp) of the candidates, in their order.
std::vector<float> probabilities(const std::vector<Candidate>& c, float temp);

}  // namespace sampling

class Sampler {
 public:
  explicit Sampler(const SamplerParams& p);

  uint32_t seed() const { return seed_; }  // the seed actually used
  const SamplerParams& params() const { return p_; }

  // Adds a token to the history the repeat penalty looks at (prompt and generated tokens).
  void accept(int token);
  // The next token for these logits (not modified).
  int sample(const float* logits, int n_vocab);

 private:
  SamplerParams p_;
  uint32_t seed_ = 0;
  std::mt19937 rng_;
  std::deque<int> history_;
  std::vector<float> work_;
  std::vector<sampling::Candidate> cand_;
};

}  // namespace cllm
