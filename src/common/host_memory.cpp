#include "common/host_memory.h"

#include <cstdlib>

#include <sys/mman.h>

namespace cllm {

HostMemory allocate_huge_page_memory(uint64_t bytes) {
  constexpr uint64_t kHugePage = uint64_t(2) << 20;
  const uint64_t size = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = size > 0 ? std::aligned_alloc(kHugePage, size) : nullptr;
  if (p) madvise(p, size, MADV_HUGEPAGE);  // advice only: without huge pages it still works
  return HostMemory(static_cast<uint8_t*>(p), &std::free);
}

}  // namespace cllm
