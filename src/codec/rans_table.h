// Internal to src/codec: the rANS frequency table of a tile (docs/codec.md, "A chunk") and the
// lookup tables the encoder and the decoder run from.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace cllm::codec {

// Frequencies summing to exactly 2^prob_bits; symbols outside [sym_lo, sym_lo + sym_count)
// have frequency 0. cum[s] is the sum of the frequencies of the symbols below s.
struct FreqTable {
  uint32_t prob_bits = 0;
  uint32_t sym_lo = 0, sym_count = 0;
  std::array<uint32_t, 256> freq{}, cum{};
};

// Scales a symbol histogram (at least one non-zero count) to frequencies summing to
// 2^prob_bits, every present symbol >= 1, minimising the coded size
// sum_s count[s] * log2(2^P / freq[s]) bits under those constraints.
FreqTable normalise_frequencies(const std::array<uint64_t, 256>& count, uint32_t prob_bits);

// Reads sym_count stored u16 frequencies and checks that they sum to 2^prob_bits
// (throws cllm::Error). prob_bits and sym_lo + sym_count <= 256 are checked by the caller.
FreqTable read_freq_table(const uint8_t* stored, uint32_t prob_bits, uint32_t sym_lo, uint32_t sym_count);

// Decoder lookup, indexed by slot = state & (2^P - 1): flat tables of 2^P entries (20 KiB at
// P = 12), so the per-element work is independent L1 loads and a multiply-add.
struct RansDecodeTable {
  uint32_t prob_bits = 0;
  std::vector<uint16_t> freq;    // freq[s] (<= 2^P)
  std::vector<uint16_t> bias;    // slot - cum[s]
  std::vector<uint8_t> symbol;   // s
  // The three packed in one u32 for one-gather SIMD lookups (and the GPU's shared-memory
  // table): s | (freq[s] - 1) << 8 | (slot - cum[s]) << 20; fits since P <= 12.
  std::vector<uint32_t> packed;
  void build(const FreqTable& t);
};

// Encoder constants of one symbol, chosen so encoding needs no division.
struct RansEncSymbol {
  uint64_t x_max;  // emit 16 bits when state >= freq << (32 - P); reaches 2^32 when freq = 2^P
  uint64_t rcp;    // ceil(2^47 / freq): state / freq == (state * rcp) >> 47 for every 32-bit state
  uint32_t cmpl;   // 2^P - freq: state' = state + (state / freq) * cmpl + cum
  uint32_t cum;
};
constexpr uint32_t kRcpShift = 47;

struct RansEncodeTable {
  std::array<RansEncSymbol, 256> symbol{};
  std::array<uint32_t, 256> packed{};  // for one-gather SIMD lookups: cum | (freq - 1) << 12
};
RansEncodeTable build_encode_table(const FreqTable& t);

}  // namespace cllm::codec
