#include "text/utf8.h"

namespace cllm {

const char* const kUtf8Replacement = "\xEF\xBF\xBD";

Utf8Step utf8_step(const uint8_t* p, size_t n, size_t* len) {
  const uint8_t b = p[0];
  if (b < 0x80) {
    *len = 1;
    return Utf8Step::valid;
  }
  // Length and the allowed range of the second byte (later bytes are always 80..BF); the
  // narrowed ranges exclude overlong forms, surrogates and code points above U+10FFFF.
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) need = 2;
  else if (b == 0xE0) need = 3, lo = 0xA0;
  else if (b == 0xED) need = 3, hi = 0x9F;
  else if (b >= 0xE1 && b <= 0xEF) need = 3;
  else if (b == 0xF0) need = 4, lo = 0x90;
  else if (b == 0xF4) need = 4, hi = 0x8F;
  else if (b >= 0xF1 && b <= 0xF3) need = 4;
  if (need == 0) {  // 80..C1, F5..FF never start a character
    *len = 1;
    return Utf8Step::invalid;
  }
  for (size_t k = 1; k < need; ++k) {
    if (k >= n) {
      *len = n;
      return Utf8Step::incomplete;
    }
    const uint8_t c = p[k];
    const bool ok = k == 1 ? c >= lo && c <= hi : c >= 0x80 && c <= 0xBF;
    if (!ok) {
      *len = k;
      return Utf8Step::invalid;
    }
  }
  *len = need;
  return Utf8Step::valid;
}

bool utf8_is_valid(const std::string& s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  for (size_t i = 0, len = 0; i < s.size(); i += len)
    if (utf8_step(p + i, s.size() - i, &len) != Utf8Step::valid) return false;
  return true;
}

size_t utf8_repair_prefix(const char* in, size_t n, bool final, std::string* out) {
  const auto* p = reinterpret_cast<const uint8_t*>(in);
  size_t i = 0;
  while (i < n) {
    size_t len = 0;
    const Utf8Step step = utf8_step(p + i, n - i, &len);
    if (step == Utf8Step::incomplete && !final) break;
    if (step == Utf8Step::valid) out->append(in + i, len);
    else out->append(kUtf8Replacement);
    i += len;
  }
  return i;
}

std::string utf8_repair(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  utf8_repair_prefix(s.data(), s.size(), true, &out);
  return out;
}

uint32_t utf8_code_point(const std::string& s, size_t i, size_t* len) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + i;
  if (utf8_step(p, s.size() - i, len) != Utf8Step::valid) return 0xFFFFFFFFu;
  switch (*len) {
    case 1: return p[0];
    case 2: return (p[0] & 0x1Fu) << 6 | (p[1] & 0x3Fu);
    case 3: return (p[0] & 0x0Fu) << 12 | (p[1] & 0x3Fu) << 6 | (p[2] & 0x3Fu);
    default: return (p[0] & 0x07u) << 18 | (p[1] & 0x3Fu) << 12 | (p[2] & 0x3Fu) << 6 | (p[3] & 0x3Fu);
  }
}

void utf8_append(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace cllm
