#include "model/batch.h"

#include <vector>

#include "common/error.h"

namespace cllm {

int check_batch(const int* tokens, const BatchSegment* segs, int n_segs, int sequences, int context, int capacity,
                int vocab) {
  if (n_segs < 1 || !segs) fail("forward_batch: no segments");
  std::vector<int> seen(sequences, -1);  // per sequence: the segment that names it
  long total = 0;
  for (int i = 0; i < n_segs; ++i) {
    const BatchSegment& s = segs[i];
    if (s.seq < 0 || s.seq >= sequences)
      fail("forward_batch: segment ", i, " names sequence ", s.seq, ", the engine holds sequences 0..",
           sequences - 1);
    if (seen[s.seq] >= 0)
      fail("forward_batch: segment ", i, " names sequence ", s.seq, " again (segment ", seen[s.seq],
           " has it): a sequence appears at most once per batch");
    seen[s.seq] = i;
    if (s.n < 1) fail("forward_batch: segment ", i, " (sequence ", s.seq, ") has ", s.n, " tokens, expected >= 1");
    if (s.pos < 0 || s.pos > context - s.n)
      fail("forward_batch: segment ", i, " (sequence ", s.seq, "): positions ", s.pos, "..", long{s.pos} + s.n - 1,
           " do not fit the context of ", context, " tokens per sequence");
    total += s.n;
  }
  if (total > capacity)
    fail("forward_batch: ", total, " tokens in ", n_segs, " segments, more than the batch capacity of ", capacity,
         " tokens");
  if (!tokens) fail("forward_batch: no token array");
  for (int i = 0, at = 0; i < n_segs; at += segs[i].n, ++i)
    for (int t = at; t < at + segs[i].n; ++t)
      if (tokens[t] < 0 || tokens[t] >= vocab)
        fail("forward_batch: segment ", i, " (sequence ", segs[i].seq, "): token id ", tokens[t],
             " out of range (vocabulary of ", vocab, ")");
  return static_cast<int>(total);
}

}  // namespace cllm
