// A batch of several sequences' tokens for one forward pass (continuous batching, issue #18):
// the engine keeps one KV cache region per sequence and runs every segment's tokens through
// the layers together (one product per weight for the whole batch), each segment attending to
// its own sequence's cache at its own depth.
//
//   tokens: the segments' tokens concatenated in segment order (sum of n entries)
//   segs:   n_segs segments; a sequence appears at most once per batch
//   result: (n_segs, vocab) logits, row i = the logits after segment i's last token
#pragma once

#include <functional>

namespace cllm {

struct BatchSegment {
  int seq = 0;  // the sequence: its KV cache region, 0 .. sequences-1
  int pos = 0;  // position of the segment's first token; positions 0 .. pos-1 of seq are in its cache
  int n = 0;    // tokens (>= 1), taken in order from the batch's token array
};

// Runs one batch as above; the returned rows stay valid until the next call. Throws (and
// leaves every sequence's cache as it was before the call for positions < each segment's pos)
// when a segment passes its sequence's context, names a sequence twice or out of range, or the
// batch holds more tokens than the engine's batch capacity.
using BatchForwardFn = std::function<const float*(const int* tokens, const BatchSegment* segs, int n_segs)>;

// What every engine's forward_batch checks before it touches a cache: at least one segment,
// each naming a sequence in [0, sequences) once, with n >= 1 tokens at positions that fit
// `context` (per sequence), at most `capacity` tokens in all, every token id below `vocab`.
// Returns the batch's token count; throws naming the segment and what was expected otherwise.
int check_batch(const int* tokens, const BatchSegment* segs, int n_segs, int sequences, int context, int capacity,
                int vocab);

}  // namespace cllm
