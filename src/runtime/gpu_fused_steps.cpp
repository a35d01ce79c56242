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

const WeightStep& step_at(const WeightSchedule& s, size_t i) {
  return i < s.layers.size() ? s.layers[i] : s.classifier[i - s.layers.size()];
}

}  // namespace

FusedSteps::FusedSteps(const WeightSchedule& s) : s_(s), steps_(s.layers.size() + s.classifier.size()) {}

// d_src (rows, cols) bf16 in device memory -> the fused layout. Pass 1 finds the bases and
// counts the escapes, whose total sizes the escape list; pass 2 writes the planes.
FusedSteps::Matrix FusedSteps::encode(const uint8_t* d_src, const StepPart& part, cudaStream_t s) {
  const FusedPlaneSizes z = fused_plane_sizes(part.rows, part.cols);
  Matrix m;
  m.part = part;
  m.planes.resize(z.planes);
  uint8_t* at = m.planes.data();
  const int rows = static_cast<int>(part.rows), cols = static_cast<int>(part.cols);
  const cuda::FusedPlanes planes{at + z.bytes_at, reinterpret_cast<uint32_t*>(at + z.codes_at), at + z.bases_at,
                                 reinterpret_cast<uint32_t*>(at + z.escape_start_at), rows, cols,
                                 static_cast<int>(z.stride), static_cast<int>(z.group)};
  cuda::fused_encode_bases(d_src, planes, s);
  uint32_t escapes = 0;
  CLLM_CUDA_CHECK(cudaMemcpyAsync(&escapes, planes.escape_start + rows, 4, cudaMemcpyDeviceToHost, s));
  CLLM_CUDA_CHECK(cudaStreamSynchronize(s));
  CLLM_CHECK(escapes <= uint64_t{part.rows} * part.cols, "fused layout of ", part.name, ": the encoder counted ",
             escapes, " escapes in ", uint64_t{part.rows} * part.cols, " weights");
  m.escapes.resize(std::max<uint32_t>(1, escapes));
  cuda::fused_encode_planes(d_src, planes, m.escapes.data(), s);
  m.view = {planes.bytes, planes.codes, planes.bases, planes.escape_start, m.escapes.data(),
            rows, cols, planes.stride, planes.group};
  if (check_each_matrix()) check_round_trip(m.view, part, d_src, s);
  return m;
}

void FusedSteps::keep(size_t i, const uint8_t* d_slot, cudaStream_t s) {
  const StepParts parts = step_parts(s_, step_at(s_, i));
  Step& st = steps_[i];
  const auto copy = [&](uint8_t* dst, const StepPart& p) {
    CLLM_CUDA_CHECK(cudaMemcpyAsync(dst, d_slot + p.slot_offset, p.bytes, cudaMemcpyDeviceToDevice, s));
  };
  if (parts.fused.empty()) {  // full mode's slot layout
    st.decoded.resize(step_at(s_, i).slot_bytes);
    for (const StepPart& p : parts.decoded) copy(st.decoded.data() + p.slot_offset, p);
    return;
  }
  st.decoded.resize(std::max<uint64_t>(1, parts.decoded_bytes()));
  uint64_t at = 0;
  for (const StepPart& p : parts.decoded) {
    copy(st.decoded.data() + at, p);
    st.view.tensor[p.role] = st.decoded.data() + at;
    st.packed.push_back({p, at});
    at += (p.bytes + 255) / 256 * 256;
  }
  for (const StepPart& p : parts.fused) {
    try {
      st.matrices.push_back(encode(d_slot + p.slot_offset, p, s));
    } catch (const Error& e) {
      fail("fused layout, step ", i, ", ", p.name, " (", p.rows, " x ", p.cols, "): ", e.what());
    }
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
        cudaMemcpyAsync(slot + p.part.slot_offset, st.decoded.data() + p.at, p.part.bytes, cudaMemcpyDeviceToDevice, s));
  return bytes;
}

uint64_t FusedSteps::bytes() const {
  uint64_t total = 0;
  for (const Step& st : steps_)
    for (const Matrix& m : st.matrices) total += m.planes.bytes() + m.escapes.bytes();
  return total;
}

}  // namespace cllm
