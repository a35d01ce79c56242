// The GPU half of the hybrid planner's calibration (path_speeds.h): how fast this machine's
// PCIe link, GPU decoder, HBM and CPU layers move one layer of this model (CUDA builds only).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "format/cllm_reader.h"
#include "model/llama_config.h"
#include "runtime/path_speeds.h"
#include "runtime/weight_schedule.h"

namespace cllm {

// The GPU half of the calibration (path_speeds.h), on the schedule's first layer: pinned
// host -> device copies of its compressed bytes, the decoder on them, a device copy of the
// decoded layer (gpu_gbs: the one-token kernels read weights at about 60% of the copy rate,
// as measured in full mode, docs/benchmarks.md), and the hand-over of one token's activations
// to a host function and back. Then measure_cpu_layer, with pinned copies keeping PCIe busy.
// Uses temporary buffers of one layer; about half a second for an 8B model.
void measure_paths(const CllmFile& file, const WeightSchedule& s, const LlamaConfig& c, int threads, cudaStream_t stream,
                   PathSpeeds& out);

// The path speeds for this device, model shape and thread count: from the cache, or measured
// now (about half a second) and cached. cached says which.
PathSpeeds gpu_path_speeds(const CllmFile& file, const WeightSchedule& s, const LlamaConfig& c, int threads,
                           const std::string& device_name, bool& cached);

}  // namespace cllm
