#include "text/spm_pieces.h"

#include <cstdint>

#include "common/error.h"

namespace cllm {

namespace {

// The protobuf wire format, as far as spm_piece_problem needs it: a varint at p (false past end).
bool read_varint(const uint8_t*& p, const uint8_t* end, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64 && p < end; shift += 7) {
    const uint8_t b = *p++;
    *v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// One field of a message in [p, end): its number, and for a length-delimited field its bytes
// (others are skipped). False at the end of the bytes or on anything not the wire format.
bool next_field(const uint8_t*& p, const uint8_t* end, uint64_t* number, std::string_view* bytes) {
  uint64_t key = 0, len = 0;
  if (p >= end || !read_varint(p, end, &key)) return false;
  *number = key >> 3;
  *bytes = {};
  switch (key & 7) {
    case 0: return read_varint(p, end, &len);
    case 1:
    case 5: {
      const size_t skip = (key & 7) == 1 ? 8 : 4;
      if (static_cast<size_t>(end - p) < skip) return false;
      p += skip;
      return true;
    }
    case 2:
      if (!read_varint(p, end, &len) || len > static_cast<uint64_t>(end - p)) return false;
      *bytes = std::string_view(reinterpret_cast<const char*>(p), len);
      p += len;
      return true;
    default: return false;
  }
}

}  // namespace

std::string spm_piece_problem(std::string_view proto) {
  // ModelProto field 1: a SentencePiece message, whose field 1 is the piece
  const uint8_t* p = reinterpret_cast<const uint8_t*>(proto.data());
  const uint8_t* end = p + proto.size();
  uint64_t number = 0;
  std::string_view message;
  for (size_t index = 0; next_field(p, end, &number, &message);) {
    if (number != 1) continue;
    const uint8_t* q = reinterpret_cast<const uint8_t*>(message.data());
    const uint8_t* q_end = q + message.size();
    std::string_view piece;
    for (uint64_t field = 0; next_field(q, q_end, &field, &piece);) {
      if (field != 1) continue;
      if (piece.empty()) return cat("piece ", index, " is empty");
      if (piece.find('\0') != std::string_view::npos) return cat("piece ", index, " contains a NUL byte");
    }
    ++index;
  }
  return "";
}

}  // namespace cllm
