#include "text/bpe_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdint>
#include <cstring>

#include "common/error.h"
#include "text/utf8.h"

namespace cllm {

const char* const kGpt2SplitPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

namespace {

// The library runs its regexes with Oniguruma, which differs from PCRE2 (10.42, Unicode 14) in
// two ways that change pieces, both measured over all code points (scripts/tokenizer-parity.py):
//   - its \s is Unicode's White_Space; PCRE2's \s (with UCP) also takes U+180E and U+001C..1F;
//   - its Unicode data is version 16: 9272 letters, 120 numbers and 93 marks are newer than PCRE2's.
// So \s and \S are spelled as the White_Space property, and the general categories the
// families' patterns use (\p{L}, \p{N}, \p{Lu}, \p{Ll}, \p{Lm}, \p{Lo}, \p{M}) get the code points
// Unicode 15.0-16.0 added to them, as the library classifies them (harmless where PCRE2 already
// knows them). \Q...\E is left alone.
struct NewerCodePoints {
  const char* property;  // as written after \p{
  const char* ranges;    // a character-class body
};
const NewerCodePoints kSince15[] = {
    {"L",
     "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}\\x{10D4A}-\\x{10D65}"
     "\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138B}"
     "\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}"
     "\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}"
     "\\x{16100}-\\x{1611D}\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}"
     "\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}\\x{2EBF0}-"
     "\\x{2EE5D}\\x{31350}-\\x{323AF}"},
    {"N",
     "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}\\x{16130}-"
     "\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"
     "\\x{1E5F1}-\\x{1E5FA}"},
    {"Lu",
     "\\x{1C89}\\x{A7CB}-\\x{A7CC}\\x{A7DA}\\x{A7DC}\\x{10D50}-\\x{10D65}"},
    {"Ll",
     "\\x{1C8A}\\x{A7CD}\\x{A7DB}\\x{10D70}-\\x{10D85}\\x{1DF25}-\\x{1DF2A}"},
    {"Lm",
     "\\x{10D4E}\\x{10D6F}\\x{16D40}-\\x{16D42}\\x{16D6B}-\\x{16D6C}\\x{1E030}-\\x{1E06D}\\x{1E4EB}"},
    {"Lo",
     "\\x{105C0}-\\x{105F3}\\x{10D4A}-\\x{10D4D}\\x{10D4F}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"
     "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}"
     "\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-"
     "\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}\\x{16D43}-\\x{16D6A}\\x{18CFF}\\x{1B132}"
     "\\x{1B155}\\x{1E4D0}-\\x{1E4EA}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}"
     "\\x{31350}-\\x{323AF}"},
    {"M",
     "\\x{897}\\x{CF3}\\x{ECE}\\x{10D69}-\\x{10D6D}\\x{10EFC}-\\x{10EFF}\\x{11241}\\x{113B8}-\\x{113C0}"
     "\\x{113C2}\\x{113C5}\\x{113C7}-\\x{113CA}\\x{113CC}-\\x{113D0}\\x{113D2}\\x{113E1}-\\x{113E2}"
     "\\x{11F00}-\\x{11F01}\\x{11F03}\\x{11F34}-\\x{11F3A}\\x{11F3E}-\\x{11F42}\\x{11F5A}\\x{13440}"
     "\\x{13447}-\\x{13455}\\x{1611E}-\\x{1612F}\\x{1E08F}\\x{1E4EC}-\\x{1E4EF}\\x{1E5EE}-\\x{1E5EF}"},
};

// The newer code points of the property named at p[i] ("p{Lu}..."), null for another escape.
const NewerCodePoints* newer_code_points(const std::string& p, size_t i) {
  for (const auto& n : kSince15)
    if (p.compare(i, 2, "p{") == 0 && p.compare(i + 2, std::strlen(n.property), n.property) == 0 &&
        p.compare(i + 2 + std::strlen(n.property), 1, "}") == 0)
      return &n;
  return nullptr;
}

std::string oniguruma_to_pcre2(const std::string& p) {
  std::string out;
  bool in_class = false;
  // A set of code points: as it is inside [...], bracketed outside.
  auto put_set = [&](const std::string& items) { out += in_class ? items : "[" + items + "]"; };
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c != '\\' || i + 1 >= p.size()) {
      if (c == '[' && !in_class) {
        in_class = true;
        out += c;
        if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
        if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ']' is literal
      } else if (c == '[' && in_class && p.compare(i, 2, "[:") == 0) {  // [:alpha:]
        const size_t end = p.find(":]", i + 2);
        const size_t stop = end == std::string::npos ? p.size() : end + 2;
        out.append(p, i, stop - i);
        i = stop - 1;
      } else {
        if (c == ']') in_class = false;
        out += c;
      }
      continue;
    }
    const char e = p[++i];
    if (e == 's') {
      out += "\\p{White_Space}";
    } else if (e == 'S') {
      out += "\\P{White_Space}";
    } else if (const NewerCodePoints* extra = newer_code_points(p, i)) {  // \p{Lu}: i at 'p'
      const size_t len = 3 + std::strlen(extra->property);
      put_set(p.substr(i - 1, len + 1) + extra->ranges);
      i += len - 1;
    } else if (e == 'Q') {
      const size_t end = p.find("\\E", i + 1);
      const size_t stop = end == std::string::npos ? p.size() : end + 2;
      out.append(p, i - 1, stop - (i - 1));
      i = stop - 1;
    } else {
      out += '\\';
      out += e;
    }
  }
  return out;
}


