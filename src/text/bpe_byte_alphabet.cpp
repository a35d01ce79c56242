#include "text/bpe_byte_alphabet.h"

#include <array>
#include <cstdint>
#include <unordered_map>

#include "text/utf8.h"

namespace cllm {

namespace {

struct ByteTable {
  std::array<uint32_t, 256> to_cp{};
  std::unordered_map<uint32_t, uint8_t> to_byte;
  ByteTable() {
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = printable ? b : 256 + extra++;
      to_byte[to_cp[b]] = static_cast<uint8_t>(b);
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable t;
  return t;
}

}  // namespace

std::string bpe_bytes_to_piece(const std::string& bytes) {
  std::string out;
  for (unsigned char b : bytes) utf8_append(byte_table().to_cp[b], out);
  return out;
}

bool bpe_piece_to_bytes(const std::string& piece, std::string* bytes) {
  bytes->clear();
  const auto& t = byte_table().to_byte;
  for (size_t i = 0, len = 0; i < piece.size(); i += len) {
    const uint32_t cp = utf8_code_point(piece, i, &len);
    auto it = t.find(cp);
    if (it == t.end()) return false;
    *bytes += static_cast<char>(it->second);
  }
  return true;
}

}  // namespace cllm
