#include "codec/rans_table.h"

#include <cmath>
#include <limits>

#include "codec/tile_layout.h"
#include "common/error.h"

namespace cllm::codec {

namespace {

void fill_cumulative(FreqTable& t) {
  uint32_t c = 0;
  for (uint32_t s = 0; s < 256; ++s) {
    t.cum[s] = c;
    c += t.freq[s];
  }
}

// The histogram's total, its lowest and highest present symbols, and how many are present.
struct HistogramSpan {
  uint64_t total = 0;
  uint32_t lo = 256, hi = 0, present = 0;
};

HistogramSpan scan_histogram(const std::array<uint64_t, 256>& count) {
  HistogramSpan h;
  for (uint32_t s = 0; s < 256; ++s) {
    if (count[s] == 0) continue;
    h.total += count[s];
    if (h.lo == 256) h.lo = s;
    h.hi = s;
    ++h.present;
  }
  return h;
}

// Starts from the proportional share rounded down, at least 1 for every present symbol
// (256 symbols at most, so the ones alone fit even at P = 8); returns the sum of the shares.
int64_t floor_shares(const std::array<uint64_t, 256>& count, const HistogramSpan& h, uint32_t m, FreqTable& t) {
  int64_t sum = 0;
  for (uint32_t s = h.lo; s <= h.hi; ++s) {
    if (count[s] == 0) continue;
    const auto share = static_cast<uint64_t>((static_cast<unsigned __int128>(count[s]) * m) / h.total);
    t.freq[s] = share > 0 ? static_cast<uint32_t>(share) : 1u;
    sum += t.freq[s];
  }
  return sum;
}

// The coded size sum_s count[s] * log2(m / freq[s]) is convex in every freq, so single-unit
// moves to where they save most reach the optimum for the fixed sum m (and a state with no
// improving move from one symbol to another is optimal).
class UnitMoves {
 public:
  UnitMoves(const std::array<uint64_t, 256>& count, const HistogramSpan& h, FreqTable& t)
      : count_(count), lo_(h.lo), hi_(h.hi), t_(t) {
    for (uint32_t s = lo_; s <= hi_; ++s)
      if (count_[s] != 0) update(s);
  }

  // Adds or removes units where they cost least until the frequencies sum to m.
  void reach_sum(int64_t sum, uint32_t m) {
    for (; sum < m; ++sum) {
      const uint32_t s = best_up(256);
      ++t_.freq[s];
      update(s);
    }
    for (; sum > m; --sum) {
      const uint32_t s = best_down(256);  // some symbol has freq > 1 while sum > m >= present
      --t_.freq[s];
      update(s);
    }
  }

  // Flooring can leave a unit on the wrong symbol; a handful of exchanges fix it. The cap only
  // guards against floating-point ties cycling.
  void exchange_units() {
    for (int iter = 0; iter < 1024; ++iter) {
      const uint32_t s = best_up(256);
      const uint32_t d = best_down(s);
      if (d == 256 || down_[d] == kInf || up_[s] <= down_[d] * (1 + 1e-12)) break;
      ++t_.freq[s];
      --t_.freq[d];
      update(s);
      update(d);
    }
  }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();

  void update(uint32_t s) {
    const double c = static_cast<double>(count_[s]), f = t_.freq[s];
    up_[s] = c * std::log2((f + 1) / f);
    down_[s] = t_.freq[s] > 1 ? c * std::log2(f / (f - 1)) : kInf;
  }
  uint32_t best_up(uint32_t skip) const {
    uint32_t b = 256;
    for (uint32_t s = lo_; s <= hi_; ++s)
      if (count_[s] != 0 && s != skip && (b == 256 || up_[s] > up_[b])) b = s;
    return b;
  }
  uint32_t best_down(uint32_t skip) const {
    uint32_t b = 256;
    for (uint32_t s = lo_; s <= hi_; ++s)
      if (count_[s] != 0 && s != skip && (b == 256 || down_[s] < down_[b])) b = s;
    return b;
  }

