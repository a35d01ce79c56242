#include "convert/tokenizer_import.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cctype>

#include "common/error.h"
#include "common/file_io.h"
#include "convert/import_util.h"
#include "convert/spm_model_builder.h"
#include "text/bpe_tokenizer.h"
#include "text/spm_pieces.h"
#include "text/tokenizer.h"

namespace cllm {

namespace {

bool spm_load(sentencepiece::SentencePieceProcessor& sp, const std::vector<uint8_t>& proto, std::string* error) {
  const std::string problem =
      spm_piece_problem(std::string_view(reinterpret_cast<const char*>(proto.data()), proto.size()));
  if (!problem.empty()) {
    if (error) *error = cat("SentencePiece model: ", problem, " (the trie of pieces cannot hold it)");
    return false;
  }
  const auto status = sp.LoadFromSerializedProto(
      std::string(reinterpret_cast<const char*>(proto.data()), proto.size()));
  if (status.ok()) return true;
  if (error) *error = status.ToString();
  return false;
}

// Longest token a llama2.c tokenizer may declare; run.c sizes buffers from it.
constexpr uint32_t kMaxTokenBytes = 1 << 16;

}  // namespace

bool spm_try_load(const std::vector<uint8_t>& proto, SpmInfo* info, std::string* error) {
  sentencepiece::SentencePieceProcessor sp;
  if (!spm_load(sp, proto, error)) return false;
  if (info) {
    info->vocab_size = sp.GetPieceSize();
    info->unk_id = sp.unk_id();
    info->bos_id = sp.bos_id();
    info->eos_id = sp.eos_id();
  }
  return true;
}

SpmInfo spm_check(const std::vector<uint8_t>& proto, const std::string& what) {
  SpmInfo info;
  std::string error;
  if (!spm_try_load(proto, &info, &error)) fail("'", what, "': not a usable SentencePiece model: ", error);
  return info;
}

int spm_piece_id(const std::vector<uint8_t>& proto, const std::string& piece) {
  sentencepiece::SentencePieceProcessor sp;
  if (!spm_load(sp, proto, nullptr)) return -1;
  const int id = sp.PieceToId(piece);
  return sp.IdToPiece(id) == piece ? id : -1;
}

std::vector<uint8_t> spm_from_llama2c_tokenizer(const uint8_t* data, uint64_t size, int vocab_size,
                                                const std::string& path) {
  if (vocab_size <= 0) fail("'", path, "': vocabulary size ", vocab_size, " must be positive");
  ByteReader r(data, size, path);
  const uint32_t max_len = r.read<uint32_t>("max_token_length");
  if (max_len == 0 || max_len > kMaxTokenBytes)
    fail("'", path, "': max_token_length ", max_len, " is not plausible: not a llama2.c tokenizer .bin");
  // Each record takes at least 8 bytes: bound the count before reserving.
  if (static_cast<uint64_t>(vocab_size) > r.remaining() / 8)
    fail("'", path, "': ", r.remaining(), " bytes cannot hold ", vocab_size,
         " tokens (the model's vocabulary): tokenizer and model do not match");

  SpmModelSpec spec;
  spec.unk_id = spec.bos_id = spec.eos_id = -1;
  spec.add_dummy_prefix = true;
  spec.remove_extra_whitespaces = false;
  spec.pieces.reserve(static_cast<size_t>(vocab_size));
  for (int i = 0; i < vocab_size; ++i) {
    const std::string field = "token " + std::to_string(i);
    SpmPiece p;
    p.score = r.read<float>(field.c_str());
    const int32_t len = r.read<int32_t>(field.c_str());
    if (len <= 0 || static_cast<uint32_t>(len) > max_len)
      fail("'", path, "': ", field, " has length ", len, " (max_token_length is ", max_len, ")");
    const uint8_t* bytes = r.take(static_cast<uint64_t>(len), field.c_str());
    const std::string raw(reinterpret_cast<const char*>(bytes), static_cast<size_t>(len));
    if (raw == "\n<s>\n") {
      p.piece = "<s>";
      p.type = SpmPieceType::control;
      spec.bos_id = i;
    } else if (raw == "\n</s>\n") {
      p.piece = "</s>";
      p.type = SpmPieceType::control;
      spec.eos_id = i;
    } else if (raw == "<unk>") {
      p.piece = raw;
      p.type = SpmPieceType::unknown;
      spec.unk_id = i;
    } else if (is_spm_byte_piece(raw)) {
      p.piece = raw;
      p.type = SpmPieceType::byte;
    } else {
      for (char c : raw) {
        if (c == ' ') p.piece += "\xE2\x96\x81";  // U+2581, SentencePiece's visible space
        else p.piece += c;
      }
    }
    spec.pieces.push_back(std::move(p));
  }
  if (r.remaining() != 0)
    fail("'", path, "': ", r.remaining(), " bytes left after ", vocab_size,
         " tokens: the tokenizer has a larger vocabulary than the model");
  if (spec.unk_id < 0) fail("'", path, "': no '<unk>' token (SentencePiece needs one)");
  return with_context("'" + path + "'", [&] { return build_spm_model(spec); });
}

SourceTokenizer load_hf_tokenizer_json(const std::string& path, int vocab_size, SpmInfo* info) {
  const std::string origin = "'" + path + "'";
  BpeSpec spec = bpe_spec_from_hf_json(read_text_file(path), origin);
  const int n = static_cast<int>(spec.tokens.size());
  if (n > vocab_size)
    fail(origin, ": ", n, " tokens, more than the model's vocabulary of ", vocab_size,
         " (config.json vocab_size): they do not belong together");
  SourceTokenizer tok;
  tok.kind = "bpe";
  tok.origin = path_basename(path);
  tok.data = bpe_spec_serialize(spec);
  if (info) {
    info->vocab_size = n;
    info->unk_id = -1;
    info->bos_id = spec.template_bos;
    info->eos_id = -1;
  }
  BpeTokenizer check(std::move(spec), origin);  // refuses merges, bytes or regexes it cannot use
  return tok;
}

int bpe_added_token_id(const std::vector<uint8_t>& data, const std::string& content) {
  if (content.empty()) return -1;
  const BpeSpec spec = bpe_spec_deserialize(data.data(), data.size(), "BPE tokenizer data");
  for (const auto& t : spec.added)
    if (t.content == content) return t.id;
  return -1;
}

namespace {

// An eos_token_id value (an id or a list of them) added to ids.
void add_eos_ids(const nlohmann::json& v, const std::string& path, int vocab_size, std::vector<int>& ids) {
  for (const auto& x : v.is_array() ? v : nlohmann::json::array({v})) {
    if (x.is_null()) continue;
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= vocab_size)
      fail("'", path, "': eos_token_id holds ", x.dump(), ", not an id in 0..", vocab_size - 1);
    ids.push_back(x.get<int>());
  }
}

// The special tokens of tok whose text ends a turn.
void add_end_of_turn_tokens(const SourceTokenizer& tok, std::vector<int>& ids) {
  if (tok.data.empty()) return;
  if (tok.kind == "bpe") {
    const BpeSpec spec = bpe_spec_deserialize(tok.data.data(), tok.data.size(), "BPE tokenizer data");
    for (const auto& t : spec.added)
      if (t.special && is_end_of_turn_text(t.content)) ids.push_back(t.id);
    return;
  }
  sentencepiece::SentencePieceProcessor sp;
  if (!spm_load(sp, tok.data, nullptr)) return;
  for (int id = 0; id < sp.GetPieceSize(); ++id)
    if (!sp.IsUnknown(id) && is_end_of_turn_text(sp.IdToPiece(id))) ids.push_back(id);
}

}  // namespace

