// Fused mode's store (docs/architecture.md "Mode 3: fused"): each step's bf16 matrices live in
// VRAM in the fused layout (docs/codec.md), made on the GPU at load from the container's rANS
// tiles: the step is decoded into a slot by the rANS decoder, as full mode's load does, then
// cuda/fused_encode writes its matrices' planes and the slot is reused for the next step.
// Norms, biases and tensors of other dtypes stay decoded, as in full mode. token_embd stays
// decoded in pinned host RAM mapped into the device's address space: the gather kernel reads a
// token's row over PCIe (8 KiB for an 8B), so one token's pass is still a CUDA graph, and the
// table's GiB stays out of VRAM (memory_plan.cpp's plan_fused). Where the host refuses to pin
// it, it stays in VRAM as before.
//
// One token's products read the planes (fused()); batches get the step decoded back into a
// slot by the fixed-length decoder (acquire()) and run full mode's products on bytes equal to
// full mode's. There are two slots and a decode stream: while the compute stream runs step i
// out of one slot, step i + 1 is decoded into the other (a prompt's decoding then hides behind
// its GEMMs, which are bound by arithmetic, not by memory). Where the plan has room for one
// slot only, the decode and the GEMMs take turns.
#include <algorithm>
#include <vector>

#include "common/error.h"
#include "cuda/device_buffer.h"
#include "cuda/fused_matvec.h"
#include "cuda/kernels.h"
#include "runtime/decode_plan.h"
#include "runtime/gpu_fused_steps.h"
#include "runtime/gpu_host_memory.h"
#include "runtime/gpu_ring.h"
#include "runtime/gpu_weights.h"

namespace cllm {

namespace {

using cuda::DeviceBuffer;

class FusedStore final : public GpuWeights {
 public:
  FusedStore(const CllmFile& file, const WeightSchedule& s, int slots, cudaStream_t compute);
  ~FusedStore() override;
  const uint8_t* acquire(size_t i) override;
  void release(size_t i) override;
  void embed(const int* tokens, int n, uint8_t* d_rows, float* x) override;
  void embed_from_device(const int* d_tokens, int n, float* x) override;
  // One token's pass reads the planes and the decoded tensors, never the slot, and nothing
  // rewrites them: it may be a CUDA graph with overlapped launches, as in full mode.
  bool fixed() const override { return true; }
  const FusedStepView* fused(size_t i) const override { return steps_.view(i); }
  uint64_t fused_bytes() const override;
  // The batches' slot decodes since the last call: GPU time and bf16 bytes written.
  void collect(GpuStats& stats) override;

 private:
  void load_global(const CllmFile& file);
  void load_layers(const CllmFile& file);
  // Enqueues step i's decode into slot k on the decode stream, after the compute work that
  // last read slot k.
  void decode_into(size_t i, int k);
  // The step a batch is likely to ask for after step i: the next layer, or the next slice of
  // the classifier (a prompt's classifier is usually the one-row fused product: not guessed).
  bool prefetch_worthy(size_t i) const {
    return i + 1 < s_.steps() && i + 1 != s_.layers.size() && steps_.view(i + 1);
  }

