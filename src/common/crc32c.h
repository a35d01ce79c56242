// CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected, init and final xor 0xFFFFFFFF):
// the checksum of every tile in a .cllm file. Uses the SSE4.2 crc32 instruction when the
// CPU has it, a table otherwise. crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cllm {

// Continues a running checksum: crc32c(b, nb, crc32c(a, na)) == crc32c(a ++ b).
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace cllm
