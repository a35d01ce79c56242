#include "text/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iterator>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "text/bpe_tokenizer.h"
#include "text/chat_template.h"
#include "text/spm_pieces.h"
#include "text/utf8.h"

namespace cllm {

namespace {

const std::string kSpace = "\xE2\x96\x81";        // '▁' U+2581, SentencePiece's space
const std::string kUnknownText = " \xE2\x81\x87 ";  // " ⁇ ", SentencePiece's unk surface

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

int meta_int(const nlohmann::json& m, const char* key, int fallback) {
  auto it = m.find(key);
  if (it == m.end()) return fallback;
  if (!it->is_number_integer()) fail("metadata: '", key, "' must be an integer, found ", it->dump());
  return it->get<int>();
}

std::string meta_string(const nlohmann::json& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end()) return "";
  if (!it->is_string()) fail("metadata: '", key, "' must be a string, found ", it->dump());
  return it->get<std::string>();
}

// Valid UTF-8 as it is, other bytes as <0xNN>.
std::string printable(const std::string& bytes) {
  std::string out;
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  for (size_t i = 0, len = 0; i < bytes.size(); i += len) {
    if (utf8_step(p + i, bytes.size() - i, &len) == Utf8Step::valid) {
      out.append(bytes, i, len);
    } else {
      for (size_t k = 0; k < len; ++k) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "<0x%02X>", p[i + k]);
        out += hex;
      }
    }
  }
  return out;
}

// A byte piece "<0xNN>" (*v gets NN).
bool is_byte_piece(const std::string& p, unsigned* v) {
  return p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>' && std::isxdigit(static_cast<unsigned char>(p[3])) &&
         std::isxdigit(static_cast<unsigned char>(p[4])) && std::sscanf(p.c_str() + 3, "%2X", v) == 1;
}

// A special token in tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
std::string config_token(const nlohmann::json& tc, const char* key) {
  auto it = tc.find(key);
  if (it == tc.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) return it->value("content", "");
  return "";
}

}  // namespace

bool is_end_of_turn_text(const std::string& text) {
  static const char* const kTexts[] = {"<|eot_id|>",    "<|eom_id|>",    "<|im_end|>",      "<|end|>",
                                       "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<|return|>"};
  return std::find(std::begin(kTexts), std::end(kTexts), text) != std::end(kTexts);
}

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_serialized(const std::string& proto, const std::string& origin) {
  Tokenizer t;
  t.origin_ = origin;
  t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const std::string problem = spm_piece_problem(proto);
  if (!problem.empty()) fail(origin, ": not a valid SentencePiece model (", problem, ")");
  const auto status = t.sp_->LoadFromSerializedProto(proto);
  if (!status.ok()) fail(origin, ": not a valid SentencePiece model (", status.ToString(), ")");
  const int n = t.sp_->GetPieceSize();
  if (n <= 0) fail(origin, ": the SentencePiece model has no pieces");
  t.piece_.resize(n);
  t.text_.resize(n);
  t.kind_.resize(n, Kind::normal);
  t.byte_.resize(n, 0);
  for (int id = 0; id < n; ++id) {
    const std::string& p = t.piece_[id] = t.sp_->IdToPiece(id);
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

Tokenizer Tokenizer::from_bpe(const std::string& data, const std::string& origin) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  BpeSpec spec = bpe_spec_looks_serialized(p, data.size()) ? bpe_spec_deserialize(p, data.size(), origin)
                                                           : bpe_spec_from_hf_json(data, origin);
  Tokenizer t;
  t.origin_ = origin;
  t.bpe_byte_level_ = spec.byte_level();
  t.strip_leading_ = spec.decode_strip_leading;
  const int n = static_cast<int>(spec.tokens.size());
  t.piece_.resize(n);
  t.text_.resize(n);
  t.kind_.assign(n, Kind::normal);
  t.byte_.assign(n, 0);
  for (int id = 0; id < n; ++id) {
    const std::string& token = spec.tokens[id];
    if (t.bpe_byte_level_) {
      t.text_[id] = token;
      t.piece_[id] = bpe_bytes_to_piece(token);
      continue;
    }
    // SentencePiece style: '▁' is a space; with byte fallback, <0xNN> is that byte.
    t.piece_[id] = token;
    t.text_[id] = replace_all(token, kSpace, " ");
    unsigned v = 0;
    if (spec.byte_fallback && is_byte_piece(token, &v)) {
      t.kind_[id] = Kind::byte;
      t.byte_[id] = static_cast<uint8_t>(v);
    }
  }
  for (const auto& a : spec.added) {
    if (a.id < 0 || a.id >= n) fail(origin, ": added token id ", a.id, " is outside the ", n, " tokens");
    t.piece_[a.id] = a.content;
    t.text_[a.id] = a.content;
    t.kind_[a.id] = a.special ? Kind::control : Kind::normal;
    if (a.special) t.text_[a.id].clear();
    if (a.special && is_end_of_turn_text(a.content)) t.eos_ids_.push_back(a.id);
  }
  t.bos_id_ = spec.template_bos;
  t.add_bos_ = spec.template_bos >= 0;
  t.bpe_ = std::make_unique<BpeTokenizer>(std::move(spec), origin);
  return t;
}

void Tokenizer::read_hf_config(const std::string& dir) {
  const std::string path = path_join(dir, "tokenizer_config.json");
  if (!path_exists(path)) return;
  nlohmann::json tc;
  try {
    tc = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("'", path, "': invalid JSON: ", e.what());
  }
  if (const int id = find_piece(config_token(tc, "bos_token")); id >= 0) bos_id_ = id;
  if (const int id = find_piece(config_token(tc, "eos_token")); id >= 0) eos_id_ = id;
  if (auto it = tc.find("add_bos_token"); it != tc.end() && it->is_boolean()) add_bos_ = it->get<bool>();
  if (auto it = tc.find("chat_template"); it != tc.end()) {
    if (it->is_string()) {
      chat_template_ = it->get<std::string>();
    } else if (it->is_array()) {  // [{"name": "default", "template": ...}, ...]
      for (const auto& e : *it)
        if (e.is_object() && e.value("name", "") == "default") chat_template_ = e.value("template", "");
    }
    chat_format_ = chat_format_name(chat_format_detect(chat_template_));
  }
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  const auto bytes = read_file(path);
  const std::string data(bytes.begin(), bytes.end());
  const size_t first = data.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && data[first] == '{') {  // a Hugging Face tokenizer.json
    Tokenizer t = from_bpe(data, "'" + path + "'");
    const size_t slash = path.find_last_of('/');
    t.read_hf_config(slash == std::string::npos ? "." : path.substr(0, slash));
    return t;
  }
  return from_serialized(data, "'" + path + "'");
}

