#include "runtime/gpu_host_memory.h"

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

namespace cllm {

PinnedBuffer::~PinnedBuffer() {
  if (ptr_) cudaFreeHost(ptr_);
}

bool PinnedBuffer::allocate(size_t bytes) {
  if (ptr_) cudaFreeHost(ptr_);
  ptr_ = device_ptr_ = nullptr;
  size_ = 0;
  if (bytes == 0) return true;
  void* p = nullptr;
  void* d = nullptr;
  if (cudaHostAlloc(&p, bytes, cudaHostAllocMapped) != cudaSuccess) {
    cudaGetLastError();  // clear it: the caller falls back to pageable memory
    return false;
  }
  ptr_ = static_cast<uint8_t*>(p);
  size_ = bytes;
  CLLM_CUDA_CHECK(cudaHostGetDevicePointer(&d, p, 0));
  device_ptr_ = static_cast<uint8_t*>(d);
  return true;
}

bool RegisteredHostMemory::allocate(size_t bytes) {
  release();
  memory_ = allocate_huge_page_memory(bytes);
  size_ = memory_ ? bytes : 0;
  return memory_ != nullptr;
}

bool RegisteredHostMemory::pin() {
  if (!memory_ || pinned_) return pinned_;
  pinned_ = cudaHostRegister(memory_.get(), size_, cudaHostRegisterDefault) == cudaSuccess;
  if (!pinned_) cudaGetLastError();  // clear it: the memory stays usable, pageable
  return pinned_;
}

void RegisteredHostMemory::release() {
  if (pinned_) cudaHostUnregister(memory_.get());
  pinned_ = false;
  memory_.reset();
  size_ = 0;
}

}  // namespace cllm
