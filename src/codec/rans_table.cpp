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

}  // namespace

FreqTable normalise_frequencies(const std::array<uint64_t, 256>& count, uint32_t prob_bits) {
  CLLM_CHECK(prob_bits >= kMinProbBits && prob_bits <= kMaxProbBits, "rans: prob_bits ", prob_bits,
             " outside ", kMinProbBits, "..", kMaxProbBits);
  const uint32_t m = 1u << prob_bits;
  uint64_t total = 0;
  uint32_t lo = 256, hi = 0, present = 0;
  for (uint32_t s = 0; s < 256; ++s) {
    if (count[s] == 0) continue;
    total += count[s];
    if (lo == 256) lo = s;
    hi = s;
    ++present;
  }
  CLLM_CHECK(total > 0, "rans: cannot build a frequency table from an empty histogram");

  FreqTable t;
  t.prob_bits = prob_bits;
  t.sym_lo = lo;
  t.sym_count = hi - lo + 1;
  if (present == 1) {
    // One symbol takes the whole range: coding it costs 0 bits and states never renormalise.
    t.freq[lo] = m;
    fill_cumulative(t);
    return t;
  }

  // Start from the proportional share rounded down, at least 1 for every present symbol
  // (256 symbols at most, so the ones alone fit even at P = 8).
  std::array<double, 256> up{}, down{};  // bits saved by freq + 1, bits lost by freq - 1
  const double inf = std::numeric_limits<double>::infinity();
  int64_t sum = 0;
  for (uint32_t s = lo; s <= hi; ++s) {
    if (count[s] == 0) continue;
    const auto share = static_cast<uint64_t>((static_cast<unsigned __int128>(count[s]) * m) / total);
    t.freq[s] = share > 0 ? static_cast<uint32_t>(share) : 1u;
    sum += t.freq[s];
  }
  // The coded size sum_s count[s] * log2(m / freq[s]) is convex in every freq, so single-unit
  // moves to where they save most reach the optimum for the fixed sum m (and a state with no
  // improving move from one symbol to another is optimal).
  auto update = [&](uint32_t s) {
    const double c = static_cast<double>(count[s]), f = t.freq[s];
    up[s] = c * std::log2((f + 1) / f);
    down[s] = t.freq[s] > 1 ? c * std::log2(f / (f - 1)) : inf;
  };
  auto best_up = [&](uint32_t skip) {
    uint32_t b = 256;
    for (uint32_t s = lo; s <= hi; ++s)
      if (count[s] != 0 && s != skip && (b == 256 || up[s] > up[b])) b = s;
    return b;
  };
  auto best_down = [&](uint32_t skip) {
    uint32_t b = 256;
    for (uint32_t s = lo; s <= hi; ++s)
      if (count[s] != 0 && s != skip && (b == 256 || down[s] < down[b])) b = s;
    return b;
  };
  for (uint32_t s = lo; s <= hi; ++s)
    if (count[s] != 0) update(s);
  for (; sum < m; ++sum) {
    const uint32_t s = best_up(256);
    ++t.freq[s];
    update(s);
  }
  for (; sum > m; --sum) {
    const uint32_t s = best_down(256);  // some symbol has freq > 1 while sum > m >= present
    --t.freq[s];
    update(s);
  }
  // Flooring can leave a unit on the wrong symbol; a handful of exchanges fix it. The cap only
  // guards against floating-point ties cycling.
  for (int iter = 0; iter < 1024; ++iter) {
    const uint32_t s = best_up(256);
    const uint32_t d = best_down(s);
    if (d == 256 || down[d] == inf || up[s] <= down[d] * (1 + 1e-12)) break;
    ++t.freq[s];
    --t.freq[d];
    update(s);
    update(d);
  }
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