  const WeightSchedule& s_;
  cudaStream_t compute_;
  FusedSteps steps_;  // layers, then classifier slices
  // Batches' decoded steps: slot k (< n_slots_) holds step in_slot_[k] (-1: none) once
  // decoded_[k] has fired; read_[k] fires when the compute work that read it has run. slots_[0]
  // is also the load's decode target.
  static constexpr int kSlots = 2;
  int n_slots_ = kSlots;
  DeviceBuffer<uint8_t> slots_[kSlots];
  cudaStream_t decode_ = nullptr;
  cudaEvent_t decoded_[kSlots] = {}, read_[kSlots] = {};
  int64_t in_slot_[kSlots] = {-1, -1};
  int current_ = 0;  // the slot of the step acquired last
  // Each slot decode's start and end on the decode stream, until collect() reads them (at
  // most kTimed between two calls; later decodes go untimed).
  struct DecodeTimes {
    cudaEvent_t start = nullptr, end = nullptr;
    uint64_t bytes = 0;
  };
  static constexpr size_t kTimed = 4096;
  std::vector<DecodeTimes> times_;
  size_t timed_ = 0;
  PinnedBuffer embd_host_;         // token_embd decoded, (vocab, dim), in host RAM the GPU reads
  DeviceBuffer<uint8_t> embd_;     // the same in VRAM, where pinning it failed
  const uint8_t* embd_table_ = nullptr;  // the one of the two that holds it (a device address)
  int dim_ = 0;
};

FusedStore::FusedStore(const CllmFile& file, const WeightSchedule& s, int slots, cudaStream_t compute)
    : s_(s), compute_(compute), steps_(s) {
  CLLM_CHECK(slots == 1 || slots == kSlots, "fused mode's prompts have 1 or 2 slots, not ", slots);
  n_slots_ = slots;
  dim_ = static_cast<int>(s.token_embd->shape.back());
  load_global(file);
  slots_[0].resize(s.slot_bytes);
  load_layers(file);
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));
  if (n_slots_ == 2) slots_[1].resize(s.slot_bytes);
  CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&decode_, cudaStreamNonBlocking));
  for (int k = 0; k < kSlots; ++k) {
    CLLM_CUDA_CHECK(cudaEventCreateWithFlags(&decoded_[k], cudaEventDisableTiming));
    CLLM_CUDA_CHECK(cudaEventCreateWithFlags(&read_[k], cudaEventDisableTiming));
  }
}

FusedStore::~FusedStore() {
  if (decode_) CLLM_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(decode_));
  for (int k = 0; k < kSlots; ++k) {
    if (decoded_[k]) CLLM_CUDA_CHECK_NOTHROW(cudaEventDestroy(decoded_[k]));
    if (read_[k]) CLLM_CUDA_CHECK_NOTHROW(cudaEventDestroy(read_[k]));
  }
  for (const DecodeTimes& t : times_) {
    CLLM_CUDA_CHECK_NOTHROW(cudaEventDestroy(t.start));
    CLLM_CUDA_CHECK_NOTHROW(cudaEventDestroy(t.end));
  }
  if (decode_) CLLM_CUDA_CHECK_NOTHROW(cudaStreamDestroy(decode_));
}

void FusedStore::load_global(const CllmFile& file) {
  // The global group decoded whole, as full mode holds it, for as long as it takes to keep
  // token_embd and make the classifier slices.
  const GroupDecodePlan global = plan_group_decode(file, s_.global_group);
  DeviceBuffer<uint8_t> whole(global.slot_bytes);
  {
    DeviceBuffer<uint8_t> staging(global.src_bytes);
    CLLM_CUDA_CHECK(cudaMemcpy(staging.data(), file.file_data() + global.src_offset, global.src_bytes,
                               cudaMemcpyHostToDevice));
    decode_on_device(staging.data(), whole.data(), global.tiles, global.blocks, compute_, file.path());
  }
  const uint8_t* embd = whole.data() + global.tensors.at(s_.token_embd->name).offset;
  const size_t embd_bytes = s_.token_embd->raw_bytes();
  if (embd_host_.allocate(embd_bytes)) {
    CLLM_CUDA_CHECK(cudaMemcpyAsync(embd_host_.data(), embd, embd_bytes, cudaMemcpyDeviceToHost, compute_));
    embd_table_ = embd_host_.device_data();
  } else {
    embd_.resize(embd_bytes);
    CLLM_CUDA_CHECK(cudaMemcpyAsync(embd_.data(), embd, embd_bytes, cudaMemcpyDeviceToDevice, compute_));
    embd_table_ = embd_.data();
  }
  const uint64_t classifier_at = global.tensors.at(s_.classifier_tensor->name).offset;
  const uint64_t row_bytes = static_cast<uint64_t>(dim_) * dtype_size(s_.classifier_tensor->dtype);
  for (size_t k = 0; k < s_.classifier.size(); ++k)  // a slice's slot holds its rows at offset 0
    steps_.keep(s_.layers.size() + k, whole.data() + classifier_at + s_.classifier[k].row_begin * row_bytes, compute_);
  CLLM_CUDA_CHECK(cudaStreamSynchronize(compute_));  // before `whole` is freed
}

