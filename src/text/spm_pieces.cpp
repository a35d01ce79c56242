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

}  // namespace

std::string spm_piece_problem(std::string_view proto) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(proto.data());
  const uint8_t* end = p + proto.size();
  for (size_t index = 0; p < end;) {
    uint64_t key = 0, len = 0;
    if (!read_varint(p, end, &key)) return "";
    const int wire = static_cast<int>(key & 7);
    if (wire == 0) {
      if (!read_varint(p, end, &len)) return "";
      continue;
    }
    if (wire == 1 || wire == 5) {
      const size_t skip = wire == 1 ? 8 : 4;
      if (static_cast<size_t>(end - p) < skip) return "";
      p += skip;
      continue;
    }
    if (wire != 2 || !read_varint(p, end, &len) || len > static_cast<uint64_t>(end - p)) return "";
    const uint8_t* body = p;
    p += len;
    if ((key >> 3) != 1) continue;
    // one SentencePiece message: find its piece (field 1)
    for (const uint8_t* q = body; q < p;) {
      uint64_t k = 0, l = 0;
      if (!read_varint(q, p, &k)) return "";
      const int w = static_cast<int>(k & 7);
      if (w == 0) {
        if (!read_varint(q, p, &l)) return "";
      } else if (w == 1 || w == 5) {
        const size_t skip = w == 1 ? 8 : 4;
        if (static_cast<size_t>(p - q) < skip) return "";
        q += skip;
      } else if (w == 2 && read_varint(q, p, &l) && l <= static_cast<uint64_t>(p - q)) {
        if ((k >> 3) == 1) {
          const std::string piece(reinterpret_cast<const char*>(q), l);
          if (piece.empty()) return cat("piece ", index, " is empty");
          if (piece.find('\0') != std::string::npos) return cat("piece ", index, " contains a NUL byte");
        }
        q += l;
      } else {
        return "";
      }
    }
    ++index;
  }
  return "";
}

}  // namespace cllm
