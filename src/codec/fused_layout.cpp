#include "codec/fused_layout.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "common/error.h"

namespace cllm::codec::fused {

namespace {

uint32_t round_up(uint32_t n, uint32_t m) { return (n + m - 1) / m * m; }
uint64_t align16(uint64_t n) { return (n + 15) / 16 * 16; }

uint32_t exponent_of(uint16_t v) { return (v >> 7) & 0xFF; }

// Where weight j (0..7) of a chunk keeps its code in the chunk's word: byte j & 3, the low
// nibble for j < 4, the high one for j >= 4.
uint32_t code_shift(uint32_t j) { return (j & 3) * 8 + (j >> 2) * 4; }

// The base whose window [base, base + 14] holds most of the exponents counted in hist, the
// smallest such base on a tie (weights below the window are the small ones, which is where
// trained and Gaussian weights have their long tail, so a tie is rare and either is right).
uint32_t best_base(const std::array<uint32_t, 256>& hist) {
  uint32_t in_window = 0;
  for (uint32_t e = 0; e < kWindow; ++e) in_window += hist[e];
  uint32_t best = 0, best_count = in_window;
  for (uint32_t b = 1; b <= kMaxBase; ++b) {
    in_window += hist[b + kWindow - 1] - hist[b - 1];
    if (in_window > best_count) best = b, best_count = in_window;
  }
  return best;
}

// One row: bases, bytes and codes of the row's planes, escapes appended (in column order).
void encode_row(const uint16_t* w, FusedMatrix& m, uint32_t row) {
  const size_t groups = m.groups_per_row();
  uint8_t* bytes = m.bytes.data() + static_cast<size_t>(row) * m.stride;
  uint32_t* codes = m.codes.data() + static_cast<size_t>(row) * (m.stride / kChunk);
  const auto sign = [&](uint32_t col) { return col < m.cols ? static_cast<uint32_t>(w[col] >> 15) : 0u; };
  for (size_t g = 0; g < groups; ++g) {
    const uint32_t lo = static_cast<uint32_t>(g) * m.group, hi = std::min(lo + m.group, m.cols);
    std::array<uint32_t, 256> hist{};
    for (uint32_t c = lo; c < hi; ++c) ++hist[exponent_of(w[c])];
    const uint32_t base = best_base(hist);
    m.bases[row * groups + g] = static_cast<uint8_t>(base);
    for (uint32_t c = lo; c < hi; ++c) {
      const uint32_t e = exponent_of(w[c]);
      uint32_t code = e - base;  // wraps for e < base: then >= kEscape like any exponent above the window
      if (code >= kEscape) {
        code = kEscape;
        m.escapes.push_back(escape_entry(c, e));
      }
      codes[c / kChunk] |= code << code_shift(c % kChunk);
      bytes[c] = static_cast<uint8_t>((w[c] & 0x7F) << 1 | sign(c ^ 1));
    }
  }
  // Padding weights (cols .. stride) keep code 0 and byte 0, except the partner of the last
  // real weight of an odd-length row: its byte carries that weight's sign.
  if (m.cols % 2 == 1) bytes[m.cols] = static_cast<uint8_t>(sign(m.cols - 1));
}

uint32_t rotate_right_1(uint32_t x) { return x >> 1 | x << 31; }

}  // namespace

uint64_t FusedMatrix::layout_bytes() const {
  return align16(bytes.size()) + align16(codes.size() * 4) + align16(bases.size()) + align16(escape_start.size() * 4) +
         align16(escapes.size() * 4);
}

double FusedMatrix::bits_per_weight() const {
  const double n = static_cast<double>(rows) * cols;
  return n > 0 ? 8.0 * static_cast<double>(layout_bytes()) / n : 0.0;
}

FusedMatrix encode_fused(const uint16_t* w, uint32_t rows, uint32_t cols, uint32_t group) {
  if (group == 0) group = kDefaultGroup;
  CLLM_CHECK(rows >= 1 && cols >= 1 && cols <= kMaxCols, "fused layout: a matrix of ", rows, " x ", cols,
             " (expected at least one row and 1 .. ", kMaxCols, " columns)");
  CLLM_CHECK(group % kChunk == 0, "fused layout: group of ", group, " weights (expected a multiple of ", kChunk, ")");
  FusedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.stride = round_up(cols, kChunk);
  m.group = std::min(group, m.stride);
  const size_t n = static_cast<size_t>(rows) * m.stride;
  m.bytes.assign(n, 0);
  m.codes.assign(n / kChunk, 0);
  m.bases.assign(static_cast<size_t>(rows) * m.groups_per_row(), 0);
  m.escape_start.assign(static_cast<size_t>(rows) + 1, 0);
  for (uint32_t r = 0; r < rows; ++r) {
    encode_row(w + static_cast<size_t>(r) * cols, m, r);
    m.escape_start[r + 1] = static_cast<uint32_t>(m.escapes.size());
  }
  return m;
}

namespace {

uint32_t code_at(const FusedMatrix& m, uint32_t row, uint32_t col) {
  return (m.codes[static_cast<size_t>(row) * (m.stride / kChunk) + col / kChunk] >> code_shift(col % kChunk)) & 0xF;
}

// Row r's escape entries: sorted, in range, each on a weight coded 15, and one for every such
// weight; its padding: code 0 and byte 0 (but the odd row's partner byte, a sign bit).
void check_row(const FusedMatrix& m, uint32_t r) {
  const uint32_t first = m.escape_start[r], last = m.escape_start[r + 1];
  uint32_t coded = 0;
  for (uint32_t c = 0; c < m.cols; ++c) coded += code_at(m, r, c) == kEscape;
  CLLM_CHECK(coded == last - first, "fused layout: row ", r, " has ", coded, " weights coded as escapes but ",
             last - first, " escape entries");
  for (uint32_t i = first; i < last; ++i) {
    const uint32_t c = escape_col(m.escapes[i]);
    CLLM_CHECK(c < m.cols && (i == first || escape_col(m.escapes[i - 1]) < c) && code_at(m, r, c) == kEscape,
               "fused layout: row ", r, " escape entry ", i - first, " names column ", c,
               " (expected increasing columns < ", m.cols, ", each coded ", kEscape, ")");
  }
  for (uint32_t c = m.cols; c < m.stride; ++c) {
    const uint8_t byte = m.bytes[static_cast<size_t>(r) * m.stride + c];
    const bool sign_only = c == m.cols && m.cols % 2 == 1;
    CLLM_CHECK(code_at(m, r, c) == 0 && (byte == 0 || (sign_only && byte == 1)), "fused layout: row ", r,
               " padding weight ", c, " has code ", code_at(m, r, c), " and byte ", int(byte), " (expected 0 and 0)");
  }
}

}  // namespace

void check_fused(const FusedMatrix& m) {
  CLLM_CHECK(m.rows >= 1 && m.cols >= 1 && m.cols <= kMaxCols && m.stride == round_up(m.cols, kChunk),
             "fused layout: ", m.rows, " x ", m.cols, " with row stride ", m.stride, " (expected at least 1 x 1, at most ",
             kMaxCols, " columns, stride = columns rounded up to ", kChunk, ")");
  CLLM_CHECK(m.group >= kChunk && m.group % kChunk == 0 && m.group <= m.stride, "fused layout: group of ", m.group,
             " weights (expected a multiple of ", kChunk, " up to the stride ", m.stride, ")");
  const size_t n = static_cast<size_t>(m.rows) * m.stride;
  CLLM_CHECK(m.bytes.size() == n && m.codes.size() == n / kChunk &&
                 m.bases.size() == static_cast<size_t>(m.rows) * m.groups_per_row() &&
                 m.escape_start.size() == static_cast<size_t>(m.rows) + 1,
             "fused layout: planes of ", m.bytes.size(), " bytes, ", m.codes.size(), " code words, ", m.bases.size(),
             " bases, ", m.escape_start.size(), " escape offsets (expected ", n, ", ", n / kChunk, ", ",
             static_cast<size_t>(m.rows) * m.groups_per_row(), ", ", m.rows + 1, ")");
  for (size_t i = 0; i < m.bases.size(); ++i)
    CLLM_CHECK(m.bases[i] <= kMaxBase, "fused layout: base ", i, " is ", int(m.bases[i]), " (expected <= ", kMaxBase, ")");
  CLLM_CHECK(m.escape_start[0] == 0 && m.escape_start[m.rows] == m.escapes.size(), "fused layout: escape offsets run from ",
             m.escape_start[0], " to ", m.escape_start[m.rows], " (expected 0 to ", m.escapes.size(), ")");
  for (uint32_t r = 0; r < m.rows; ++r)
    CLLM_CHECK(m.escape_start[r] <= m.escape_start[r + 1], "fused layout: escape offsets of rows ", r, " and ", r + 1,
               " decrease (", m.escape_start[r], " > ", m.escape_start[r + 1], ")");
  for (uint32_t r = 0; r < m.rows; ++r) check_row(m, r);
}

uint32_t fused_exponent(const FusedMatrix& m, uint32_t row, uint32_t col) {
  const uint32_t word = m.codes[static_cast<size_t>(row) * (m.stride / kChunk) + col / kChunk];
  const uint32_t code = (word >> code_shift(col % kChunk)) & 0xF;
  if (code != kEscape) return m.base_of(row, col) + code;
  // The row's entries are sorted by column: a binary search finds this weight's.
  const uint32_t* first = m.escapes.data() + m.escape_start[row];
  const uint32_t* last = m.escapes.data() + m.escape_start[row + 1];
  const uint32_t* e = std::lower_bound(first, last, col, [](uint32_t entry, uint32_t c) { return escape_col(entry) < c; });
  CLLM_CHECK(e != last && escape_col(*e) == col, "fused layout: row ", row, " column ", col,
             " is coded as an escape but has no entry in the escape list");
  return escape_exponent(*e);
}

void decode_chunk(const FusedMatrix& m, uint32_t row, uint32_t chunk, uint16_t out[kChunk]) {
  const uint32_t col0 = chunk * kChunk;
  const uint32_t word = m.codes[static_cast<size_t>(row) * (m.stride / kChunk) + chunk];
  const uint32_t base4 = m.base_of(row, col0) * 0x01010101u;
  // Exponents of weights 0..3 and 4..7, one per byte (base <= kMaxBase: no byte carries).
  uint32_t e[2] = {(word & 0x0F0F0F0Fu) + base4, ((word >> 4) & 0x0F0F0F0Fu) + base4};
  for (uint32_t j = 0; j < kChunk; ++j) {  // escapes: the GPU takes this path only for a word holding one
    if (((word >> code_shift(j)) & 0xF) != kEscape || col0 + j >= m.cols) continue;
    const uint32_t shift = (j & 3) * 8;
    e[j >> 2] = (e[j >> 2] & ~(0xFFu << shift)) | fused_exponent(m, row, col0 + j) << shift;
  }
  uint32_t mant[2];  // the chunk's 8 bytes as two little-endian words
  std::memcpy(mant, m.bytes.data() + static_cast<size_t>(row) * m.stride + col0, sizeof(mant));
  for (uint32_t p = 0; p < kChunk / 2; ++p) {
    // [byte 2q, exponent 2q, byte 2q+1, exponent 2q+1] (the GPU's byte permute), rotated right
    // by one: each weight's mantissa lands in bits 0..6 of its half, its exponent in 7..14,
    // and the partner byte's low bit (this weight's sign) in bit 15.
    const uint32_t mw = mant[p >> 1], ew = e[p >> 1], q = (p & 1) * 16;
    const uint32_t x = (mw >> q & 0xFF) | (ew >> q & 0xFF) << 8 | (mw >> (q + 8) & 0xFF) << 16 | (ew >> (q + 8) & 0xFF) << 24;
    const uint32_t pair = rotate_right_1(x);
    out[2 * p] = static_cast<uint16_t>(pair & 0xFFFF);
    out[2 * p + 1] = static_cast<uint16_t>(pair >> 16);
  }
}

void decode_fused(const FusedMatrix& m, uint16_t* w) {
  uint16_t chunk[kChunk];
  for (uint32_t r = 0; r < m.rows; ++r) {
    uint16_t* out = w + static_cast<size_t>(r) * m.cols;
    for (uint32_t c = 0; c < m.stride / kChunk; ++c) {
      decode_chunk(m, r, c, chunk);
      const uint32_t n = std::min(kChunk, m.cols - c * kChunk);
      std::memcpy(out + c * kChunk, chunk, n * sizeof(uint16_t));
    }
  }
}

FusedStats& FusedStats::operator+=(const FusedStats& o) {
  weights += o.weights;
  escapes += o.escapes;
  bytes += o.bytes;
  return *this;
}

FusedStats fused_stats(const FusedMatrix& m) {
  FusedStats s;
  s.weights = static_cast<uint64_t>(m.rows) * m.cols;
  s.escapes = m.escapes.size();
  s.bytes = m.layout_bytes();
  return s;
}

}  // namespace cllm::codec::fused
