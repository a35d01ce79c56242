#include "text/bpe_added_tokens.h"

#include <algorithm>
#include <cstdint>

#include "common/error.h"
#include "text/utf8.h"

namespace cllm {

namespace {

// Rust's char::is_whitespace (Unicode White_Space), which added tokens' lstrip/rstrip use.
bool is_white_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

}  // namespace

BpeAddedTokens::BpeAddedTokens(const std::vector<BpeAddedToken>& added, int n, const std::string& origin)
    : added_(added) {
  for (size_t i = 0; i < added_.size(); ++i) {
    const auto& t = added_[i];
    if (t.id < 0 || t.id >= n) fail(origin, ": added token '", t.content, "' has id ", t.id, ", outside 0..", n - 1);
    if (t.content.empty()) fail(origin, ": added token ", t.id, " is empty");
    auto& list = (t.normalized ? normalized_ : raw_)[static_cast<uint8_t>(t.content[0])];
    list.push_back(static_cast<int>(i));
  }
  for (auto* table : {&raw_, &normalized_})
    for (auto& list : *table)
      std::stable_sort(list.begin(), list.end(), [&](int x, int y) {
        return added_[static_cast<size_t>(x)].content.size() > added_[static_cast<size_t>(y)].content.size();
      });
}

std::vector<BpeFragment> BpeAddedTokens::cut(const std::string& text) const {
  std::vector<BpeFragment> frags = cut_raw(text);
  cut_table(normalized_, frags);
  return frags;
}

std::vector<BpeFragment> BpeAddedTokens::cut_raw(const std::string& text) const {
  std::vector<BpeFragment> frags{{text, -1, true}};
  cut_table(raw_, frags);
  return frags;
}

// Cuts the added tokens of table out of the text fragments, leftmost-longest.
void BpeAddedTokens::cut_table(const Table& table, std::vector<BpeFragment>& frags) const {
  std::vector<BpeFragment> out;
  for (auto& f : frags) {
    if (f.token >= 0) {
      out.push_back(std::move(f));
      continue;
    }
    const std::string& s = f.text;
    size_t last = 0;  // start of the text not yet emitted
    size_t i = 0;
    while (i < s.size()) {
      const BpeAddedToken* hit = nullptr;
      for (int k : table[static_cast<uint8_t>(s[i])]) {
        const auto& t = added_[static_cast<size_t>(k)];
        if (s.compare(i, t.content.size(), t.content) == 0) {
          hit = &t;
          break;  // longest first
        }
      }
      if (!hit) {
        ++i;
        continue;
      }
      size_t b = i, e = i + hit->content.size();
      if (hit->lstrip) {  // swallow the white space before it
        while (b > last) {
          size_t k = b - 1;
          while (k > last && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
          size_t len = 0;
          if (!is_white_space(utf8_code_point(s, k, &len))) break;
          b = k;
        }
      }
      if (hit->rstrip) {  // ... and after it
        size_t len = 0;
        while (e < s.size() && is_white_space(utf8_code_point(s, e, &len))) e += len;
      }
      if (b > last) out.push_back({s.substr(last, b - last), -1, f.at_start && last == 0});
      out.push_back({"", hit->id, false});
      last = i = e;
    }
    if (last < s.size()) out.push_back({s.substr(last), -1, f.at_start && last == 0});
  }
  frags = std::move(out);
}

}  // namespace cllm
