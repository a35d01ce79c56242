// A GGUF file's tensors as SourceTensors. F32, F16 and BF16 tensors point into the mapping.
// Quantized tensors (gguf_dequant.h) are dequantized into buffers the SourceModel owns, and
// then every matrix of the model (2-D tensor) is stored in one dtype: the narrowest of bf16,
// f16 and f32 that holds every matrix value exactly. One dtype because the GPU engine runs
// all linear layers in one dtype; in practice it is f32, since a scale (11 significant bits)
// times a 4- or 8-bit integer rarely fits bf16's 8 or f16's 11 (docs/importers.md).
#pragma once

#include <map>
#include <string>

#include "convert/gguf_reader.h"
#include "convert/source_model.h"

namespace cllm {

// What the import did to quantized tensors, for the metadata and the CLI.
struct GgufQuantization {
  std::map<std::string, int> tensors_by_type;  // "Q4_1" -> number of tensors of that type
  DType matrix_dtype = DType::F32;             // the dtype the matrices are stored in
  uint64_t file_bytes = 0;                     // the GGUF file's size

  bool any() const { return !tensors_by_type.empty(); }
  std::string types() const;                   // "Q4_1 (210 tensors), Q8_0 (1 tensor)"
};

// Adds every tensor but rope_freqs.weight (returned, null when absent: it holds the RoPE
// scaling, not a weight) to m.tensors. Types other than F32, F16, BF16 and those of
// gguf_dequant.h are refused naming the tensor and type.
const GGUFTensorInfo* add_gguf_tensors(const GGUFFile& g, SourceModel& m, GgufQuantization* q);

// Writes general.source.quantization, .dequantized_dtype and .file_bytes into the model's
// metadata when q.any() (nothing otherwise).
void record_gguf_quantization(const GgufQuantization& q, SourceModel& m);

}  // namespace cllm
