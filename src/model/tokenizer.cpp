#include "model/tokenizer.h"

#include <sentencepiece_processor.h>

#include <cstdio>

#include "common/crc32c.h"
#include "common/error.h"
#include "common/file_io.h"
#include "model/tensor_data.h"

namespace cllm {

namespace {

const std::string kSpace = "\xE2\x96\x81";        // '▁' U+2581, SentencePiece's space
const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD
const std::string kUnknownText = " \xE2\x81\x87 ";  // " ⁇ ", SentencePiece's unk surface

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

// Length of the UTF-8 sequence a lead byte starts; 0 for a byte that cannot start one.
size_t utf8_length(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

int meta_int(const nlohmann::json& m, const char* key, int fallback) {
  auto it = m.find(key);
  if (it == m.end()) return fallback;
  if (!it->is_number_integer()) fail("metadata: '", key, "' must be an integer, found ", it->dump());
  return it->get<int>();
}

}  // namespace

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_serialized(const std::string& proto, const std::string& origin) {
  Tokenizer t;
  t.origin_ = origin;
  t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = t.sp_->LoadFromSerializedProto(proto);
  if (!status.ok()) fail(origin, ": not a valid SentencePiece model (", status.ToString(), ")");
  const int n = t.sp_->GetPieceSize();
  if (n <= 0) fail(origin, ": the SentencePiece model has no pieces");
  t.text_.resize(n);
  t.kind_.resize(n, Kind::normal);
  t.byte_.resize(n, 0);
  for (int id = 0; id < n; ++id) {
    const std::string& p = t.sp_->IdToPiece(id);
    if (t.sp_->IsControl(id)) {
      t.kind_[id] = Kind::control;
    } else if (t.sp_->IsUnknown(id)) {
      t.kind_[id] = Kind::unknown;
      t.text_[id] = kUnknownText;
    } else if (t.sp_->IsByte(id)) {
      unsigned v = 0;
      if (p.size() != 6 || std::sscanf(p.c_str(), "<0x%2X>", &v) != 1)
        fail(origin, ": byte piece ", id, " is '", p, "', expected <0xNN>");
      t.kind_[id] = Kind::byte;
      t.byte_[id] = static_cast<uint8_t>(v);
    } else {
      t.text_[id] = replace_all(p, kSpace, " ");
    }
  }
  t.bos_id_ = t.sp_->bos_id();
  t.eos_id_ = t.sp_->eos_id();
  return t;
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  const auto bytes = read_file(path);
  return from_serialized(std::string(bytes.begin(), bytes.end()), "'" + path + "'");
}

Tokenizer Tokenizer::from_cllm(const CllmFile& f, ThreadPool* pool) {
  return with_context(cat("'", f.path(), "'"), [&] {
    const auto& m = f.metadata();
    auto kind = m.find("tokenizer.model");
    const std::string model = kind != m.end() && kind->is_string() ? kind->get<std::string>() : "none";
    if (model == "none")
      fail("the file has no tokenizer (metadata tokenizer.model is \"none\"): compress the model with "
           "--tokenizer FILE (a SentencePiece .model), or pass --tokenizer FILE where the command has it");
    if (model != "sentencepiece")
      fail("unsupported tokenizer '", model, "' (this version reads \"sentencepiece\")");
    const TensorInfo* data = f.find("tokenizer.data");
    if (!data) fail("metadata says tokenizer.model is \"sentencepiece\" but there is no tensor 'tokenizer.data'");
    // Its tiles' checksums are checked here even when the file was opened without verification
    // (tokenize opens big models that way): a few KiB.
    for (size_t i = 0; i < data->tiles.size(); ++i) {
      const TileInfo& tile = data->tiles[i];
      if (crc32c(f.tile_data(tile), tile.size) != tile.crc32c)
        fail("tensor 'tokenizer.data' tile ", i, ": checksum mismatch (file corrupted or incomplete)");
    }
    const auto bytes = decode_tensor_bytes(f, *data, pool);
    Tokenizer t = from_serialized(std::string(bytes.begin(), bytes.end()), "tensor 'tokenizer.data'");
    t.bos_id_ = meta_int(m, "tokenizer.bos_id", t.bos_id_);
    t.eos_id_ = meta_int(m, "tokenizer.eos_id", t.eos_id_);
    if (t.bos_id_ >= t.n_vocab() || t.eos_id_ >= t.n_vocab())
      fail("tokenizer.bos_id ", t.bos_id_, " / tokenizer.eos_id ", t.eos_id_, " outside the vocabulary of ",
           t.n_vocab());
    auto add_bos = m.find("tokenizer.add_bos");
    if (add_bos != m.end()) {
      if (!add_bos->is_boolean()) fail("metadata: 'tokenizer.add_bos' must be true or false");
      t.add_bos_ = add_bos->get<bool>();
    }
    return t;
  });
}

std::vector<int> Tokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  if (text.empty()) return ids;
  std::vector<int> body;
  const auto status = sp_->Encode(text, &body);
  if (!status.ok()) fail(origin_, ": SentencePiece could not encode the text (", status.ToString(), ")");
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

void Tokenizer::check_id(int id) const {
  if (id < 0 || id >= n_vocab()) fail("token id ", id, " is outside the tokenizer's vocabulary of ", n_vocab());
}

Tokenizer::Kind Tokenizer::kind(int id) const {
  check_id(id);
  return kind_[id];
}

const std::string& Tokenizer::piece(int id) const {
  check_id(id);
  return sp_->IdToPiece(id);
}

std::string Tokenizer::display(int id) const {
  switch (kind(id)) {
    case Kind::normal: return text_[id];
    case Kind::unknown: return text_[id];
    case Kind::control:
    case Kind::byte: return piece(id);
  }
  return {};
}

std::string TokenDecoder::push(int id) {
  std::string out;
  const auto kind = tok_.kind(id);
  if (kind == Tokenizer::Kind::byte) {
    const uint8_t b = tok_.byte_[id];
    if (!pending_.empty() && (b & 0xC0) != 0x80) out += flush();  // the sequence broke off
    if (pending_.empty()) {
      need_ = utf8_length(b);
      if (need_ == 1) out += static_cast<char>(b);
      else if (need_ == 0) out += kReplacement;  // a stray continuation or invalid byte
      else pending_ += static_cast<char>(b);
    } else {
      pending_ += static_cast<char>(b);
      if (pending_.size() == need_) {
        out += pending_;
        pending_.clear();
      }
    }
  } else {
    out += flush();
    std::string text = tok_.text_[id];  // empty for control tokens
    // The '▁' SentencePiece puts before the first word is no space when it follows BOS.
    if (prev_ >= 0 && prev_ == tok_.bos_id() && !text.empty() && text[0] == ' ') text.erase(0, 1);
    out += text;
  }
  prev_ = id;
  return out;
}

std::string TokenDecoder::flush() {
  std::string out;
  for (size_t i = 0; i < pending_.size(); ++i) out += kReplacement;
  pending_.clear();
  need_ = 0;
  return out;
}

}  // namespace cllm
