// The string functions chat templates call, as Python spells them: Jinja's trim and str.strip()
// (Unicode white space, UTF-8), and strip/lstrip/rstrip of a set of ASCII characters.
#pragma once

#include <string>

namespace cllm {

std::string trim(const std::string& s);  // Jinja's |trim, Python's str.strip()
std::string strip_chars(const std::string& s, const std::string& chars);   // s.strip(chars)
std::string lstrip_chars(const std::string& s, const std::string& chars);  // s.lstrip(chars)
std::string rstrip_chars(const std::string& s, const std::string& chars);  // s.rstrip(chars)
std::string replace_all(const std::string& s, const std::string& from, const std::string& to);  // s.replace(from, to)

}  // namespace cllm