  const std::array<uint64_t, 256>& count_;
  uint32_t lo_, hi_;
  FreqTable& t_;
  std::array<double, 256> up_{}, down_{};  // bits saved by freq + 1, bits lost by freq - 1
};

}  // namespace

FreqTable normalise_frequencies(const std::array<uint64_t, 256>& count, uint32_t prob_bits) {
  CLLM_CHECK(prob_bits >= kMinProbBits && prob_bits <= kMaxProbBits, "rans: prob_bits ", prob_bits,
             " outside ", kMinProbBits, "..", kMaxProbBits);
  const uint32_t m = 1u << prob_bits;
  const HistogramSpan h = scan_histogram(count);
  CLLM_CHECK(h.total > 0, "rans: cannot build a frequency table from an empty histogram");

  FreqTable t;
  t.prob_bits = prob_bits;
  t.sym_lo = h.lo;
  t.sym_count = h.hi - h.lo + 1;
  if (h.present == 1) {
    // One symbol takes the whole range: coding it costs 0 bits and states never renormalise.
    t.freq[h.lo] = m;
    fill_cumulative(t);
    return t;
  }
  const int64_t sum = floor_shares(count, h, m, t);
  UnitMoves moves(count, h, t);
  moves.reach_sum(sum, m);
  moves.exchange_units();
  fill_cumulative(t);
  return t;
}

FreqTable read_freq_table(const uint8_t* stored, uint32_t prob_bits, uint32_t sym_lo, uint32_t sym_count) {
  FreqTable t;
  t.prob_bits = prob_bits;
  t.sym_lo = sym_lo;
  t.sym_count = sym_count;
  uint32_t sum = 0;  // at most 256 * 65535: no overflow
  for (uint32_t i = 0; i < sym_count; ++i) {
    t.freq[sym_lo + i] = load_u16(stored + 2 * i);
    sum += t.freq[sym_lo + i];
  }
  CLLM_CHECK(sum == (1u << prob_bits), "rans tile: frequencies sum to ", sum, ", expected 2^", prob_bits,
             " = ", 1u << prob_bits);
  fill_cumulative(t);
  return t;
}

void RansDecodeTable::build(const FreqTable& t) {
  prob_bits = t.prob_bits;
  const uint32_t m = 1u << prob_bits;
  static_assert(kMaxProbBits <= 12, "packed holds freq - 1 and slot - cum in 12 bits each");
  freq.resize(m);
  bias.resize(m);
  symbol.resize(m);
  packed.resize(m);
  for (uint32_t s = t.sym_lo; s < t.sym_lo + t.sym_count; ++s) {
    for (uint32_t j = 0; j < t.freq[s]; ++j) {
      const uint32_t slot = t.cum[s] + j;
      freq[slot] = static_cast<uint16_t>(t.freq[s]);
      bias[slot] = static_cast<uint16_t>(j);
      symbol[slot] = static_cast<uint8_t>(s);
      packed[slot] = s | ((t.freq[s] - 1) << 8) | (j << 20);
    }
  }
}

RansEncodeTable build_encode_table(const FreqTable& t) {
  // Why rcp = ceil(2^47 / f) is exact: rcp = (2^47 + e) / f with 0 <= e < f <= 2^P <= 2^12. For
  // x = q f + r (0 <= r < f, x < 2^32), x rcp / 2^47 = q + (r + x e / 2^47) / f, and
  // x e < 2^44, so the fraction stays below (f - 1 + 1/2) / f < 1 and the floor is q.
  RansEncodeTable e;
  const uint32_t m = 1u << t.prob_bits;
  for (uint32_t s = 0; s < 256; ++s) {
    const uint32_t f = t.freq[s];
    if (f == 0) continue;
    e.symbol[s].x_max = uint64_t(f) << (32 - t.prob_bits);
    e.symbol[s].rcp = ((uint64_t(1) << kRcpShift) + f - 1) / f;
    e.symbol[s].cmpl = m - f;
    e.symbol[s].cum = t.cum[s];
    e.packed[s] = t.cum[s] | ((f - 1) << 12);  // both < 2^12 since P <= 12
  }
  return e;
}

}  // namespace cllm::codec
