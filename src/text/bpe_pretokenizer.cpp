#include "text/bpe_pretokenizer.h"

#include <algorithm>
#include <utility>

#include "common/error.h"

namespace cllm {

namespace {

using Range = std::pair<size_t, size_t>;

// s cut at the matches: every stretch [begin, end) with whether it is a match (inverted: the
// text between matches counts as the match), covering s in order.
std::vector<std::pair<Range, bool>> segments(const std::string& s, const BpeRegex& re, bool invert) {
  std::vector<Range> matches;
  re.find_all(s, matches);
  std::vector<std::pair<Range, bool>> out;
  size_t last = 0;
  for (const auto& m : matches) {
    if (m.first > last) out.push_back({{last, m.first}, invert});
    out.push_back({m, !invert});
    last = m.second;
  }
  if (last < s.size()) out.push_back({{last, s.size()}, invert});
  return out;
}

// The ranges the pieces keep, as Hugging Face's SplitDelimiterBehavior folds the segments.
std::vector<Range> fold(const std::vector<std::pair<Range, bool>>& segs, BpeSplitBehavior behavior) {
  std::vector<Range> out;
  bool previous_match = false;
  switch (behavior) {
    case BpeSplitBehavior::isolated:
      for (const auto& [r, m] : segs) out.push_back(r);
      break;
    case BpeSplitBehavior::removed:
      for (const auto& [r, m] : segs)
        if (!m) out.push_back(r);
      break;
    case BpeSplitBehavior::merged_with_previous:  // a match joins the piece before it
      for (const auto& [r, m] : segs) {
        if (m && !previous_match && !out.empty()) out.back().second = r.second;
        else out.push_back(r);
        previous_match = m;
      }
      break;
    case BpeSplitBehavior::merged_with_next:  // a match joins the piece after it
      for (size_t k = segs.size(); k-- > 0;) {
        const auto& [r, m] = segs[k];
        if (m && !previous_match && !out.empty()) out.back().first = r.first;
        else out.push_back(r);
        previous_match = m;
      }
      std::reverse(out.begin(), out.end());
      break;
    case BpeSplitBehavior::contiguous:  // runs of matches, runs of the rest
      for (size_t k = 0; k < segs.size(); ++k) {
        const auto& [r, m] = segs[k];
        if (k > 0 && m == previous_match) out.back().second = r.second;
        else out.push_back(r);
        previous_match = m;
      }
      break;
  }
  return out;
}

std::string replace_spaces(const std::string& s, const std::string& with) {
  std::string out;
  for (char c : s) {
    if (c == ' ') out += with;
    else out += c;
  }
  return out;
}

}  // namespace

BpePretokenizer::BpePretokenizer(const std::vector<BpePreStep>& steps, const std::string& origin) {
  for (const auto& s : steps) {
    Step step{s, nullptr};
    if (s.kind == BpePreStep::Kind::split) step.regex = std::make_unique<BpeRegex>(s.pattern, origin);
    if (s.kind == BpePreStep::Kind::byte_level && s.use_regex)
      step.regex = std::make_unique<BpeRegex>(kGpt2SplitPattern, origin);
    if (s.kind == BpePreStep::Kind::metaspace) {
      if (s.replacement.empty()) fail(origin, ": Metaspace replacement is empty");
      if (s.split) step.regex = std::make_unique<BpeRegex>(bpe_regex_quote(s.replacement), origin);
    }
    steps_.push_back(std::move(step));
  }
}

BpePretokenizer::~BpePretokenizer() = default;

// One step on one piece: the pieces it becomes, appended to out (empty ones dropped).
void BpePretokenizer::apply(const Step& step, Piece piece, std::vector<Piece>& out) const {
  const BpePreStep& s = step.spec;
  BpeSplitBehavior behavior = BpeSplitBehavior::isolated;
  bool invert = false;
  if (s.kind == BpePreStep::Kind::split) {
    behavior = s.behavior;
    invert = s.invert;
  } else if (s.kind == BpePreStep::Kind::byte_level) {
    if (s.add_prefix_space && piece.text[0] != ' ') piece.text.insert(piece.text.begin(), ' ');
  } else {  // metaspace
    piece.text = replace_spaces(piece.text, s.replacement);
    const bool prepend = s.prepend == BpePreStep::Prepend::always || (s.prepend == BpePreStep::Prepend::first && piece.at_start);
    if (prepend && piece.text.compare(0, s.replacement.size(), s.replacement) != 0) piece.text.insert(0, s.replacement);
    behavior = BpeSplitBehavior::merged_with_next;
  }
  if (!step.regex) {
    out.push_back(std::move(piece));
    return;
  }
  for (const auto& [b, e] : fold(segments(piece.text, *step.regex, invert), behavior))
    if (e > b) out.push_back({piece.text.substr(b, e - b), piece.at_start && b == 0});
}

void BpePretokenizer::split(const std::string& text, bool at_start, std::vector<std::string>& pieces) const {
  std::vector<Piece> cur{{text, at_start}}, next;
  for (const auto& step : steps_) {
    next.clear();
    for (auto& p : cur) apply(step, std::move(p), next);
    cur.swap(next);
  }
  pieces.clear();
  for (auto& p : cur)
    if (!p.text.empty()) pieces.push_back(std::move(p.text));
}

}  // namespace cllm
