// Flash attention for prompts on Hopper's warpgroup tensor cores (attention_prefill_sm90.cu),
// built only when the CUDA architectures include 9.0 (CLLM_HAVE_SM90A): prompt variants 8 to 14 of
// attention_prefill.cu, which takes the mma.sync kernel on any other device.
#pragma once

#include <cuda_runtime.h>

#include "common/dtype.h"

namespace cllm::cuda {

// Whether this device runs sm_90a code (compute capability 9.0: H100, H200).
bool attention_prefill_wgmma_supported();
// The kernel's forms: the three steps of a tile one after another (two stages of tiles), or a
// tile's softmax beside the previous tile's P V (three stages, tiles loaded two ahead after a
// second barrier a tile); lean: that, with S overwritten by its first wgmma and O's rescale
// skipped where no row's max moved (the same bits); and lean with tiles loaded one ahead after
// the tile's only barrier; producer: two pipelined warpgroups (128 rows) fed by a producer warp's
// TMA copies through four stages, taking turns on the tensor cores (FlashAttention-3's block);
// and that, lean.
constexpr int kWgmmaSerial = 0, kWgmmaPipelined = 1, kWgmmaLean = 2, kWgmmaLeanOneBarrier = 3, kWgmmaProducer = 4,
              kWgmmaProducerLean = 5;

// As attention_prefill_f16 without split keys: f16 caches, head_dim 64 or 128, checked by the
// caller. warpgroups: 1 (64 query rows a block), or 2 (128 rows sharing each K and V tile;
// kWgmmaPipelined only; the producer forms always have 2).
void attention_prefill_wgmma(int form, int warpgroups, const float* q, const void* k_cache, const void* v_cache,
                             void* out, DType out_dt, int n, int pos, int n_heads, int n_kv_heads, int head_dim,
                             int window, cudaStream_t s);

}  // namespace cllm::cuda
