// What run, serve and bench call on the CPU, whichever engine computes: forward_cpu.h's fp32
// reference (every weight decoded to fp32), or forward_cpu_native.h's on the weights' own bf16
// or f16 read in place. make_cpu_engine picks.
#pragma once

#include <memory>

#include "format/cllm_reader.h"
#include "model/batch.h"
#include "model/llama_config.h"

namespace cllm {

struct CpuForwardOptions {
  int context = 0;      // KV cache positions; 0 = min(the model's context, 4096)
  int threads = 1;      // worker threads, counting the caller
  int max_batch = 64;   // tokens per batch in prompt processing
  int sequences = 1;    // KV cache regions of `context` positions each (model/batch.h)
};

class CpuEngine {
 public:
  virtual ~CpuEngine() = default;
  virtual const LlamaConfig& config() const = 0;
  virtual int context() const = 0;         // positions per sequence
  virtual int sequences() const = 0;
  virtual int batch_capacity() const = 0;  // most tokens one forward_batch may hold
  virtual int threads() const = 0;
  // "fp32" or "bf16 weights" (the weights' dtype, read in place): for run's device line.
  virtual const char* arithmetic() const = 0;
  // Tokens[0..n) at positions pos .. pos+n-1 of sequence 0 (earlier positions already in the
  // cache); the last token's logits (vocab floats), valid until the next call.
  virtual const float* forward(const int* tokens, int n, int pos) = 0;
  // model/batch.h's BatchForwardFn: (n_segs, vocab) logits, row i after segment i's last token.
  virtual const float* forward_batch(const int* tokens, const BatchSegment* segs, int n_segs) = 0;
};

// The CPU engine for f's model: on bf16 or f16 linear layers the native one (half the memory of
// fp32, the GPU's numerics: products of inputs rounded to the weights' dtype, an f16 KV cache);
// else (f32 models, or linear layers of mixed dtypes) the fp32 reference. Decodes every tensor
// on `threads` threads.
std::unique_ptr<CpuEngine> make_cpu_engine(const CllmFile& f, const CpuForwardOptions& opt);

}  // namespace cllm
