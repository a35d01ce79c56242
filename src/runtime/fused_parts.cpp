#include "runtime/fused_parts.h"

#include <algorithm>

#include "codec/fused_layout.h"
#include "common/error.h"

namespace cllm {

namespace {
constexpr uint64_t kAlign = 256;
uint64_t align_up(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

bool fusable(const TensorInfo& t) { return t.dtype == DType::BF16 && t.shape.size() == 2; }
}  // namespace

uint64_t StepParts::decoded_bytes() const {
  uint64_t total = 0;
  for (const StepPart& p : decoded) total += align_up(p.bytes);
  return total;
}

uint64_t StepParts::fused_bytes_planned() const {
  uint64_t total = 0;
  for (const StepPart& p : fused) total += fused_plane_sizes(p.rows, p.cols).planes + fused_escape_allowance(p.rows, p.cols);
  return total;
}

StepParts step_parts(const WeightSchedule& s, const WeightStep& step) {
  StepParts parts;
  if (step.layer < 0) {  // a classifier slice: rows [row_begin, row_end) at slot offset 0
    const TensorInfo& t = *s.classifier_tensor;
    const uint32_t cols = static_cast<uint32_t>(t.shape.back()), rows = static_cast<uint32_t>(step.row_end - step.row_begin);
    StepPart p{-1, 0, uint64_t{rows} * cols * dtype_size(t.dtype), 0, 0,
               cat(t.name, " rows ", step.row_begin, "..", step.row_end - 1)};
    if (fusable(t)) {
      p.rows = rows;
      p.cols = cols;
      parts.fused.push_back(p);
    } else {
      parts.decoded.push_back(p);
    }
    return parts;
  }
  for (int role = 0; role < kLayerTensors; ++role) {
    const TensorInfo* t = step.tensor[role];
    if (!t) continue;
    StepPart p{role, step.offset[role], t->raw_bytes(), 0, 0, t->name};
    if (fusable(*t)) {
      p.rows = static_cast<uint32_t>(t->shape[0]);
      p.cols = static_cast<uint32_t>(t->shape[1]);
      parts.fused.push_back(p);
    } else {
      parts.decoded.push_back(p);
    }
  }
  return parts;
}

FusedPlaneSizes fused_plane_sizes(uint32_t rows, uint32_t cols) {
  using namespace codec::fused;
  CLLM_CHECK(rows >= 1 && cols >= 1 && cols <= kMaxCols, "fused layout: a matrix of ", rows, " x ", cols,
             " (expected at least one row and 1 .. ", kMaxCols, " columns)");
  FusedPlaneSizes z;
  z.stride = (cols + kChunk - 1) / kChunk * kChunk;
  z.group = std::min(kDefaultGroup, z.stride);  // one base per row, as encode_fused's default
  const uint64_t r = rows, groups = (z.stride + z.group - 1) / z.group;
  z.bytes_at = 0;
  z.codes_at = align_up(r * z.stride);
  z.bases_at = z.codes_at + align_up(r * z.stride / kChunk * 4);
  z.escape_start_at = z.bases_at + align_up(r * groups);
  z.planes = z.escape_start_at + align_up((r + 1) * 4);
  return z;
}

uint64_t fused_escape_allowance(uint32_t rows, uint32_t cols) {
  return align_up(std::max<uint64_t>(1, uint64_t{rows} * cols / 256) * 4);
}

}  // namespace cllm
