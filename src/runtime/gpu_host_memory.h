// Host memory the GPU reads directly: page-locked buffers (mapped into the device's address
// space) for small hand-overs, and large regions locked in place for the streamed weights'
// DMA copies (CUDA builds only).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/host_memory.h"

namespace cllm {

// Page-locked host memory (cudaHostAlloc), mapped into the device's address space;
// allocate() returns false when the system refuses.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  bool allocate(size_t bytes);
  uint8_t* data() { return ptr_; }
  uint8_t* device_data() { return device_ptr_; }  // the same bytes, for kernels to read and write
  size_t size() const { return size_; }

 private:
  uint8_t* ptr_ = nullptr;
  uint8_t* device_ptr_ = nullptr;
  size_t size_ = 0;
};

// The streamed steps' compressed bytes in host RAM, page-locked for DMA: allocated pageable on
// huge pages, filled by the caller's threads, then locked in place (cudaHostRegister): several
// times faster than cudaHostAlloc, which zeroes and locks 4 KiB pages one by one and was most
// of lowmem's time to first token (docs/perf-notes.md has the figures).
class RegisteredHostMemory {
 public:
  RegisteredHostMemory() = default;
  ~RegisteredHostMemory() { release(); }
  RegisteredHostMemory(const RegisteredHostMemory&) = delete;
  RegisteredHostMemory& operator=(const RegisteredHostMemory&) = delete;
  bool allocate(size_t bytes);  // pageable until pin(); false when the system refuses
  bool pin();                   // false (and still pageable) when the driver refuses
  void release();
  uint8_t* data() { return memory_.get(); }
  bool pinned() const { return pinned_; }

 private:
  HostMemory memory_{nullptr, &std::free};
  size_t size_ = 0;
  bool pinned_ = false;
};

}  // namespace cllm
