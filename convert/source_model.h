// A model as an importer found it: hyper-parameters, tokenizer, and tensors that point into
// the memory-mapped source files (no copies). Every importer (HF safetensors folder, llama2.c
// .bin, GGUF) produces one; the compress pipeline and `verify SOURCE` consume it.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/file_io.h"
#include "model/llama_config.h"

namespace cllm {

enum class SourceFormat { hf, llama2c, gguf };
const char* source_format_name(SourceFormat f);

struct SourceTensor {
  std::string name;             // canonical name, e.g. "blk.3.attn_q.weight"
  std::string source_name;      // the name in the source file, for error messages
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;  // outermost first, PyTorch order [out, in]
  const uint8_t* data = nullptr;  // little-endian values inside a mapped source file (or SourceModel::owned)
  uint64_t size = 0;              // bytes == product(shape) * dtype_size(dtype)
  // A tensor computed on demand instead of mapped (synth's generated weights; data is null):
  // writes elements [first, first + n) into out (n * dtype_size(dtype) bytes). Called from
  // several threads at once for different ranges. Only compress_model reads such tensors.
  std::function<void(uint64_t first, uint64_t n, uint8_t* out)> fill;
};

struct SourceTokenizer {
  std::string kind;             // "sentencepiece" or "bpe" ("" = none found)
  std::vector<uint8_t> data;    // SentencePiece ModelProto, or compact BPE data (text/bpe_tokenizer.h)
  std::string origin;           // where it came from, e.g. "tokenizer.model", "gguf metadata"
};

struct SourceModel {
  SourceFormat format = SourceFormat::hf;
  std::string path;                     // what the user named
  LlamaConfig config;
  nlohmann::json extra_metadata;        // general.name, source details, tokenizer ids...
  SourceTokenizer tokenizer;
  std::vector<SourceTensor> tensors;    // exactly expected_tensors(config), in that order
  std::vector<std::unique_ptr<MappedFile>> files;  // keep the mappings alive
  // Tensors an importer computed rather than mapped (dequantized GGUF weights); SourceTensor::data
  // points into these, so they live as long as the model.
  std::vector<std::vector<uint8_t>> owned;

  const SourceTensor* find(const std::string& name) const;
  uint64_t total_bytes() const;         // sum of tensor sizes
};

struct ImportOptions {
  std::string tokenizer_path;  // --tokenizer FILE: a SentencePiece .model, a llama2.c tokenizer .bin or a tokenizer.json
};

// Detects the format of path (a directory is an HF folder; ".gguf" magic; otherwise llama2.c)
// and imports it. Throws cllm::Error naming the file and what is wrong.
SourceModel open_source_model(const std::string& path, const ImportOptions& opt = {});

SourceModel import_hf_folder(const std::string& dir, const ImportOptions& opt);
// An HF folder's config.json, tokenizer and metadata with the given tensors instead of its
// safetensors files (synth writing a .cllm directly): `hf_tensors` carry HF names in `name`
// and are renamed, checked and ordered exactly as import_hf_folder does with a folder's.
SourceModel import_hf_folder_with_tensors(const std::string& dir, const ImportOptions& opt,
                                          std::vector<SourceTensor> hf_tensors);
SourceModel import_llama2c(const std::string& path, const ImportOptions& opt);
SourceModel import_gguf(const std::string& path, const ImportOptions& opt);

// Checks that the tensors are exactly those the config implies (names, shapes, sizes, dtypes
// F32/F16/BF16), reorders them into expected_tensors() order. Throws naming the tensor.
void check_and_order_tensors(SourceModel& m);

}  // namespace cllm
