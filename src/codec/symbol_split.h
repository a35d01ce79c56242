// Internal to src/codec: splitting an element value into its 8-bit symbol and its raw bytes,
// and joining them back (docs/codec.md, "Symbols and raw bytes"). One struct per element
// width; the encoder and decoder are templates over them. Values are loaded and stored with
// memcpy: callers' buffers (mmapped files, offsets into containers) need not be aligned.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/tile_format.h"

namespace cllm::codec {

// A 16-bit element's raw byte r with its bits in place: ((r & 0x80) << 8) | (r & 0x7F). The
// 512-byte table saves the decoder's inner loop four instructions per element.
struct RawBits16 {
  uint16_t v[256];
  constexpr RawBits16() : v() {
    for (uint32_t r = 0; r < 256; ++r) v[r] = static_cast<uint16_t>(((r & 0x80u) << 8) | (r & 0x7Fu));
  }
};
inline constexpr RawBits16 kRawBits16{};

// bf16 and f16: symbol = bits 7..14 (bf16: the exponent; f16: 5 exponent + 3 mantissa bits),
// raw byte = sign (bit 15) moved to bit 7, plus mantissa bits 0..6.
struct Split16 {
  using Value = uint16_t;
  static constexpr uint32_t kRawBytes = tile_format::kRawBytes16;
  static Value load(const uint8_t* p) { Value v; std::memcpy(&v, p, sizeof v); return v; }
  static void store(uint8_t* p, Value v) { std::memcpy(p, &v, sizeof v); }
  static uint32_t symbol(Value v) { return (v >> tile_format::kSymbolShift16) & 0xFFu; }
  static void put_raw(Value v, uint8_t* raw) {
    raw[0] = static_cast<uint8_t>(((v >> 8) & 0x80u) | (v & 0x7Fu));
  }
  static Value join(uint32_t s, const uint8_t* raw) { return static_cast<Value>(kRawBits16.v[raw[0]] | (s << tile_format::kSymbolShift16)); }
};

// f32: symbol = the exponent (bits 23..30); raw = 23 mantissa bits with the sign moved to
// bit 23, stored as 3 bytes little-endian.
struct Split32 {
  using Value = uint32_t;
  static constexpr uint32_t kRawBytes = tile_format::kRawBytes32;
  static Value load(const uint8_t* p) { Value v; std::memcpy(&v, p, sizeof v); return v; }
  static void store(uint8_t* p, Value v) { std::memcpy(p, &v, sizeof v); }
  static uint32_t symbol(Value v) { return (v >> tile_format::kSymbolShift32) & 0xFFu; }
  static void put_raw(Value v, uint8_t* raw) {
    const uint32_t r = (v & 0x7FFFFFu) | ((v >> 8) & 0x800000u);
    raw[0] = static_cast<uint8_t>(r);
    raw[1] = static_cast<uint8_t>(r >> 8);
    raw[2] = static_cast<uint8_t>(r >> 16);
  }
  static Value join(uint32_t s, const uint8_t* raw) {
    const uint32_t r = uint32_t(raw[0]) | (uint32_t(raw[1]) << 8) | (uint32_t(raw[2]) << 16);
    return ((r & 0x800000u) << 8) | (s << tile_format::kSymbolShift32) | (r & 0x7FFFFFu);
  }
};

}  // namespace cllm::codec
