// The CPU engine on the weights' own dtype: a bf16 (or f16) model's matrices stay bf16 in host
// memory and every product reads them in place (cpu_kernels_bf16.h), as the hybrid plans' CPU
// layers do; so a token reads half the bytes of the fp32 reference (forward_cpu.h) and the model
// takes half the memory. Layers run through CpuLayerForward (cpu_layer.h): the GPU engine's
// numerics (products of inputs rounded to the weights' dtype, fp32 accumulation, an f16 KV
// cache), row by row, so results depend neither on batching nor on the thread count. The
// classifier's input is rounded to its dtype as well; token_embd rows are widened to fp32 exactly.
#pragma once

#include <vector>

#include "common/thread_pool.h"
#include "format/cllm_reader.h"
#include "model/architecture.h"
#include "model/cpu_engine.h"
#include "model/cpu_layer.h"

namespace cllm {

class CpuNativeForward : public CpuEngine {
 public:
  // Decodes f's tensors in their stored dtypes on opt.threads threads. Throws naming the file
  // and tensor when one is missing, of the wrong shape, not a float type, or when the linear
  // layers are not all bf16 or all f16 (native_linear_dtype).
  CpuNativeForward(const CllmFile& f, const CpuForwardOptions& opt);

  const LlamaConfig& config() const override { return c_; }
  int context() const override { return context_; }
  int sequences() const override { return sequences_; }
  int batch_capacity() const override { return max_batch_; }
  int threads() const override { return pool_.size(); }
  const char* arithmetic() const override;
  const float* forward(const int* tokens, int n, int pos) override;
  const float* forward_batch(const int* tokens, const BatchSegment* segs, int n_segs) override;

 private:
  struct Tensor {
    std::vector<uint8_t> bytes;  // the stored dtype's elements
    DType dtype = DType::F32;
    CpuTensor view() const { return {bytes.data(), dtype}; }
  };
  // The batch's rows (at most max_batch_) through every layer; with logits, those of each
  // segment's last row into logits_ (n_segs rows).
  void run_rows(const int* tokens, const BatchSegment* segs, int n_segs, bool logits);
  void classify(int rows);  // logits_ (rows, vocab) from xn_'s rows

  LlamaConfig c_;
  const Architecture& arch_;
  int context_ = 0, sequences_ = 1, max_batch_ = 16;
  ThreadPool pool_;
  Tensor token_embd_, output_norm_, output_;  // output_ empty when the embeddings are tied
  std::vector<std::vector<Tensor>> layer_tensors_;  // [layer][role]
  std::vector<CpuLayerWeights> layers_;
  std::vector<CpuKvCache> kv_;  // one per sequence, every layer
  CpuLayerForward layer_;
  std::vector<float> x_, xn_, norm_, logits_;
  std::vector<CpuLayerSegment> segs_;  // a batch's segments in one layer's caches
};

// The dtype all of f's linear layers share when it is BF16 or F16 (the native engine runs them);
// F32 otherwise: f32 layers, or dtypes that differ between layers or tensors.
DType native_linear_dtype(const CllmFile& f);

}  // namespace cllm
