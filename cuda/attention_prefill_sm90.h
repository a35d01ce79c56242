// Flash attention for prompts on Hopper's warpgroup tensor cores (attention_prefill_sm90.cu),
// built only when the CUDA architectures include 9.0 (CLLM_HAVE_SM90A): prompt variant 8 of
// attention_prefill.cu, which takes the mma.sync kernel on any other device.
#pragma once

#include <cuda_runtime.h>

#include "common/dtype.h"

namespace cllm::cuda {

// Whether this device runs sm_90a code (compute capability 9.0: H100, H200).
bool attention_prefill_wgmma_supported();
// As attention_prefill_f16 without split keys: f16 caches, head_dim 64 or 128, checked by the
// caller. pipelined: each tile's softmax runs beside the previous tile's P V, else after it.
void attention_prefill_wgmma(bool pipelined, const float* q, const void* k_cache, const void* v_cache, void* out,
                             DType out_dt, int n, int pos, int n_heads, int n_kv_heads, int head_dim, int window,
                             cudaStream_t s);

}  // namespace cllm::cuda
