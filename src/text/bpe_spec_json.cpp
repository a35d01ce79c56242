// Reading a Hugging Face tokenizer.json into a BpeSpec. Only what this implementation runs
// exactly as the tokenizers library does is accepted (model BPE without dropout or subword
// affixes; NFC/NFD/NFKC/NFKD/Prepend/Replace normalizers; Split/ByteLevel/Digits/Metaspace
// pre-tokenizers; a ByteLevel decoder, or for SentencePiece-style vocabularies the decoders that
// undo '▁'); anything else is refused with the field, what it holds and what is supported.
#include "text/bpe_spec.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "common/error.h"
#include "text/bpe_byte_alphabet.h"
#include "text/bpe_regex.h"

namespace cllm {

namespace {

const char* const kMetaspace = "\xE2\x96\x81";  // '▁' U+2581, SentencePiece's space
// Digits' test, Rust's char::is_numeric: \p{N} with the Unicode 17 digits the library's Rust
// knows (measured over all code points; bpe_regex.h adds those of Unicode 15-16 to \p{N}).
const char* const kNumeric = "[\\p{N}\\x{11DE0}-\\x{11DE9}\\x{16FF4}-\\x{16FF6}]";

const nlohmann::json* find_key(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

// j[key] when j is an object and that is a string, else "" (nlohmann's value() throws its own
// type_error on a non-object or a value of another type, which must not escape a reader).
std::string string_or_empty(const nlohmann::json& j, const char* key) {
  const auto* v = find_key(j, key);
  return v && v->is_string() ? v->get<std::string>() : std::string();
}

// A component for a message: its "type", or the whole JSON when it has none.
std::string type_or_dump(const nlohmann::json& j) {
  const std::string type = string_or_empty(j, "type");
  return type.empty() ? j.dump() : type;
}

bool bool_or(const nlohmann::json& j, const char* key, bool def, const std::string& where) {
  const auto* v = find_key(j, key);
  if (!v) return def;
  if (!v->is_boolean()) fail(where, ".", key, ": expected true or false, found ", v->dump());
  return v->get<bool>();
}

std::string string_of(const nlohmann::json& j, const char* key, const std::string& where) {
  const auto* v = find_key(j, key);
  if (!v || !v->is_string()) fail(where, ".", key, ": expected a string, found ", v ? v->dump() : "nothing");
  return v->get<std::string>();
}

// A {"Regex": ...} or {"String": ...} pattern as a regex.
std::string read_pattern(const nlohmann::json& owner, const std::string& where) {
  const auto* p = find_key(owner, "pattern");
  if (p && p->is_object()) {
    if (const auto* r = find_key(*p, "Regex"); r && r->is_string()) return r->get<std::string>();
    if (const auto* s = find_key(*p, "String"); s && s->is_string()) return bpe_regex_quote(s->get<std::string>());
  }
  fail(where, ".pattern: expected {\"Regex\": ...} or {\"String\": ...}, found ", p ? p->dump() : "nothing");
}

BpeSplitBehavior read_behavior(const nlohmann::json& pt, const std::string& where) {
  const std::string b = string_of(pt, "behavior", where);
  if (b == "Isolated") return BpeSplitBehavior::isolated;
  if (b == "Removed") return BpeSplitBehavior::removed;
  if (b == "MergedWithPrevious") return BpeSplitBehavior::merged_with_previous;
  if (b == "MergedWithNext") return BpeSplitBehavior::merged_with_next;
  if (b == "Contiguous") return BpeSplitBehavior::contiguous;
  fail(where, ".behavior: '", b, "' is not supported (Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous)");
}

// Metaspace: replacement, and prepend_scheme (or, in older files, add_prefix_space).
BpePreStep read_metaspace(const nlohmann::json& pt, const std::string& where) {
  BpePreStep s;
  s.kind = BpePreStep::Kind::metaspace;
  s.replacement = string_of(pt, "replacement", where);
  s.split = bool_or(pt, "split", true, where);
  const std::string scheme = string_or_empty(pt, "prepend_scheme");
  if (scheme == "always" || scheme.empty()) s.prepend = BpePreStep::Prepend::always;
  else if (scheme == "first") s.prepend = BpePreStep::Prepend::first;
  else if (scheme == "never") s.prepend = BpePreStep::Prepend::never;
  else fail(where, ".prepend_scheme: '", scheme, "' is not supported (always, first, never)");
  if (scheme.empty() && !bool_or(pt, "add_prefix_space", true, where)) s.prepend = BpePreStep::Prepend::never;
  return s;
}

void read_pre_tokenizer(const nlohmann::json& pt, const std::string& where, BpeSpec& spec) {
  const std::string type = string_of(pt, "type", where);
  if (type == "Sequence") {
    const auto* list = find_key(pt, "pretokenizers");
    if (!list || !list->is_array()) fail(where, ".pretokenizers: expected a list");
    for (size_t i = 0; i < list->size(); ++i) read_pre_tokenizer((*list)[i], cat(where, ".pretokenizers[", i, "]"), spec);
    return;
  }
  if (spec.byte_level()) fail(where, ": a '", type, "' step after ByteLevel is not supported (ByteLevel must come last)");
  BpePreStep s;
  if (type == "Split") {
    s.pattern = read_pattern(pt, where);
    s.behavior = read_behavior(pt, where);
    s.invert = bool_or(pt, "invert", false, where);
  } else if (type == "Digits") {  // one piece per digit, or per run of them
    s.pattern = bool_or(pt, "individual_digits", false, where) ? kNumeric : std::string(kNumeric) + "+";
  } else if (type == "ByteLevel") {
    s.kind = BpePreStep::Kind::byte_level;
    s.add_prefix_space = bool_or(pt, "add_prefix_space", true, where);  // the library's defaults
    s.use_regex = bool_or(pt, "use_regex", true, where);
  } else if (type == "Metaspace") {
    s = read_metaspace(pt, where);
  } else {
    fail(where, ": pre-tokenizer '", type, "' is not supported (Split, ByteLevel, Digits, Metaspace, or a Sequence of them)");
  }
  spec.pre_steps.push_back(std::move(s));
}

void read_normalizer(const nlohmann::json& n, const std::string& where, BpeSpec& spec) {
  const std::string type = string_or_empty(n, "type");
  BpeNormalizer s;
  if (type == "Sequence") {
    const auto* list = find_key(n, "normalizers");
    if (!list || !list->is_array()) fail(where, ".normalizers: expected a list");
    for (size_t i = 0; i < list->size(); ++i) read_normalizer((*list)[i], cat(where, ".normalizers[", i, "]"), spec);
    return;
  }
  if (type == "NFC") s.kind = BpeNormalizer::Kind::nfc;
  else if (type == "NFD") s.kind = BpeNormalizer::Kind::nfd;
  else if (type == "NFKC") s.kind = BpeNormalizer::Kind::nfkc;
  else if (type == "NFKD") s.kind = BpeNormalizer::Kind::nfkd;
  else if (type == "Prepend") {
    s.kind = BpeNormalizer::Kind::prepend;
    s.content = string_of(n, "prepend", where);
  } else if (type == "Replace") {
    s.kind = BpeNormalizer::Kind::replace;
    s.pattern = read_pattern(n, where);
    s.content = string_of(n, "content", where);
  } else {
    fail(where, ": normalizer '", type_or_dump(n),
         "' is not supported (NFC, NFD, NFKC, NFKD, Prepend, Replace, or a Sequence of them)");
  }
  spec.normalizers.push_back(std::move(s));
}

// The first SpecialToken of a TemplateProcessing post-processor's "single" template: the token
// that encode(add_special_tokens=True) puts first (Llama 3: <|begin_of_text|>).
int template_bos(const nlohmann::json& pp, const std::unordered_map<std::string, int>& added_ids) {
  const std::string type = string_or_empty(pp, "type");
  if (type == "Sequence") {
    if (const auto* list = find_key(pp, "processors"); list && list->is_array())
      for (const auto& p : *list)
        if (int id = template_bos(p, added_ids); id >= 0) return id;
    return -1;
  }
  if (type != "TemplateProcessing") return -1;
  const auto* single = find_key(pp, "single");
  if (!single || !single->is_array() || single->empty()) return -1;
  const auto* st = find_key(single->front(), "SpecialToken");
  if (!st) return -1;
  const std::string name = string_or_empty(*st, "id");
  if (const auto* map = find_key(pp, "special_tokens")) {
    if (const auto* e = find_key(*map, name.c_str())) {
      const auto* ids = find_key(*e, "ids");
      if (ids && ids->is_array() && ids->size() == 1 && (*ids)[0].is_number_integer()) return (*ids)[0].get<int>();
    }
  }
  auto it = added_ids.find(name);
  return it == added_ids.end() ? -1 : it->second;
}

nlohmann::json parse_object(const std::string& json_text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    fail(origin, ": invalid JSON: ", e.what());
  }
  if (!j.is_object()) fail(origin, ": expected a JSON object (a Hugging Face tokenizer.json)");
  return j;
}

// The "model" object's options: BPE without dropout or subword affixes.
const nlohmann::json& read_model_options(const nlohmann::json& j, const std::string& origin, BpeSpec& spec) {
  const auto* model = find_key(j, "model");
  if (!model || !model->is_object()) fail(origin, ": no 'model' object: not a Hugging Face tokenizer.json");
  const std::string type = string_or_empty(*model, "type");
  if (type != "BPE") fail(origin, ": model.type is '", type, "': only \"BPE\" is supported here");
  if (const auto* d = find_key(*model, "dropout"); d && !(d->is_number() && d->get<double>() == 0.0))
    fail(origin, ": model.dropout ", d->dump(), " is not supported (BPE dropout is for training)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const auto* v = find_key(*model, key); v && !(v->is_string() && v->get<std::string>().empty()))
      fail(origin, ": model.", key, " ", v->dump(), " is not supported (byte-level BPE has none)");
  spec.ignore_merges = bool_or(*model, "ignore_merges", false, origin + ": model");
  spec.byte_fallback = bool_or(*model, "byte_fallback", false, origin + ": model");
  spec.fuse_unk = bool_or(*model, "fuse_unk", false, origin + ": model");
  return *model;
}

// The decoder: ByteLevel for a byte-level vocabulary; for a SentencePiece-style one the steps
// that undo '▁' (Replace '▁' -> ' ', ByteFallback, Fuse, Strip of leading spaces, Metaspace).
void read_decoder(const nlohmann::json& d, const std::string& where, BpeSpec& spec) {
  const std::string type = string_or_empty(d, "type");
  if (type == "Sequence") {
    const auto* list = find_key(d, "decoders");
    if (!list || !list->is_array()) fail(where, ".decoders: expected a list");
    for (size_t i = 0; i < list->size(); ++i) read_decoder((*list)[i], cat(where, ".decoders[", i, "]"), spec);
    return;
  }
  const bool byte_level = spec.byte_level();
  if (type == "ByteLevel" && byte_level) return;
  if (!byte_level) {
    if (type == "ByteFallback" || type == "Fuse") return;
    if (type == "Replace" && read_pattern(d, where) == bpe_regex_quote(kMetaspace) && string_or_empty(d, "content") == " ")
      return;
    const auto* start = find_key(d, "start");
    const auto* stop = find_key(d, "stop");
    if (type == "Strip" && string_or_empty(d, "content") == " " && start && start->is_number_integer() && stop &&
        stop->is_number_integer() && stop->get<int64_t>() == 0 && start->get<int64_t>() >= 0 && start->get<int64_t>() <= 8) {
      spec.decode_strip_leading = start->get<int>();
      return;
    }
    if (type == "Metaspace") {
      if (read_metaspace(d, where).prepend != BpePreStep::Prepend::never) spec.decode_strip_leading = 1;
      return;
    }
  }
  fail(where, ": decoder '", type_or_dump(d), "' is not supported (",
       byte_level ? "only ByteLevel" : "ByteFallback, Fuse, Replace '▁' -> ' ', Strip ' ' at the start, Metaspace", ")");
}

// The steps around the model: the normalizer, the pre-tokenizer, the decoder.
void read_pipeline(const nlohmann::json& j, const std::string& origin, BpeSpec& spec) {
  const auto* n = find_key(j, "normalizer");
  const auto* pt = find_key(j, "pre_tokenizer");
  if (n) read_normalizer(*n, origin + ": normalizer", spec);
  if (pt) read_pre_tokenizer(*pt, origin + ": pre_tokenizer", spec);
  if (!spec.byte_level() && !n && !pt)
    fail(origin, ": no pre_tokenizer and no normalizer: neither a byte-level BPE (a ByteLevel step) nor a "
         "SentencePiece-style one (Metaspace, or Replace ' ' -> '▁')");
  if (const auto* d = find_key(j, "decoder")) read_decoder(*d, origin + ": decoder", spec);
}

// model.vocab: byte-level spelling -> id; *n grows to the highest id + 1.
std::unordered_map<std::string, int> read_vocab(const nlohmann::json& model, const std::string& origin, int* n) {
  const auto* vocab = find_key(model, "vocab");
  if (!vocab || !vocab->is_object()) fail(origin, ": model.vocab: expected an object of token -> id");
  std::unordered_map<std::string, int> by_piece;
  by_piece.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() >= (1 << 24))
      fail(origin, ": model.vocab['", it.key(), "']: expected an id in 0..2^24, found ", it.value().dump());
    by_piece[it.key()] = it.value().get<int>();
    *n = std::max(*n, it.value().get<int>() + 1);
  }
  return by_piece;
}

// added_tokens; *n grows to cover their ids, added_ids maps content -> id.
std::vector<BpeAddedToken> read_added_tokens(const nlohmann::json& j, const std::string& origin, int* n,
                                             std::unordered_map<std::string, int>& added_ids) {
  std::vector<BpeAddedToken> added;
  const auto* at = find_key(j, "added_tokens");
  if (!at) return added;
  if (!at->is_array()) fail(origin, ": added_tokens: expected a list");
  for (size_t i = 0; i < at->size(); ++i) {
    const auto& a = (*at)[i];
    const std::string where = cat(origin, ": added_tokens[", i, "]");
    BpeAddedToken t;
    const auto* id = find_key(a, "id");
    if (!id || !id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() >= (1 << 24))
      fail(where, ".id: expected an id in 0..2^24");
    t.id = id->get<int>();
    t.content = string_of(a, "content", where);
    if (t.content.empty()) fail(where, ".content is empty");
    if (bool_or(a, "single_word", false, where)) fail(where, " ('", t.content, "'): single_word is not supported");
    t.lstrip = bool_or(a, "lstrip", false, where);
    t.rstrip = bool_or(a, "rstrip", false, where);
    t.special = bool_or(a, "special", false, where);
    t.normalized = bool_or(a, "normalized", !t.special, where);
    added_ids[t.content] = t.id;
    *n = std::max(*n, t.id + 1);
    added.push_back(std::move(t));
  }
  return added;
}

// spec.tokens, ids 0..n-1: the vocabulary's raw bytes, added tokens' content; every id once.
void fill_tokens(const std::unordered_map<std::string, int>& by_piece, std::vector<BpeAddedToken> added, int n,
                 const std::string& origin, BpeSpec& spec) {
  spec.tokens.assign(static_cast<size_t>(n), std::string());
  std::vector<uint8_t> have(static_cast<size_t>(n), 0);
  for (const auto& [piece, id] : by_piece) {
    std::string bytes = piece;  // SentencePiece style: the text itself
    if (spec.byte_level() && !bpe_piece_to_bytes(piece, &bytes))
      fail(origin, ": model.vocab token '", piece, "' (id ", id, ") is not spelled in the byte-level alphabet");
    if (have[static_cast<size_t>(id)]) fail(origin, ": model.vocab has id ", id, " twice");
    spec.tokens[static_cast<size_t>(id)] = std::move(bytes);
    have[static_cast<size_t>(id)] = 1;
  }
  for (const auto& t : added) {
    spec.tokens[static_cast<size_t>(t.id)] = t.content;
    have[static_cast<size_t>(t.id)] = 1;
  }
  for (int id = 0; id < n; ++id)
    if (!have[static_cast<size_t>(id)])
      fail(origin, ": id ", id, " is neither in model.vocab nor in added_tokens (ids must run 0..", n - 1, ")");
  spec.added = std::move(added);
}

// model.merges: "a b" strings, or [a, b] pairs (tokenizers >= 0.20).
void read_merges(const nlohmann::json& model, const std::unordered_map<std::string, int>& by_piece,
                 const std::string& origin, BpeSpec& spec) {
  const auto* merges = find_key(model, "merges");
  if (!merges || !merges->is_array()) fail(origin, ": model.merges: expected a list");
  spec.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const auto& m = (*merges)[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail(origin, ": model.merges[", i, "] '", s, "': expected two tokens separated by one space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      fail(origin, ": model.merges[", i, "]: expected \"a b\" or [\"a\", \"b\"], found ", m.dump());
    }
    auto ia = by_piece.find(a), ib = by_piece.find(b);
    if (ia == by_piece.end() || ib == by_piece.end())
      fail(origin, ": model.merges[", i, "] ('", a, "' '", b, "'): '", ia == by_piece.end() ? a : b,
           "' is not in model.vocab");
    spec.merges.emplace_back(ia->second, ib->second);
  }
}

