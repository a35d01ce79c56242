// The regexes of a BPE tokenizer (pre-tokenizer Split steps, Replace normalizers), written for
// the Hugging Face library's Oniguruma and run here by PCRE2 (UTF, Unicode properties, JIT
// where available) after a translation that makes both match every text the same way.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace cllm {

// GPT-2's pattern, which ByteLevel with use_regex applies.
extern const char* const kGpt2SplitPattern;

// \Q...\E quoting of a literal (a "\E" inside is split out of the quote).
std::string bpe_regex_quote(const std::string& literal);

class BpeRegex {
 public:
  // A pattern that does not compile is refused naming origin, the pattern and its translation.
  BpeRegex(const std::string& pattern, const std::string& origin);
  ~BpeRegex();
  BpeRegex(const BpeRegex&) = delete;
  BpeRegex& operator=(const BpeRegex&) = delete;

  // The non-empty matches in s as [begin, end) byte offsets, leftmost first, not overlapping
  // (an empty match matches nothing: the search steps over one character). s is valid UTF-8.
  void find_all(const std::string& s, std::vector<std::pair<size_t, size_t>>& out) const;
  // s with every match replaced by with (literally).
  std::string replace_all(const std::string& s, const std::string& with) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code
};

}  // namespace cllm
