// UTF-8 validation and repair, as the Hugging Face tokenizers library and Python see it:
// each maximal ill-formed subpart (Unicode 15, section 3.9, "U+FFFD substitution of maximal
// subparts") becomes one U+FFFD. Python's bytes.decode(errors="replace") and Rust's
// String::from_utf8_lossy follow the same rule, so a repaired text matches theirs byte for byte.
// Also code points in and out, for the tokenizers' byte-level alphabet and white space.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace cllm {

extern const char* const kUtf8Replacement;  // "\xEF\xBF\xBD", U+FFFD

enum class Utf8Step { valid, invalid, incomplete };

// Classifies the sequence at p[0..n) (n >= 1): valid (*len = its length), invalid (*len = the
// maximal subpart to replace, >= 1), or incomplete (a valid start that runs past n; *len = n).
Utf8Step utf8_step(const uint8_t* p, size_t n, size_t* len);

bool utf8_is_valid(const std::string& s);

// s with every ill-formed subpart replaced by U+FFFD.
std::string utf8_repair(const std::string& s);

// Appends the repaired text of in[0..n) to *out, holding back a trailing incomplete sequence
// unless final; returns the number of bytes consumed (the rest is to be retried with more).
size_t utf8_repair_prefix(const char* in, size_t n, bool final, std::string* out);

// The code point of the sequence at s[i] (i < s.size()), *len its length; 0xFFFFFFFF when that
// sequence is not valid (*len then as utf8_step gives it).
uint32_t utf8_code_point(const std::string& s, size_t i, size_t* len);

// Appends code point cp (at most 0x10FFFF) as UTF-8.
void utf8_append(uint32_t cp, std::string& out);

}  // namespace cllm
