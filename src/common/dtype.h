// Element types of stored tensors, and exact conversions between the float formats.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace cllm {

// Values are part of the .cllm format (docs/format.md): never renumber.
enum class DType : uint8_t {
  F32 = 0,   // IEEE binary32
  F16 = 1,   // IEEE binary16
  BF16 = 2,  // bfloat16: the top 16 bits of a binary32
  U8 = 3,    // opaque bytes (embedded tokenizer files)
};

size_t dtype_size(DType t);         // bytes per element
const char* dtype_name(DType t);    // "f32", "f16", "bf16", "u8"
bool dtype_from_name(const std::string& name, DType* out);
bool dtype_valid(uint8_t raw);      // raw byte is a known DType

inline float f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// bf16 -> f32 is exact (a shift).
inline float bf16_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

// f32 -> bf16, round to nearest even; NaN stays NaN (quietened).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// f16 -> f32 is exact (subnormals, Inf and NaN payloads included).
float f16_to_f32(uint16_t h);
// f32 -> f16, round to nearest even, overflow to Inf.
uint16_t f32_to_f16(float f);

// Converts n elements of type t at src to float (t must be F32, F16 or BF16).
void to_f32(DType t, const void* src, float* dst, size_t n);

}  // namespace cllm
