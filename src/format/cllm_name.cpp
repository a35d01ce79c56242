// The rule every group and tensor name must pass, in the writer and the reader alike
// (docs/format.md, "Names"): 1..kMaxNameBytes bytes of valid UTF-8, no ASCII control bytes.
#include <cstdio>

#include "common/error.h"
#include "format/cllm_format.h"

namespace cllm {

std::string cllm_name_problem(const std::string& name) {
  if (name.empty()) return "empty (expected 1.." + std::to_string(kMaxNameBytes) + " bytes)";
  if (name.size() > kMaxNameBytes)
    return cat(name.size(), " bytes long (expected at most ", kMaxNameBytes, ")");
  // UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF; and no ASCII
  // control bytes, so that a name prints as it is in errors and listings.
  const auto* s = reinterpret_cast<const uint8_t*>(name.data());
  const size_t n = name.size();
  for (size_t i = 0; i < n;) {
    const uint8_t c = s[i];
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "0x%02X", c);
      return cat("contains the control byte ", buf, " at byte ", i);
    }
    if (c < 0x80) {
      ++i;
      continue;
    }
    // Lead byte: sequence length, its payload bits, the smallest code point of that length.
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1Fu, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0Fu, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07u, min = 0x10000;
    } else {
      return cat("not valid UTF-8 at byte ", i);
    }
    if (i + len > n) return cat("not valid UTF-8 at byte ", i, " (sequence cut short)");
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return cat("not valid UTF-8 at byte ", i);
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return cat("not valid UTF-8 at byte ", i);
    i += len;
  }
  return "";
}

}  // namespace cllm