// model.unk_token's id; -1 when it is null or absent (unknown characters are then dropped).
int unk_id(const nlohmann::json& model, const std::unordered_map<std::string, int>& by_piece,
           const std::unordered_map<std::string, int>& added_ids, const std::string& origin) {
  const auto* unk = find_key(model, "unk_token");
  if (!unk) return -1;
  if (!unk->is_string()) fail(origin, ": model.unk_token: expected a string or null, found ", unk->dump());
  const std::string name = unk->get<std::string>();
  if (auto it = added_ids.find(name); it != added_ids.end()) return it->second;
  auto it = by_piece.find(name);
  if (it == by_piece.end()) fail(origin, ": model.unk_token '", name, "' is not in the vocabulary");
  return it->second;
}

}  // namespace

BpeSpec bpe_spec_from_hf_json(const std::string& json_text, const std::string& origin) {
  const nlohmann::json j = parse_object(json_text, origin);
  BpeSpec spec;
  const nlohmann::json& model = read_model_options(j, origin, spec);
  read_pipeline(j, origin, spec);
  int n = 0;
  const auto by_piece = read_vocab(model, origin, &n);
  std::unordered_map<std::string, int> added_ids;
  std::vector<BpeAddedToken> added = read_added_tokens(j, origin, &n, added_ids);
  fill_tokens(by_piece, std::move(added), n, origin, spec);
  read_merges(model, by_piece, origin, spec);
  if (const auto* pp = find_key(j, "post_processor")) spec.template_bos = template_bos(*pp, added_ids);
  spec.unk_id = unk_id(model, by_piece, added_ids, origin);
  return spec;
}

bool BpeSpec::byte_level() const {
  return std::any_of(pre_steps.begin(), pre_steps.end(), [](const BpePreStep& s) { return s.kind == BpePreStep::Kind::byte_level; });
}

}  // namespace cllm
