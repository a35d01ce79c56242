// What the GPU engine measured while it ran: its VRAM peak and where a forward pass's time
// went (decoder, PCIe copies, stalls, CPU layers). Filled by the ring, the CPU-layer bridge
// and the forward pass; read by `run` and `bench`.
#pragma once

#include <cstdint>

namespace cllm {

// Cumulative since open() or the last reset_stats().
struct GpuStats {
  uint64_t vram_peak = 0;      // most device memory in use by this engine (cudaMemGetInfo), bytes
  double decode_ms = 0;        // GPU time of the tile decoder (ring modes)
  uint64_t decoded_bytes = 0;  // bytes written by it
  uint64_t h2d_bytes = 0;      // compressed bytes copied host -> device (lowmem)
  double h2d_ms = 0;           // GPU time of those copies
  double stall_ms = 0;         // time the compute stream waited for a layer's weights
  uint64_t steps = 0;          // weight steps run (layers and classifier slices)
  double cpu_ms = 0;           // host time in the CPU layers
  uint64_t cpu_steps = 0;      // layers computed on the CPU
  int forwards = 0;
};

}  // namespace cllm
