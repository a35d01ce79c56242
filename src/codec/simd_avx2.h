// Internal to src/codec: AVX2 inner loops of the encoder and decoder, the 32 lanes of a chunk
// as four vectors of 8. The scalar loops in tile_encoder.cpp and tile_decoder.cpp are the
// readable reference and do everything these do not (f32 decoding, partial steps, a stream's
// last bytes, CPUs without AVX2); both give the same bytes and errors, which
// tests/test-codec.cpp checks by running everything both ways. They are built for every
// x86-64 target with a function attribute and chosen at run time, so the binary still runs
// on CPUs without AVX2.
#pragma once

#include <cstdint>

// The AVX2 loops exist in x86-64 builds by GCC or Clang; elsewhere the functions below are
// stubs and simd_enabled() is false.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CLLM_CODEC_AVX2 1
#else
#define CLLM_CODEC_AVX2 0
#endif

namespace cllm::codec {

// Whether encode_tile and decode_tile use the AVX2 loops: true where the CPU has AVX2,
// unless turned off.
bool simd_enabled();
// Turns the AVX2 loops off (false) or back on where the CPU has AVX2 (true). For tests and
// benchmarks; not to be called while another thread encodes or decodes.
void set_simd_enabled(bool allow);

// Decodes up to `steps` full steps (32 elements each) of a 16-bit chunk. x: the 32 lane
// states (updated); packed: RansDecodeTable::packed (2^prob_bits entries); raw and out: the
// raw bytes and output elements of the first step; [wp, end): the chunk's words left. Stops
// early when fewer than 64 bytes are left (a step reads at most 64), so it never reads outside
// the chunk's stream. Returns the number of steps decoded and advances wp.
uint32_t decode_steps16_avx2(uint32_t* x, const uint32_t* packed, uint32_t prob_bits, const uint8_t* raw,
                             uint8_t* out, uint32_t steps, const uint8_t*& wp, const uint8_t* end);

// Encodes full steps steps-1 .. 0 of a chunk whose symbols start at sym (the encoder's order:
// last step first, lane 31 to 0). x: the 32 lane states (updated); packed: RansEncodeTable::
// packed. Words are stored below wp, which moves down; each group of 8 lanes also writes
// junk in the 16 bytes below its words, so the buffer needs 8 spare words below the lowest
// word (later groups overwrite the junk).
void encode_steps_avx2(uint32_t* x, const uint32_t* packed, uint32_t prob_bits, const uint8_t* sym,
                       uint32_t steps, uint16_t*& wp);

}  // namespace cllm::codec
