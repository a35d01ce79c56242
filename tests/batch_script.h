// A continuous-batching workload for the engines' forward_batch tests (test-batch.cpp on the
// CPU, test-gpu-engine.cpp on the GPU): sequences join at different steps with prompts of
// different lengths, fed in chunks beside other sequences' single decode tokens, and continue
// greedily; every segment a sequence ran and the logits it got are recorded, so that each
// sequence can be replayed alone through forward(tokens, n, pos) and compared.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "model/batch.h"
#include "model/generate.h"

namespace cllm::test {

struct ScriptSegment {
  std::vector<int> tokens;
  int pos = 0;
  std::vector<float> logits;  // (vocab): after the segment's last token
};

struct ScriptSequence {
  std::vector<int> prompt;
  int start_step = 0;  // the batch it joins at
  int chunk = 1;       // most prompt tokens per batch
  int decode = 0;      // greedy tokens to run after the prompt
  std::vector<ScriptSegment> ran;
};

// Runs the sequences (sequence i on cache region seq_base + i) through fwd in batches of at
// most `capacity` tokens until each has run its prompt and its decode tokens. Segments are
// listed in a rotating order of sequences, so that neither the region nor the segment index
// follows the sequence's number. Returns the number of batches run.
inline int run_batch_script(const BatchForwardFn& fwd, std::vector<ScriptSequence>& seqs, int vocab, int capacity,
                            int seq_base = 0) {
  const int n_seq = static_cast<int>(seqs.size());
  std::vector<int> fed(n_seq, 0), decoded(n_seq, 0), next(n_seq, -1);
  int step = 0;
  for (;; ++step) {
    std::vector<int> tokens, who;
    std::vector<BatchSegment> segs;
    for (int k = 0; k < n_seq; ++k) {
      const int i = (k + step) % n_seq;
      ScriptSequence& s = seqs[i];
      const int room = capacity - static_cast<int>(tokens.size());
      if (step < s.start_step || room <= 0) continue;
      const int left = static_cast<int>(s.prompt.size()) - fed[i];
      int n = 0;
      if (left > 0) {
        n = std::min({left, s.chunk, room});
        tokens.insert(tokens.end(), s.prompt.begin() + fed[i], s.prompt.begin() + fed[i] + n);
      } else if (decoded[i] < s.decode) {
        n = 1;
        tokens.push_back(next[i]);
      }
      if (n == 0) continue;
      segs.push_back({seq_base + i, fed[i], n});
      who.push_back(i);
    }
    bool done = true;
    for (int i = 0; i < n_seq; ++i) done = done && fed[i] >= static_cast<int>(seqs[i].prompt.size()) && decoded[i] == seqs[i].decode;
    if (segs.empty() && done) break;
    if (segs.empty()) continue;  // some sequence has not joined yet
    const float* logits = fwd(tokens.data(), segs.data(), static_cast<int>(segs.size()));
    for (size_t j = 0, at = 0; j < segs.size(); at += segs[j].n, ++j) {
      const int i = who[j];
      const float* row = logits + j * static_cast<size_t>(vocab);
      ScriptSegment rec;
      rec.tokens.assign(tokens.begin() + at, tokens.begin() + at + segs[j].n);
      rec.pos = segs[j].pos;
      rec.logits.assign(row, row + vocab);
      seqs[i].ran.push_back(std::move(rec));
      if (fed[i] >= static_cast<int>(seqs[i].prompt.size())) ++decoded[i];
      fed[i] += segs[j].n;
      next[i] = static_cast<int>(std::max_element(row, row + vocab) - row);
    }
  }
  return step;
}

// Sequence s's segments replayed alone (the same segments at the same positions) through fwd
// on a fresh cache; calls check(segment index, recorded logits, logits alone).
template <class Check>
void replay_alone(const ForwardFn& fwd, const ScriptSequence& s, const Check& check) {
  for (size_t j = 0; j < s.ran.size(); ++j) {
    const ScriptSegment& seg = s.ran[j];
    const float* alone = fwd(seg.tokens.data(), static_cast<int>(seg.tokens.size()), seg.pos);
    check(j, seg.logits.data(), alone);
  }
}

// Four sequences for a model of `vocab` tokens: prompts of 13, 5, 21 and 2 tokens joining at
// batches 0, 0, 2 and 3, fed 7, 3, 8 and 2 tokens at a time, then 6 to 9 greedy tokens each;
// the deepest reaches position 29.
inline std::vector<ScriptSequence> four_sequences(int vocab) {
  const int lengths[4] = {13, 5, 21, 2}, starts[4] = {0, 0, 2, 3}, chunks[4] = {7, 3, 8, 2}, decode[4] = {6, 9, 8, 7};
  std::vector<ScriptSequence> seqs(4);
  for (int i = 0; i < 4; ++i) {
    for (int t = 0; t < lengths[i]; ++t) seqs[i].prompt.push_back(1 + (37 * i + 101 * t) % (vocab - 1));
    seqs[i].start_step = starts[i];
    seqs[i].chunk = chunks[i];
    seqs[i].decode = decode[i];
  }
  return seqs;
}

}  // namespace cllm::test
