#include "model/cpu_engine.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "common/error.h"
#include "common/thread_pool.h"
#include "model/forward_cpu.h"
#include "model/forward_cpu_native.h"
#include "model/llama_weights.h"

namespace cllm {

namespace {

// The fp32 reference with the weights it reads.
class ReferenceEngine final : public CpuEngine {
 public:
  ReferenceEngine(LlamaWeights w, const CpuForwardOptions& opt) : w_(std::move(w)), f_(w_, opt) {}
  const LlamaConfig& config() const override { return f_.config(); }
  int context() const override { return f_.context(); }
  int sequences() const override { return f_.sequences(); }
  int batch_capacity() const override { return f_.batch_capacity(); }
  int threads() const override { return f_.threads(); }
  const char* arithmetic() const override { return f_.arithmetic(); }
  const float* forward(const int* tokens, int n, int pos) override { return f_.forward(tokens, n, pos); }
  const float* forward_batch(const int* tokens, const BatchSegment* segs, int n_segs) override {
    return f_.forward_batch(tokens, segs, n_segs);
  }

 private:
  LlamaWeights w_;
  CpuForward f_;
};

}  // namespace

std::unique_ptr<CpuEngine> make_cpu_engine(const CllmFile& f, const CpuForwardOptions& opt) {
  // CLLM_CPU_ENGINE=fp32 keeps the reference on every model (for A/B runs)
  const char* env = std::getenv("CLLM_CPU_ENGINE");
  const bool reference = env && std::strcmp(env, "fp32") == 0;
  if (env && *env && !reference && std::strcmp(env, "native") != 0)
    fail("CLLM_CPU_ENGINE=", env, ": expected fp32 or native");
  if (!reference && native_linear_dtype(f) != DType::F32) return std::make_unique<CpuNativeForward>(f, opt);
  ThreadPool pool(std::max(1, opt.threads));
  return std::make_unique<ReferenceEngine>(load_llama_weights(f, &pool), opt);
}

}  // namespace cllm
