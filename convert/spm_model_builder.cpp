#include "convert/spm_model_builder.h"

#include <cstring>

#include "common/error.h"

namespace cllm {

namespace {

// Protobuf wire format: each field is a varint key (field_number << 3 | wire_type) followed by a
// varint (type 0), 4 little-endian bytes (type 5) or a varint length and bytes (type 2).
class ProtoWriter {
 public:
  const std::vector<uint8_t>& bytes() const { return buf_; }

  void varint_field(int field, uint64_t v) {
    key(field, 0);
    varint(v);
  }
  // int32 fields are sign-extended to 64 bits: -1 takes ten bytes, as protobuf writes it.
  void int32_field(int field, int32_t v) { varint_field(field, static_cast<uint64_t>(static_cast<int64_t>(v))); }
  void bool_field(int field, bool v) { varint_field(field, v ? 1 : 0); }
  void float_field(int field, float v) {
    key(field, 5);
    uint32_t u;
    std::memcpy(&u, &v, 4);
    for (int i = 0; i < 4; ++i) buf_.push_back(static_cast<uint8_t>(u >> (8 * i)));
  }
  void bytes_field(int field, const void* data, size_t size) {
    key(field, 2);
    varint(size);
    const auto* p = static_cast<const uint8_t*>(data);
    buf_.insert(buf_.end(), p, p + size);
  }
  void string_field(int field, const std::string& s) { bytes_field(field, s.data(), s.size()); }
  void message_field(int field, const ProtoWriter& m) { bytes_field(field, m.buf_.data(), m.buf_.size()); }

 private:
  void key(int field, int wire) { varint(static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire)); }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      buf_.push_back(static_cast<uint8_t>(v | 0x80));
      v >>= 7;
    }
    buf_.push_back(static_cast<uint8_t>(v));
  }
  std::vector<uint8_t> buf_;
};

// ModelProto / SentencePiece / TrainerSpec / NormalizerSpec field numbers.
enum : int {
  kModelPieces = 1, kModelTrainerSpec = 2, kModelNormalizerSpec = 3,
  kPiecePiece = 1, kPieceScore = 2, kPieceType = 3,
  kTrainerModelType = 3, kTrainerVocabSize = 4, kTrainerByteFallback = 35,
  kTrainerUnkId = 40, kTrainerBosId = 41, kTrainerEosId = 42, kTrainerPadId = 43,
  kTrainerUnkPiece = 45, kTrainerBosPiece = 46, kTrainerEosPiece = 47,
  kNormName = 1, kNormAddDummyPrefix = 3, kNormRemoveExtraWhitespaces = 4, kNormEscapeWhitespaces = 5,
};
constexpr int kModelTypeBpe = 2;

}  // namespace

bool is_spm_byte_piece(const std::string& s) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return s.size() == 6 && s.compare(0, 3, "<0x") == 0 && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

std::vector<uint8_t> build_spm_model(const SpmModelSpec& spec) {
  const int n = static_cast<int>(spec.pieces.size());
  if (spec.pieces.empty()) fail("tokenizer: the vocabulary is empty");
  if (spec.unk_id < 0 || spec.unk_id >= n || spec.pieces[spec.unk_id].type != SpmPieceType::unknown)
    fail("tokenizer: unknown-token id ", spec.unk_id, " is not a piece of type UNKNOWN");
  for (int id : {spec.bos_id, spec.eos_id})
    if (id < -1 || id >= n) fail("tokenizer: special token id ", id, " is outside the vocabulary of ", n);

  ProtoWriter model;
  bool has_bytes = false;
  for (int i = 0; i < n; ++i) {
    const SpmPiece& p = spec.pieces[i];
    if (p.piece.empty()) fail("tokenizer: token ", i, " is empty (SentencePiece needs non-empty pieces)");
    if (p.type == SpmPieceType::byte) {
      if (!is_spm_byte_piece(p.piece)) fail("tokenizer: token ", i, " '", p.piece, "' has type BYTE but is not <0xNN>");
      has_bytes = true;
    }
    ProtoWriter piece;
    piece.string_field(kPiecePiece, p.piece);
    piece.float_field(kPieceScore, p.score);
    piece.varint_field(kPieceType, static_cast<uint64_t>(p.type));
    model.message_field(kModelPieces, piece);
  }

  ProtoWriter trainer;
  trainer.varint_field(kTrainerModelType, kModelTypeBpe);
  trainer.int32_field(kTrainerVocabSize, n);
  trainer.bool_field(kTrainerByteFallback, has_bytes);
  trainer.int32_field(kTrainerUnkId, spec.unk_id);
  trainer.int32_field(kTrainerBosId, spec.bos_id);
  trainer.int32_field(kTrainerEosId, spec.eos_id);
  trainer.int32_field(kTrainerPadId, -1);
  // SentencePieceProcessor::bos_id() looks the special pieces up by these names.
  trainer.string_field(kTrainerUnkPiece, spec.pieces[spec.unk_id].piece);
  if (spec.bos_id >= 0) trainer.string_field(kTrainerBosPiece, spec.pieces[spec.bos_id].piece);
  if (spec.eos_id >= 0) trainer.string_field(kTrainerEosPiece, spec.pieces[spec.eos_id].piece);
  model.message_field(kModelTrainerSpec, trainer);

  ProtoWriter norm;
  norm.string_field(kNormName, "identity");
  norm.bool_field(kNormAddDummyPrefix, spec.add_dummy_prefix);
  norm.bool_field(kNormRemoveExtraWhitespaces, spec.remove_extra_whitespaces);
  norm.bool_field(kNormEscapeWhitespaces, true);
  model.message_field(kModelNormalizerSpec, norm);
  return model.bytes();
}

}  // namespace cllm
