// The fused layout (docs/codec.md "The fused layout (mode 3)"): a lossless fixed-length
// layout of a bf16 matrix [rows x cols] that a matrix-vector kernel reads straight from VRAM
// and decodes in registers, about 12 bits a weight:
//   - one byte per weight: its 7 mantissa bits and the sign of its pair partner (weight i^1),
//     so that a pair of weights becomes a bf16x2 word with one byte permute and one rotate;
//   - a 4-bit exponent code per weight: exponent = base + code for code 0..14, where the base
//     is one byte per group of `group` weights of a row; code 15 is an escape, whose real
//     exponent sits in a sparse list sorted by row, then column;
//   - the codes of 8 weights in one 32-bit word, byte j holding weight j's code (low nibble)
//     and weight j+4's (high nibble): one mask and one add give 4 exponents, one per byte.
// This CPU code is the definition of the layout and the oracle for the GPU kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cllm::codec::fused {

constexpr uint32_t kChunk = 8;           // weights per code word (one 16-byte x load on the GPU)
constexpr uint32_t kEscape = 15;         // the code of a weight whose exponent is in the escape list
constexpr uint32_t kWindow = kEscape;    // exponents a code can name: base .. base + 14
constexpr uint32_t kMaxBase = 255 - kEscape;  // base + 15 <= 255: adding the base byte-wise never carries
constexpr uint32_t kMaxCols = 1u << 24;  // an escape entry holds its column in 24 bits

// An escape entry: the column in the top 24 bits, the real exponent in the low 8.
inline uint32_t escape_entry(uint32_t col, uint32_t exponent) { return col << 8 | exponent; }
inline uint32_t escape_col(uint32_t entry) { return entry >> 8; }
inline uint32_t escape_exponent(uint32_t entry) { return entry & 0xFF; }

struct FusedMatrix {
  uint32_t rows = 0, cols = 0;
  uint32_t group = 0;   // weights per base: a multiple of kChunk, at most stride
  uint32_t stride = 0;  // weights per row in the planes: cols rounded up to kChunk (padding: code 0, byte 0
                        // but for the partner of an odd row's last weight, which holds its sign)
  std::vector<uint8_t> bytes;          // (rows, stride): mantissa << 1 | sign of weight i^1
  std::vector<uint32_t> codes;         // (rows, stride / 8): the code words
  std::vector<uint8_t> bases;          // (rows, groups_per_row())
  std::vector<uint32_t> escape_start;  // (rows + 1): row r's escapes are [escape_start[r], escape_start[r+1])
  std::vector<uint32_t> escapes;       // escape_entry(col, exponent), sorted by column within a row

  uint32_t groups_per_row() const { return (stride + group - 1) / group; }
  uint32_t base_of(uint32_t row, uint32_t col) const { return bases[static_cast<size_t>(row) * groups_per_row() + col / group]; }
  // Bytes of the layout as a GPU holds it (planes, bases, escape offsets and entries).
  uint64_t layout_bytes() const;
  double bits_per_weight() const;  // layout_bytes() * 8 / (rows * cols)
};

// One base per row: a group as long as the longest row. The default (group 0) since smaller
// groups cost more in bases than they save in escapes (docs/codec.md's table), and the GPU
// then reads no base per chunk.
constexpr uint32_t kRowGroup = kMaxCols;
constexpr uint32_t kDefaultGroup = kRowGroup;

// Encodes w (rows x cols bf16 bit patterns, row-major). group: weights per base, a multiple
// of kChunk (0 = kDefaultGroup; a group larger than a row means one base per row). Every bit
// pattern round-trips (±0, subnormals, Inf, NaN payloads). Throws on bad sizes.
FusedMatrix encode_fused(const uint16_t* w, uint32_t rows, uint32_t cols, uint32_t group = 0);

// Checks every size and table of m (plane sizes, bases <= kMaxBase, escape offsets
// non-decreasing and in range, entries in columns < cols, sorted, each on a weight coded 15,
// and every weight coded 15 listed). Throws cllm::Error saying what is wrong.
void check_fused(const FusedMatrix& m);

// The exponent of weight (row, col): base + code, or the escape list's entry for code 15.
uint32_t fused_exponent(const FusedMatrix& m, uint32_t row, uint32_t col);

// Decodes the 8 weights of chunk `chunk` of row `row` exactly as the GPU does (one code word,
// two byte-wise adds, a byte permute and a rotate per pair) into out[8] (bf16 bit patterns).
void decode_chunk(const FusedMatrix& m, uint32_t row, uint32_t chunk, uint16_t out[kChunk]);

// Decodes the whole matrix into w (rows x cols bf16).
void decode_fused(const FusedMatrix& m, uint16_t* w);

// What the layout costs, for the stats tool and docs/codec.md.
struct FusedStats {
  uint64_t weights = 0, escapes = 0, bytes = 0;
  double bits_per_weight() const { return weights ? 8.0 * bytes / weights : 0.0; }
  double escape_rate() const { return weights ? static_cast<double>(escapes) / weights : 0.0; }
  FusedStats& operator+=(const FusedStats& o);
};
FusedStats fused_stats(const FusedMatrix& m);

}  // namespace cllm::codec::fused
