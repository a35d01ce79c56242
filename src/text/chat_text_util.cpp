#include "text/chat_text_util.h"

namespace cllm {

namespace {

// Python's str.isspace() on the character at i: ASCII white space, the separators \x1c-\x1f,
// NEL, NBSP and the Unicode spaces UTF-8 spells in 2-3 bytes. *len: its bytes.
bool space_at(const std::string& s, size_t i, size_t* len) {
  static const char* const wide[] = {"\xC2\x85", "\xC2\xA0", "\xE1\x9A\x80", "\xE2\x80\x80", "\xE2\x80\x81",
                                     "\xE2\x80\x82", "\xE2\x80\x83", "\xE2\x80\x84", "\xE2\x80\x85", "\xE2\x80\x86",
                                     "\xE2\x80\x87", "\xE2\x80\x88", "\xE2\x80\x89", "\xE2\x80\x8A", "\xE2\x80\xA8",
                                     "\xE2\x80\xA9", "\xE2\x80\xAF", "\xE2\x81\x9F", "\xE3\x80\x80"};
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) {
    *len = 1;
    return true;
  }
  for (const char* w : wide) {
    const size_t n = std::char_traits<char>::length(w);
    if (s.compare(i, n, w) == 0) {
      *len = n;
      return true;
    }
  }
  return false;
}

}  // namespace

std::string trim(const std::string& s) {
  size_t b = 0, len = 0;
  while (b < s.size() && space_at(s, b, &len)) b += len;
  size_t e = b;  // end of the last non-space character
  for (size_t i = b; i < s.size();) {
    if (space_at(s, i, &len)) {
      i += len;
    } else {
      ++i;
      while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
      e = i;
    }
  }
  return s.substr(b, e - b);
}

std::string lstrip_chars(const std::string& s, const std::string& chars) {
  const size_t b = s.find_first_not_of(chars);
  return b == std::string::npos ? "" : s.substr(b);
}

std::string rstrip_chars(const std::string& s, const std::string& chars) {
  const size_t e = s.find_last_not_of(chars);
  return e == std::string::npos ? "" : s.substr(0, e + 1);
}

std::string strip_chars(const std::string& s, const std::string& chars) {
  return rstrip_chars(lstrip_chars(s, chars), chars);
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t at = 0;
  for (size_t hit; (hit = s.find(from, at)) != std::string::npos; at = hit + from.size())
    out += s.substr(at, hit - at) + to;
  return out + s.substr(at);
}

}  // namespace cllm
