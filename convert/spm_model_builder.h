// Builds a serialized SentencePiece ModelProto from a vocabulary (pieces, scores, types), for
// sources whose tokenizer is not a .model file: llama2.c tokenizer .bin files and GGUF
// "tokenizer.ggml.*" metadata. Debian's libsentencepiece-dev ships no protobuf headers for the
// model, so this writes the protobuf wire format itself, only the fields SentencePiece's BPE
// encoder reads (field numbers from google/sentencepiece src/sentencepiece_model.proto):
//
//   ModelProto      { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
//                     NormalizerSpec normalizer_spec = 3; }
//   SentencePiece   { string piece = 1; float score = 2; Type type = 3; }
//   TrainerSpec     { ModelType model_type = 3; int32 vocab_size = 4; bool byte_fallback = 35;
//                     int32 unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43;
//                     string unk_piece = 45, bos_piece = 46, eos_piece = 47; }
//   NormalizerSpec  { string name = 1; bool add_dummy_prefix = 3;
//                     bool remove_extra_whitespaces = 4; bool escape_whitespaces = 5; }
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cllm {

// SentencePiece.Type; the same numbers as GGUF's tokenizer.ggml.token_type.
enum class SpmPieceType : int {
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,  // "<0xNN>", used by byte fallback
};

struct SpmPiece {
  std::string piece;  // UTF-8, whitespace written as U+2581, never empty
  float score = 0.0f;
  SpmPieceType type = SpmPieceType::normal;
};

struct SpmModelSpec {
  std::vector<SpmPiece> pieces;
  int unk_id = 0;  // must be a piece of type unknown
  int bos_id = 1;  // -1: none
  int eos_id = 2;  // -1: none
  // Normalizer: SentencePiece's "identity" rule plus these whitespace flags.
  bool add_dummy_prefix = true;           // prepend U+2581 to the input
  bool remove_extra_whitespaces = false;  // collapse runs of spaces, strip both ends
};

// Serializes spec as a BPE ModelProto (byte_fallback on when the vocabulary has byte pieces).
// Throws cllm::Error naming the first bad piece (empty, out-of-range ids). It does not load
// the result: callers check it with SentencePiece (see tokenizer_import.h).
std::vector<uint8_t> build_spm_model(const SpmModelSpec& spec);

// True when s is exactly "<0xNN>" with two upper-case hex digits (SentencePiece's byte pieces).
bool is_spm_byte_piece(const std::string& s);

}  // namespace cllm