void FusedStore::load_layers(const CllmFile& file) {
  DeviceBuffer<uint8_t> staging(s_.max_src_bytes);
  for (size_t l = 0; l < s_.layers.size(); ++l) {
    const WeightStep& st = s_.layers[l];
    // decode_on_device synchronizes, so the previous step's copies out of the slot are done
    CLLM_CUDA_CHECK(cudaMemcpy(staging.data(), file.file_data() + st.src_offset, st.src_bytes, cudaMemcpyHostToDevice));
    decode_on_device(staging.data(), slots_[0].data(), st.tiles, st.blocks, compute_, file.path());
    steps_.keep(l, slots_[0].data(), compute_);
  }
}

void FusedStore::decode_into(size_t i, int k) {
  CLLM_CUDA_CHECK(cudaStreamWaitEvent(decode_, read_[k], 0));
  uint8_t* slot = slots_[k].data();
  DecodeTimes* t = nullptr;
  if (timed_ < kTimed) {
    if (timed_ == times_.size()) {
      times_.emplace_back();
      CLLM_CUDA_CHECK(cudaEventCreate(&times_.back().start));
      CLLM_CUDA_CHECK(cudaEventCreate(&times_.back().end));
    }
    t = &times_[timed_++];
    CLLM_CUDA_CHECK(cudaEventRecord(t->start, decode_));
  }
  const uint64_t bytes = steps_.decode_into(i, slot, decode_);
  if (t) {
    t->bytes = bytes;
    CLLM_CUDA_CHECK(cudaEventRecord(t->end, decode_));
  }
  CLLM_CUDA_CHECK(cudaEventRecord(decoded_[k], decode_));
  in_slot_[k] = static_cast<int64_t>(i);
}

const uint8_t* FusedStore::acquire(size_t i) {
  // A batch: the step's slot layout, with bytes equal to full mode's, decoded on the decode
  // stream (already, when it was prefetched) and waited for by the compute stream; then the
  // step after it into the other slot.
  if (!steps_.view(i)) return steps_.decoded(i);
  const int64_t want = static_cast<int64_t>(i);
  int k = in_slot_[0] == want ? 0 : in_slot_[1] == want ? 1 : -1;
  if (k < 0) decode_into(i, k = (current_ + 1) % n_slots_);
  current_ = k;
  CLLM_CUDA_CHECK(cudaStreamWaitEvent(compute_, decoded_[k], 0));
  const int other = (k + 1) % n_slots_;  // with one slot, k itself: no room to decode ahead
  if (other != k && prefetch_worthy(i) && in_slot_[other] != want + 1) decode_into(i + 1, other);
  return slots_[k].data();
}

void FusedStore::collect(GpuStats& stats) {
  for (size_t k = 0; k < timed_; ++k) {
    const DecodeTimes& t = times_[k];
    CLLM_CUDA_CHECK(cudaEventSynchronize(t.end));  // a prefetch nobody acquired may still run
    float ms = 0;
    CLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, t.start, t.end));
    stats.decode_ms += ms;
    stats.decoded_bytes += t.bytes;
  }
  timed_ = 0;
}

void FusedStore::release(size_t i) {
  if (steps_.view(i)) CLLM_CUDA_CHECK(cudaEventRecord(read_[current_], compute_));
}

void FusedStore::embed(const int* tokens, int n, uint8_t* d_rows, float* x) {
  CLLM_CUDA_CHECK(cudaMemcpyAsync(d_rows, tokens, sizeof(int) * n, cudaMemcpyHostToDevice, compute_));
  embed_from_device(reinterpret_cast<const int*>(d_rows), n, x);
}

void FusedStore::embed_from_device(const int* d_tokens, int n, float* x) {
  cuda::gather_rows_f32(embd_table_, s_.token_embd->dtype, dim_, d_tokens, n, x, compute_);
}

uint64_t FusedStore::fused_bytes() const { return steps_.bytes(); }

}  // namespace

std::unique_ptr<GpuWeights> load_fused_weights(const CllmFile& file, const WeightSchedule& s, int slots,
                                               cudaStream_t compute) {
  return std::make_unique<FusedStore>(file, s, slots, compute);
}

}  // namespace cllm