Tokenizer Tokenizer::from_embedded(const std::string& kind, const std::string& blob, const std::string& origin,
                                   const nlohmann::json& m) {
  Tokenizer t = kind == "bpe" ? from_bpe(blob, origin) : from_serialized(blob, origin);
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
  if (auto ids = m.find("tokenizer.eos_ids"); ids != m.end()) {
    if (!ids->is_array()) fail("metadata: 'tokenizer.eos_ids' must be a list of ids, found ", ids->dump());
    for (const auto& x : *ids) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= t.n_vocab())
        fail("metadata: 'tokenizer.eos_ids' holds ", x.dump(), ", not an id in 0..", t.n_vocab() - 1);
      t.eos_ids_.push_back(x.get<int>());
    }
  }
  t.chat_template_ = meta_string(m, "tokenizer.chat_template");
  t.chat_format_ = meta_string(m, "tokenizer.chat_format");
  return t;
}

std::vector<int> Tokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  if (text.empty()) return ids;
  std::vector<int> body;
  if (bpe_) {
    body = bpe_->encode(text);
  } else {
    const auto status = sp_->Encode(text, &body);
    if (!status.ok()) fail(origin_, ": SentencePiece could not encode the text (", status.ToString(), ")");
  }
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids, bool special) const {
  TokenDecoder dec(*this, special);
  std::string out;
  for (int id : ids) out += dec.push(id);
  return out + dec.flush();
}

bool Tokenizer::is_eog(int id) const {
  return id >= 0 && (id == eos_id_ || std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end());
}

int Tokenizer::find_piece(const std::string& piece) const {
  if (sp_) {
    const int id = sp_->PieceToId(piece);
    return id >= 0 && id < n_vocab() && piece_[id] == piece ? id : -1;
  }
  for (int id = 0; id < n_vocab(); ++id)  // added tokens: their piece is their content
    if (kind_[id] == Kind::control && piece_[id] == piece) return id;
  std::string bytes = piece;
  if (bpe_byte_level_ && !bpe_piece_to_bytes(piece, &bytes)) return -1;
  const int id = bpe_->find(bytes);
  return id >= 0 && piece_[id] == piece ? id : -1;
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
  return piece_[id];
}

std::string Tokenizer::display(int id) const {
  switch (kind(id)) {
    case Kind::normal: return printable(text_[id]);
    case Kind::unknown: return text_[id];
    case Kind::control:
    case Kind::byte: return piece(id);
  }
  return {};
}

std::string TokenDecoder::push(int id) {
  const auto kind = tok_.kind(id);
  std::string bytes;
  if (kind == Tokenizer::Kind::byte) {
    bytes = static_cast<char>(tok_.byte_[id]);
  } else if (kind == Tokenizer::Kind::control) {
    if (special_) bytes = tok_.piece_[id];
    else {
      prev_ = id;
      return flush();  // an unfinished character before a control token stays unfinished
    }
  } else {
    bytes = tok_.text_[id];
    // The '▁' SentencePiece puts before the first word is no space when it follows BOS; a
    // SentencePiece-style BPE's decoder strips the spaces its prepending put first (Strip).
    if (tok_.sp_ && prev_ >= 0 && prev_ == tok_.bos_id() && !bytes.empty() && bytes[0] == ' ') bytes.erase(0, 1);
    while (!produced_ && stripped_ < tok_.strip_leading_ && !bytes.empty() && bytes[0] == ' ') {
      bytes.erase(0, 1);
      ++stripped_;
    }
  }
  prev_ = id;
  produced_ = produced_ || !bytes.empty();
  std::string out;
  if (!pending_.empty() && kind == Tokenizer::Kind::control) out += flush();
  pending_ += bytes;
  pending_.erase(0, utf8_repair_prefix(pending_.data(), pending_.size(), false, &out));
  return out;
}

std::string TokenDecoder::flush() {
  std::string out;
  utf8_repair_prefix(pending_.data(), pending_.size(), true, &out);
  pending_.clear();
  return out;
}

}  // namespace cllm
