// Sizes as users write them and as messages print them.
#pragma once

#include <cstdint>
#include <string>

namespace cllm {

// "2.5G", "512M", "8GiB", "3000000000" -> bytes (K, M, G, T are powers of 1024, any case, with
// an optional B or iB); throws naming the text otherwise.
uint64_t parse_size(const std::string& text);

std::string format_gib(uint64_t bytes);  // "2.13 GiB" (MiB below 1 GiB)

}  // namespace cllm
