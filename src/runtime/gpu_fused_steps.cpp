#include "runtime/gpu_fused_steps.h"

#include <algorithm>
#include <cstdlib>

#include "codec/fused_layout.h"
#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/fused_encode.h"
#include "cuda/fused_matvec.h"

namespace cllm {

namespace {

// CLLM_CHECK_FUSED=1: every matrix is decoded back after encoding and compared with its
// weights at load (slow; for diagnosing a GPU that gives fused steps other bits than full).
bool check_each_matrix() {
  const char* v = std::getenv("CLLM_CHECK_FUSED");
  return v && *v && *v != '0';
}

// Throws naming the matrix and the first weight that does not come back from the planes.
void check_round_trip(const cuda::FusedWeights& m, const StepPart& part, const uint8_t* d_src, cudaStream_t s) {
  const size_t n = static_cast<size_t>(part.rows) * part.cols;
  cuda::DeviceBuffer<uint16_t> back(n);
  cuda::fused_decode(m, back.data(), s);
  std::vector<uint16_t> want(n), got(n);
  CLLM_CUDA_CHECK(cudaMemcpyAsync(want.data(), d_src, n * 2, cudaMemcpyDeviceToHost, s));
  CLLM_CUDA_CHECK(cudaMemcpyAsync(got.data(), back.data(), n * 2, cudaMemcpyDeviceToHost, s));
  CLLM_CUDA_CHECK(cudaStreamSynchronize(s));
  const auto bad = std::mismatch(want.begin(), want.end(), got.begin());
  if (bad.first == want.end()) return;
  const size_t i = bad.first - want.begin();
  fail("fused layout of ", part.name, " (", part.rows, " x ", part.cols, ") does not decode to its weights: row ",
       i / part.cols, ", column ", i % part.cols, " gives 0x", std::hex, *bad.second, ", expected 0x", *bad.first);
}

}  // namespace

FusedSteps::FusedSteps(const WeightSchedule& s) : s_(s), steps_(s.steps()) {}

// Each matrix (rows, cols) bf16 of the slot -> the fused layout. Pass 1 finds the bases and
// counts the escapes of every matrix, whose totals size the step's escape lists; pass 2
// writes the planes.
void FusedSteps::encode(Step& st, const std::vector<StepPart>& parts, const uint8_t* d_slot, uint64_t at,
                        cudaStream_t s) {
  constexpr uint64_t kEscapeAlign = 64;  // entries: each list starts 256-byte aligned
  std::vector<cuda::FusedPlanes> planes;
  for (const StepPart& part : parts) {
    const FusedPlaneSizes z = fused_plane_sizes(part.rows, part.cols);
    uint8_t* base = st.memory.data() + at;
    planes.push_back({base + z.bytes_at, reinterpret_cast<uint32_t*>(base + z.codes_at), base + z.bases_at,
                      reinterpret_cast<uint32_t*>(base + z.escape_start_at), static_cast<int>(part.rows),
                      static_cast<int>(part.cols), static_cast<int>(z.stride), static_cast<int>(z.group)});
    cuda::fused_encode_bases(d_slot + part.slot_offset, planes.back(), s);
    at += z.planes;
  }
  std::vector<uint32_t> escapes(parts.size());
  for (size_t m = 0; m < parts.size(); ++m)
    CLLM_CUDA_CHECK(cudaMemcpyAsync(&escapes[m], planes[m].escape_start + planes[m].rows, 4, cudaMemcpyDeviceToHost, s));
  CLLM_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<uint64_t> escapes_at(parts.size());
  uint64_t total = 0;
  for (size_t m = 0; m < parts.size(); ++m) {
    const uint64_t weights = uint64_t{parts[m].rows} * parts[m].cols;
    CLLM_CHECK(escapes[m] <= weights, "fused layout of ", parts[m].name, ": the encoder counted ", escapes[m],
               " escapes in ", weights, " weights");
    escapes_at[m] = total;
    total += (std::max<uint64_t>(1, escapes[m]) + kEscapeAlign - 1) / kEscapeAlign * kEscapeAlign;
  }
  st.escapes.resize(total);
  for (size_t m = 0; m < parts.size(); ++m) {
    const cuda::FusedPlanes& z = planes[m];
    uint32_t* list = st.escapes.data() + escapes_at[m];
    cuda::fused_encode_planes(d_slot + parts[m].slot_offset, z, list, s);
    st.matrices.push_back({parts[m], {z.bytes, z.codes, z.bases, z.escape_start, list, z.rows, z.cols, z.stride, z.group}});
    if (check_each_matrix()) check_round_trip(st.matrices.back().view, parts[m], d_slot + parts[m].slot_offset, s);
  }
}

void FusedSteps::keep(size_t i, const uint8_t* d_slot, cudaStream_t s) {
  const StepParts parts = step_parts(s_, s_.step(i));
  Step& st = steps_[i];
  const auto copy = [&](uint8_t* dst, const StepPart& p) {
    CLLM_CUDA_CHECK(cudaMemcpyAsync(dst, d_slot + p.slot_offset, p.bytes, cudaMemcpyDeviceToDevice, s));
  };
  if (parts.fused.empty()) {  // full mode's slot layout
    st.memory.resize(s_.step(i).slot_bytes);
    for (const StepPart& p : parts.decoded) copy(st.memory.data() + p.slot_offset, p);
    return;
  }
  const uint64_t decoded = parts.decoded_bytes();
  for (const StepPart& p : parts.fused) st.fused_bytes += fused_plane_sizes(p.rows, p.cols).planes;
  st.memory.resize(decoded + st.fused_bytes);
  uint64_t at = 0;
  for (const StepPart& p : parts.decoded) {
    copy(st.memory.data() + at, p);
    st.view.tensor[p.role] = st.memory.data() + at;
    st.packed.push_back({p, at});
    at += (p.bytes + 255) / 256 * 256;
  }
  try {
    encode(st, parts.fused, d_slot, decoded, s);
  } catch (const Error& e) {
    fail("fused layout, step ", i, ": ", e.what());
  }
  for (const Matrix& m : st.matrices) {  // after the vector is complete: the view points into it
    if (m.part.role < 0) st.view.slice = &m.view;
    else st.view.matrix[m.part.role] = &m.view;
  }
}

uint64_t FusedSteps::decode_into(size_t i, uint8_t* slot, cudaStream_t s) const {
  const Step& st = steps_[i];
  std::vector<cuda::FusedDecodeJob> jobs;
  uint64_t bytes = 0;
  for (const Matrix& m : st.matrices) {
    jobs.push_back({m.view, slot + m.part.slot_offset});
    bytes += uint64_t{m.part.rows} * m.part.cols * 2;
  }
  cuda::fused_decode(jobs.data(), static_cast<int>(jobs.size()), s);
  for (const Packed& p : st.packed)
    CLLM_CUDA_CHECK(
        cudaMemcpyAsync(slot + p.part.slot_offset, st.memory.data() + p.at, p.part.bytes, cudaMemcpyDeviceToDevice, s));
  return bytes;
}

uint64_t FusedSteps::bytes() const {
  uint64_t total = 0;
  for (const Step& st : steps_) total += st.fused_bytes + st.escapes.bytes();
  return total;
}

}  // namespace cllm