std::vector<int> hf_eog_ids(const SourceTokenizer& tok, const nlohmann::json& config, const std::string& dir, int eos,
                            int vocab_size) {
  std::vector<int> ids;
  if (eos >= 0) ids.push_back(eos);
  if (auto it = config.find("eos_token_id"); it != config.end())
    add_eos_ids(*it, path_join(dir, "config.json"), vocab_size, ids);
  const std::string gen_path = path_join(dir, "generation_config.json");
  if (path_exists(gen_path)) {
    const nlohmann::json gen = json_read_file(gen_path);
    if (auto it = gen.find("eos_token_id"); gen.is_object() && it != gen.end()) add_eos_ids(*it, gen_path, vocab_size, ids);
  }
  add_end_of_turn_tokens(tok, ids);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

SourceTokenizer load_tokenizer_file(const std::string& path, int vocab_size, SpmInfo* info) {
  SourceTokenizer tok;
  tok.kind = "sentencepiece";
  tok.data = read_file(path);
  // A JSON object is a tokenizer.json; a ModelProto or a llama2.c .bin never starts with '{'.
  const auto first = std::find_if(tok.data.begin(), tok.data.end(), [](uint8_t c) { return !std::isspace(c); });
  if (first != tok.data.end() && *first == '{') return load_hf_tokenizer_json(path, vocab_size, info);
  std::string spm_error;
  SpmInfo local;
  if (!info) info = &local;
  if (spm_try_load(tok.data, info, &spm_error)) {
    tok.origin = path_basename(path);
  } else {
    // Not a ModelProto: it must be a llama2.c tokenizer .bin.
    try {
      tok.data = spm_from_llama2c_tokenizer(tok.data.data(), tok.data.size(), vocab_size, path);
    } catch (const Error& e) {
      fail("'", path, "' is neither a SentencePiece model (", spm_error,
           ") nor a llama2.c tokenizer .bin (", e.what(), ")");
    }
    *info = spm_check(tok.data, path + " (converted from llama2.c format)");
    tok.origin = path_basename(path) + " (llama2.c tokenizer, converted)";
  }
  if (info->vocab_size != vocab_size)
    fail("'", path, "': tokenizer has ", info->vocab_size, " tokens but the model's vocabulary is ",
         vocab_size, ": they do not belong together");
  return tok;
}

}  // namespace cllm
