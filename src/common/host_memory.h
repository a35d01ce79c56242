// Large host allocations that are read at memory speed: aligned to 2 MiB and advised to use
// transparent huge pages (MADV_HUGEPAGE), so streaming hundreds of MiB neither walks 4 KiB page
// tables nor, when the memory is later page-locked for DMA, pins pages one by one.
#pragma once

#include <cstdint>
#include <memory>

namespace cllm {

using HostMemory = std::unique_ptr<uint8_t, void (*)(void*)>;

// The memory is neither zeroed nor touched: its pages appear as it is first written (by the
// threads that fill it, in parallel). Null when the system refuses the allocation.
HostMemory allocate_huge_page_memory(uint64_t bytes);

}  // namespace cllm