std::string pcre2_message(int err) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(err, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

// Match data for one search: room for 32 groups (with more, pcre2_match returns 0 but still
// sets the whole match).
struct MatchData {
  pcre2_match_data* p = pcre2_match_data_create(32, nullptr);
  MatchData() {
    if (!p) fail("out of memory for regex match data");
  }
  ~MatchData() { pcre2_match_data_free(p); }
};

}  // namespace

std::string bpe_regex_quote(const std::string& s) {
  std::string out = "\\Q";
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.compare(i, 2, "\\E") == 0) {
      out += "\\E\\\\E\\Q";
      ++i;
    } else {
      out += s[i];
    }
  }
  return out + "\\E";
}

BpeRegex::BpeRegex(const std::string& pattern, const std::string& origin) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE at = 0;
  const std::string pcre = oniguruma_to_pcre2(pattern);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre.data()), pcre.size(), PCRE2_UTF | PCRE2_UCP, &err,
                                   &at, nullptr);
  if (!code)
    fail(origin, ": pre-tokenizer regex '", pattern, "' does not compile (at offset ", at, " of '", pcre, "'): ",
         pcre2_message(err));
  uint32_t jit = 0;
  if (pcre2_config(PCRE2_CONFIG_JIT, &jit) >= 0 && jit) pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back silently
  code_ = code;
}

BpeRegex::~BpeRegex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void BpeRegex::find_all(const std::string& s, std::vector<std::pair<size_t, size_t>>& out) const {
  MatchData md;
  auto* code = static_cast<pcre2_code*>(code_);
  size_t start = 0;
  while (start <= s.size()) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, PCRE2_NO_UTF_CHECK, md.p,
                               nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) fail("pre-tokenizer regex '", pattern_, "': matching failed: ", pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.p);
    const size_t b = ov[0], e = ov[1];
    if (e == b) {  // an empty match: step over one character
      if (b >= s.size()) break;
      size_t len = 1;
      utf8_code_point(s, b, &len);
      start = b + len;
      continue;
    }
    out.emplace_back(b, e);
    start = e;
  }
}

std::string BpeRegex::replace_all(const std::string& s, const std::string& with) const {
  std::vector<std::pair<size_t, size_t>> matches;
  find_all(s, matches);
  std::string out;
  size_t last = 0;
  for (const auto& [b, e] : matches) {
    out.append(s, last, b - last);
    out += with;
    last = e;
  }
  return out.append(s, last, std::string::npos);
}

}  // namespace cllm
