#include "text/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "common/error.h"
#include "text/utf8.h"

namespace cllm {

const char* const kGpt2SplitPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

namespace {

// ---------------------------------------------------------------------------------------------
// GPT-2's byte <-> character table: printable bytes stand for themselves, the other 68 (controls,
// space, 0x7F-0xA0, 0xAD) for U+0100 upwards, in byte order.

struct ByteTable {
  std::array<uint32_t, 256> to_cp{};
  std::unordered_map<uint32_t, uint8_t> to_byte;
  ByteTable() {
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = printable ? b : 256 + extra++;
      to_byte[to_cp[b]] = static_cast<uint8_t>(b);
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable t;
  return t;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// The code point at s[i] of valid UTF-8; *len its length.
uint32_t decode_utf8(const std::string& s, size_t i, size_t* len) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + i;
  if (utf8_step(p, s.size() - i, len) != Utf8Step::valid) return 0xFFFFFFFFu;
  switch (*len) {
    case 1: return p[0];
    case 2: return (p[0] & 0x1Fu) << 6 | (p[1] & 0x3Fu);
    case 3: return (p[0] & 0x0Fu) << 12 | (p[1] & 0x3Fu) << 6 | (p[2] & 0x3Fu);
    default: return (p[0] & 0x07u) << 18 | (p[1] & 0x3Fu) << 12 | (p[2] & 0x3Fu) << 6 | (p[3] & 0x3Fu);
  }
}

// Rust's char::is_whitespace (Unicode White_Space), which added tokens' lstrip/rstrip use.
bool is_white_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// The library runs its regexes with Oniguruma, which differs from PCRE2 (10.42, Unicode 14) in
// two ways that change pieces, both measured over all code points (scripts/tokenizer-parity.py):
//   - its \s is Unicode's White_Space; PCRE2's \s (with UCP) also takes U+180E and U+001C..1F;
//   - its Unicode data is version 16: 9272 letters and 120 numbers are newer than PCRE2's.
// So \s and \S are spelled as the White_Space property, and \p{L} / \p{N} get the code points
// Unicode 15.0-16.0 added to them (harmless where PCRE2 already knows them). \Q...\E is left alone.
const char* const kLettersSince15 =
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}"
    "\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"
    "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}"
    "\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}"
    "\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}\\x{16D40}-\\x{16D6C}\\x{18CFF}"
    "\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}"
    "\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
const char* const kNumbersSince15 =
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}"
    "\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}"
    "\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}";

std::string oniguruma_to_pcre2(const std::string& p) {
  std::string out;
  bool in_class = false;
  // A set of code points: as it is inside [...], bracketed outside.
  auto put_set = [&](const std::string& items) { out += in_class ? items : "[" + items + "]"; };
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c != '\\' || i + 1 >= p.size()) {
      if (c == '[' && !in_class) {
        in_class = true;
        out += c;
        if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
        if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ']' is literal
      } else if (c == '[' && in_class && p.compare(i, 2, "[:") == 0) {  // [:alpha:]
        const size_t end = p.find(":]", i + 2);
        const size_t stop = end == std::string::npos ? p.size() : end + 2;
        out.append(p, i, stop - i);
        i = stop - 1;
      } else {
        if (c == ']') in_class = false;
        out += c;
      }
      continue;
    }
    const char e = p[++i];
    if (e == 's') {
      out += "\\p{White_Space}";
    } else if (e == 'S') {
      out += "\\P{White_Space}";
    } else if (p.compare(i, 4, "p{L}") == 0) {
      put_set(std::string("\\p{L}") + kLettersSince15);
      i += 3;
    } else if (p.compare(i, 4, "p{N}") == 0) {
      put_set(std::string("\\p{N}") + kNumbersSince15);
      i += 3;
    } else if (e == 'Q') {
      const size_t end = p.find("\\E", i + 1);
      const size_t stop = end == std::string::npos ? p.size() : end + 2;
      out.append(p, i - 1, stop - (i - 1));
      i = stop - 1;
    } else {
      out += '\\';
      out += e;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// A compiled pre-tokenizer regex (PCRE2, UTF + Unicode properties, JIT-compiled when available).

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& origin) : pattern_(pattern) {
    int err = 0;
    PCRE2_SIZE at = 0;
    const std::string pcre = oniguruma_to_pcre2(pattern);
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre.data()), pcre.size(), PCRE2_UTF | PCRE2_UCP, &err, &at,
                          nullptr);
    if (!code_) fail(origin, ": pre-tokenizer regex '", pattern, "' does not compile (at offset ", at, " of '", pcre, "'): ", message(err));
    uint32_t jit = 0;
    if (pcre2_config(PCRE2_CONFIG_JIT, &jit) >= 0 && jit) pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back silently
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Splits s[0..n) into the matches and the text between them (behavior "Isolated"), appending
  // the non-empty pieces to out.
  void split(const std::string& s, pcre2_match_data* md, std::vector<std::string>& out) const {
    size_t start = 0, last = 0;
    while (start <= s.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, PCRE2_NO_UTF_CHECK, md,
                                 nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) fail("pre-tokenizer regex '", pattern_, "': matching failed: ", message(rc));
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t b = ov[0], e = ov[1];
      if (e == b) {  // an empty match splits nothing: step over one character
        if (b >= s.size()) break;
        size_t len = 1;
        decode_utf8(s, b, &len);
        start = b + len;
        continue;
      }
      if (b > last) out.push_back(s.substr(last, b - last));
      out.push_back(s.substr(b, e - b));
      last = start = e;
    }
    if (last < s.size()) out.push_back(s.substr(last));
  }
  const pcre2_code* code() const { return code_; }

 private:
  static std::string message(int err) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    return reinterpret_cast<const char*>(buf);
  }
  std::string pattern_;
  pcre2_code* code_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Reading tokenizer.json

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

// \Q...\E quoting for a literal Split pattern (a "\E" inside is split out of the quote).
std::string quote_regex(const std::string& s) {
  std::string out = "\\Q";
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.compare(i, 2, "\\E") == 0) {
      out += "\\E\\\\E\\Q";
      ++i;
    } else {
      out += s[i];
    }
  }
  return out + "\\E";
}

void read_pre_tokenizer(const nlohmann::json& pt, const std::string& where, BpeSpec& spec, bool* byte_level) {
  const std::string type = string_of(pt, "type", where);
  if (type == "Sequence") {
    const auto* list = find_key(pt, "pretokenizers");
    if (!list || !list->is_array()) fail(where, ".pretokenizers: expected a list");
    for (size_t i = 0; i < list->size(); ++i) read_pre_tokenizer((*list)[i], cat(where, ".pretokenizers[", i, "]"), spec, byte_level);
  } else if (*byte_level) {
    fail(where, ": a '", type, "' step after ByteLevel is not supported (ByteLevel must come last)");
  } else if (type == "Split") {
    const std::string behavior = string_of(pt, "behavior", where);
    if (behavior != "Isolated") fail(where, ".behavior: '", behavior, "' is not supported (only \"Isolated\")");
    if (bool_or(pt, "invert", false, where)) fail(where, ".invert: true is not supported");
    const auto* p = find_key(pt, "pattern");
    if (!p || !p->is_object()) fail(where, ".pattern: expected {\"Regex\": ...} or {\"String\": ...}");
    if (const auto* r = find_key(*p, "Regex"); r && r->is_string()) spec.splits.push_back(r->get<std::string>());
    else if (const auto* s = find_key(*p, "String"); s && s->is_string()) spec.splits.push_back(quote_regex(s->get<std::string>()));
    else fail(where, ".pattern: expected {\"Regex\": ...} or {\"String\": ...}, found ", p->dump());
  } else if (type == "ByteLevel") {
    *byte_level = true;
    spec.add_prefix_space = bool_or(pt, "add_prefix_space", true, where);  // the library's defaults
    spec.byte_level_regex = bool_or(pt, "use_regex", true, where);
  } else {
    fail(where, ": pre-tokenizer '", type, "' is not supported (Split, ByteLevel, or a Sequence of them)");
  }
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

// ---------------------------------------------------------------------------------------------
// The compact form

constexpr char kMagic[8] = {'c', 'l', 'l', 'm', '-', 'b', 'p', 'e'};
constexpr uint32_t kVersion = 1;

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

class Reader {
 public:
  Reader(const uint8_t* p, size_t n, const std::string& origin) : p_(p), n_(n), origin_(origin) {}
  size_t remaining() const { return n_ - pos_; }
  const uint8_t* take(size_t k, const char* what) {
    if (k > remaining())
      fail(origin_, ": truncated at byte ", pos_, " while reading ", what, " (", k, " bytes needed, ", remaining(),
           " left)");
    const uint8_t* q = p_ + pos_;
    pos_ += k;
    return q;
  }
  uint32_t u32(const char* what) {
    const uint8_t* q = take(4, what);
    return static_cast<uint32_t>(q[0]) | static_cast<uint32_t>(q[1]) << 8 | static_cast<uint32_t>(q[2]) << 16 |
           static_cast<uint32_t>(q[3]) << 24;
  }
  size_t pos() const { return pos_; }

 private:
  const uint8_t* p_;
  size_t n_, pos_ = 0;
  const std::string& origin_;
};

uint64_t pair_key(int a, int b) { return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b); }

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string bpe_bytes_to_piece(const std::string& bytes) {
  std::string out;
  for (unsigned char b : bytes) append_utf8(byte_table().to_cp[b], out);
  return out;
}

bool bpe_piece_to_bytes(const std::string& piece, std::string* bytes) {
  bytes->clear();
  const auto& t = byte_table().to_byte;
  for (size_t i = 0, len = 0; i < piece.size(); i += len) {
    const uint32_t cp = decode_utf8(piece, i, &len);
    auto it = t.find(cp);
    if (it == t.end()) return false;
    *bytes += static_cast<char>(it->second);
  }
  return true;
}

BpeSpec bpe_spec_from_hf_json(const std::string& json_text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    fail(origin, ": invalid JSON: ", e.what());
  }
  if (!j.is_object()) fail(origin, ": expected a JSON object (a Hugging Face tokenizer.json)");
  BpeSpec spec;

  const auto* model = find_key(j, "model");
  if (!model || !model->is_object()) fail(origin, ": no 'model' object: not a Hugging Face tokenizer.json");
  const std::string type = string_or_empty(*model, "type");
  if (type != "BPE") fail(origin, ": model.type is '", type, "': only byte-level \"BPE\" is supported here");
  if (const auto* d = find_key(*model, "dropout"); d && !(d->is_number() && d->get<double>() == 0.0))
    fail(origin, ": model.dropout ", d->dump(), " is not supported (BPE dropout is for training)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const auto* v = find_key(*model, key); v && !(v->is_string() && v->get<std::string>().empty()))
      fail(origin, ": model.", key, " ", v->dump(), " is not supported (byte-level BPE has none)");
  spec.ignore_merges = bool_or(*model, "ignore_merges", false, origin + ": model");

  if (const auto* n = find_key(j, "normalizer"))
    fail(origin, ": normalizer '", type_or_dump(*n), "' is not supported (byte-level BPE models have none)");
  const auto* pt = find_key(j, "pre_tokenizer");
  if (!pt) fail(origin, ": no pre_tokenizer: a byte-level BPE needs a ByteLevel step");
  bool byte_level = false;
  read_pre_tokenizer(*pt, origin + ": pre_tokenizer", spec, &byte_level);
  if (!byte_level) fail(origin, ": pre_tokenizer has no ByteLevel step: not a byte-level BPE");
  if (const auto* d = find_key(j, "decoder"); d && string_or_empty(*d, "type") != "ByteLevel")
    fail(origin, ": decoder '", type_or_dump(*d), "' is not supported (only ByteLevel)");

  // Vocabulary: byte-level spelling -> id.
  const auto* vocab = find_key(*model, "vocab");
  if (!vocab || !vocab->is_object()) fail(origin, ": model.vocab: expected an object of token -> id");
  std::unordered_map<std::string, int> by_piece;
  by_piece.reserve(vocab->size());
  int n = 0;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() >= (1 << 24))
      fail(origin, ": model.vocab['", it.key(), "']: expected an id in 0..2^24, found ", it.value().dump());
    by_piece[it.key()] = it.value().get<int>();
    n = std::max(n, it.value().get<int>() + 1);
  }
  std::vector<BpeAddedToken> added;
  std::unordered_map<std::string, int> added_ids;
  if (const auto* at = find_key(j, "added_tokens")) {
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
      n = std::max(n, t.id + 1);
      added.push_back(std::move(t));
    }
  }

  spec.tokens.assign(static_cast<size_t>(n), std::string());
  std::vector<uint8_t> have(static_cast<size_t>(n), 0);
  for (const auto& [piece, id] : by_piece) {
    std::string bytes;
    if (!bpe_piece_to_bytes(piece, &bytes))
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

  // Merges: "a b" strings, or [a, b] pairs (tokenizers >= 0.20).
  const auto* merges = find_key(*model, "merges");
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

  if (const auto* pp = find_key(j, "post_processor")) spec.template_bos = template_bos(*pp, added_ids);
  return spec;
}

// Layout (little-endian; docs/format.md "BPE tokenizer data"):
//   "cllm-bpe" | u32 version | u32 n_header | header JSON | u32 n_tokens | n_tokens x u32 length |
//   token bytes | u32 n_merges | n_merges x (u32 left, u32 right)
std::vector<uint8_t> bpe_spec_serialize(const BpeSpec& spec) {
  nlohmann::json added = nlohmann::json::array();
  for (const auto& t : spec.added)
    added.push_back({{"id", t.id}, {"special", t.special}, {"lstrip", t.lstrip}, {"rstrip", t.rstrip},
                     {"normalized", t.normalized}});
  const nlohmann::json header = {{"splits", spec.splits},
                                 {"add_prefix_space", spec.add_prefix_space},
                                 {"byte_level_regex", spec.byte_level_regex},
                                 {"ignore_merges", spec.ignore_merges},
                                 {"template_bos", spec.template_bos},
                                 {"added", added}};
  const std::string h = header.dump();
  std::vector<uint8_t> out(kMagic, kMagic + 8);
  put_u32(out, kVersion);
  put_u32(out, static_cast<uint32_t>(h.size()));
  out.insert(out.end(), h.begin(), h.end());
  put_u32(out, static_cast<uint32_t>(spec.tokens.size()));
  for (const auto& t : spec.tokens) put_u32(out, static_cast<uint32_t>(t.size()));
  for (const auto& t : spec.tokens) out.insert(out.end(), t.begin(), t.end());
  put_u32(out, static_cast<uint32_t>(spec.merges.size()));
  for (const auto& [a, b] : spec.merges) {
    put_u32(out, static_cast<uint32_t>(a));
    put_u32(out, static_cast<uint32_t>(b));
  }
  return out;
}

bool bpe_spec_looks_serialized(const uint8_t* data, size_t size) {
  return size >= 8 && std::memcmp(data, kMagic, 8) == 0;
}

BpeSpec bpe_spec_deserialize(const uint8_t* data, size_t size, const std::string& origin) {
  if (!bpe_spec_looks_serialized(data, size)) fail(origin, ": not codecllm BPE tokenizer data (no 'cllm-bpe' magic)");
  Reader r(data, size, origin);
  r.take(8, "magic");
  const uint32_t version = r.u32("version");
  if (version != kVersion) fail(origin, ": BPE tokenizer data version ", version, ", this build reads ", kVersion);
  const uint32_t nh = r.u32("header length");
  const uint8_t* hp = r.take(nh, "header");
  BpeSpec spec;
  try {
    const auto h = nlohmann::json::parse(hp, hp + nh);
    spec.splits = h.at("splits").get<std::vector<std::string>>();
    spec.add_prefix_space = h.at("add_prefix_space").get<bool>();
    spec.byte_level_regex = h.at("byte_level_regex").get<bool>();
    spec.ignore_merges = h.at("ignore_merges").get<bool>();
    spec.template_bos = h.at("template_bos").get<int>();
    for (const auto& a : h.at("added")) {
      BpeAddedToken t;
      t.id = a.at("id").get<int>();
      t.special = a.at("special").get<bool>();
      t.lstrip = a.at("lstrip").get<bool>();
      t.rstrip = a.at("rstrip").get<bool>();
      t.normalized = a.at("normalized").get<bool>();
      spec.added.push_back(t);
    }
  } catch (const nlohmann::json::exception& e) {
    fail(origin, ": BPE tokenizer header: ", e.what());
  }
  const uint32_t n = r.u32("token count");
  if (n == 0 || static_cast<uint64_t>(n) * 4 > r.remaining())
    fail(origin, ": token count ", n, " does not fit the ", r.remaining(), " bytes left");
  std::vector<uint32_t> len(n);
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; ++i) total += len[i] = r.u32("token lengths");
  if (total > r.remaining()) fail(origin, ": the tokens' lengths add up to ", total, " bytes, only ", r.remaining(), " left");
  spec.tokens.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* p = r.take(len[i], "token bytes");
    spec.tokens[i].assign(reinterpret_cast<const char*>(p), len[i]);
  }
  const uint32_t nm = r.u32("merge count");
  if (static_cast<uint64_t>(nm) * 8 != r.remaining())
    fail(origin, ": ", nm, " merges need ", static_cast<uint64_t>(nm) * 8, " bytes, ", r.remaining(), " are left");
  spec.merges.resize(nm);
  for (uint32_t i = 0; i < nm; ++i) {
    const uint32_t a = r.u32("merge"), b = r.u32("merge");
    if (a >= n || b >= n) fail(origin, ": merge ", i, " names token ", std::max(a, b), ", outside the ", n, " tokens");
    spec.merges[i] = {static_cast<int>(a), static_cast<int>(b)};
  }
  for (auto& t : spec.added) {
    if (t.id < 0 || static_cast<uint32_t>(t.id) >= n)
      fail(origin, ": added token id ", t.id, " is outside the ", n, " tokens");
    t.content = spec.tokens[static_cast<size_t>(t.id)];
  }
  return spec;
}

// ---------------------------------------------------------------------------------------------

struct BpeTokenizer::Impl {
  std::unordered_map<std::string, int> vocab;  // raw bytes -> id (the lowest id for equal bytes)
  std::array<int, 256> byte_id{};
  struct MergeRule {
    int rank, id;
  };
  std::unordered_map<uint64_t, MergeRule> merges;  // (left, right) -> rank and merged id
  std::vector<std::unique_ptr<Regex>> splits;       // spec.splits (+ GPT-2's with byte_level_regex)
  size_t n_splits_before_prefix = 0;                // the splits that run before add_prefix_space
  // Added tokens by their first byte, longest first; two passes as in the HF library: those
  // matched on the raw text, then (in what is left) the "normalized" ones.
  std::array<std::vector<int>, 256> added_raw, added_normalized;  // indexes into spec.added

  static constexpr size_t kCacheLimit = 1 << 16;  // pieces; the cache is dropped when it is full
  static constexpr size_t kCacheableBytes = 256;  // longer pieces are not cached (as HF)
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int>> cache;

  const MergeRule* merge(int a, int b) const {
    auto it = merges.find(pair_key(a, b));
    return it == merges.end() ? nullptr : &it->second;
  }
};

BpeTokenizer::BpeTokenizer(BpeSpec spec, const std::string& origin) : spec_(std::move(spec)), impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const int n = n_tokens();
  if (n == 0) fail(origin, ": the BPE tokenizer has no tokens");
  m.vocab.reserve(static_cast<size_t>(n));
  for (int id = 0; id < n; ++id) m.vocab.emplace(spec_.tokens[static_cast<size_t>(id)], id);  // keeps the first
  for (int b = 0; b < 256; ++b) {
    auto it = m.vocab.find(std::string(1, static_cast<char>(b)));
    if (it == m.vocab.end())
      fail(origin, ": byte 0x", "0123456789ABCDEF"[b >> 4], "0123456789ABCDEF"[b & 15], " ('",
           bpe_bytes_to_piece(std::string(1, static_cast<char>(b))), "') has no token: not a byte-level vocabulary");
    m.byte_id[static_cast<size_t>(b)] = it->second;
  }
  m.merges.reserve(spec_.merges.size());
  for (size_t rank = 0; rank < spec_.merges.size(); ++rank) {
    const auto [a, b] = spec_.merges[rank];
    if (a < 0 || a >= n || b < 0 || b >= n) fail(origin, ": merge ", rank, " names a token outside 0..", n - 1);
    const std::string joined = spec_.tokens[static_cast<size_t>(a)] + spec_.tokens[static_cast<size_t>(b)];
    auto it = m.vocab.find(joined);
    if (it == m.vocab.end())
      fail(origin, ": merge ", rank, " ('", bpe_bytes_to_piece(spec_.tokens[static_cast<size_t>(a)]), "' '",
           bpe_bytes_to_piece(spec_.tokens[static_cast<size_t>(b)]), "') makes a token that is not in the vocabulary");
    m.merges[pair_key(a, b)] = {static_cast<int>(rank), it->second};  // a repeated pair keeps its last rank, as HF
  }
  if (spec_.template_bos < -1 || spec_.template_bos >= n)
    fail(origin, ": the post-processor's BOS id ", spec_.template_bos, " is outside 0..", n - 1);
  for (const auto& p : spec_.splits) m.splits.push_back(std::make_unique<Regex>(p, origin));
  m.n_splits_before_prefix = m.splits.size();
  if (spec_.byte_level_regex) m.splits.push_back(std::make_unique<Regex>(kGpt2SplitPattern, origin));
  for (size_t i = 0; i < spec_.added.size(); ++i) {
    const auto& t = spec_.added[i];
    if (t.id < 0 || t.id >= n) fail(origin, ": added token '", t.content, "' has id ", t.id, ", outside 0..", n - 1);
    if (t.content.empty()) fail(origin, ": added token ", t.id, " is empty");
    auto& list = (t.normalized ? m.added_normalized : m.added_raw)[static_cast<uint8_t>(t.content[0])];
    list.push_back(static_cast<int>(i));
  }
  for (auto* table : {&m.added_raw, &m.added_normalized})
    for (auto& list : *table)
      std::stable_sort(list.begin(), list.end(), [&](int x, int y) {
        return spec_.added[static_cast<size_t>(x)].content.size() > spec_.added[static_cast<size_t>(y)].content.size();
      });
}

BpeTokenizer::~BpeTokenizer() = default;

int BpeTokenizer::find(const std::string& bytes) const {
  for (const auto& t : spec_.added)
    if (t.content == bytes) return t.id;
  auto it = impl_->vocab.find(bytes);
  return it == impl_->vocab.end() ? -1 : it->second;
}

namespace {

// A stretch of the input: text still to tokenize, or an added token already found.
struct Fragment {
  std::string text;
  int token = -1;
};

// Cuts the added tokens of `table` out of the text fragments, leftmost-longest.
void split_added(const BpeSpec& spec, const std::array<std::vector<int>, 256>& table, std::vector<Fragment>& frags) {
  std::vector<Fragment> out;
  for (auto& f : frags) {
    if (f.token >= 0) {
      out.push_back(std::move(f));
      continue;
    }
    const std::string& s = f.text;
    size_t last = 0;  // start of the text not yet emitted
    size_t i = 0;
    while (i < s.size()) {
      const BpeAddedToken* hit = nullptr;
      for (int k : table[static_cast<uint8_t>(s[i])]) {
        const auto& t = spec.added[static_cast<size_t>(k)];
        if (s.compare(i, t.content.size(), t.content) == 0) {
          hit = &t;
          break;  // longest first
        }
      }
      if (!hit) {
        ++i;
        continue;
      }
      size_t b = i, e = i + hit->content.size();
      if (hit->lstrip) {  // swallow the white space before it
        while (b > last) {
          size_t k = b - 1;
          while (k > last && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
          size_t len = 0;
          if (!is_white_space(decode_utf8(s, k, &len))) break;
          b = k;
        }
      }
      if (hit->rstrip) {  // ... and after it
        size_t len = 0;
        while (e < s.size() && is_white_space(decode_utf8(s, e, &len))) e += len;
      }
      if (b > last) out.push_back({s.substr(last, b - last), -1});
      out.push_back({"", hit->id});
      last = i = e;
    }
    if (last < s.size()) out.push_back({s.substr(last), -1});
  }
  frags = std::move(out);
}

}  // namespace

std::vector<int> BpeTokenizer::encode(const std::string& input) const {
  const Impl& m = *impl_;
  std::vector<int> ids;
  if (input.empty()) return ids;
  std::vector<Fragment> frags{{utf8_is_valid(input) ? input : utf8_repair(input), -1}};
  split_added(spec_, m.added_raw, frags);
  split_added(spec_, m.added_normalized, frags);

  // Room for 32 groups; with more, pcre2_match returns 0 but still sets the whole match.
  struct MatchData {
    pcre2_match_data* p = pcre2_match_data_create(32, nullptr);
    ~MatchData() { pcre2_match_data_free(p); }
  } md;
  if (!md.p) fail("out of memory for regex match data");
  auto prefix_space = [&](std::vector<std::string>& pieces) {
    if (spec_.add_prefix_space)
      for (auto& p : pieces)
        if (p[0] != ' ') p.insert(p.begin(), ' ');
  };

  std::vector<std::string> pieces, next;
  std::vector<int> word_ids;
  for (const auto& f : frags) {
    if (f.token >= 0) {
      ids.push_back(f.token);
      continue;
    }
    pieces.assign(1, f.text);
    for (size_t k = 0; k < m.splits.size(); ++k) {
      if (k == m.n_splits_before_prefix) prefix_space(pieces);
      next.clear();
      for (const auto& p : pieces) m.splits[k]->split(p, md.p, next);
      pieces.swap(next);
    }
    if (m.splits.size() == m.n_splits_before_prefix) prefix_space(pieces);

    for (const auto& word : pieces) {
      if (spec_.ignore_merges) {
        auto it = m.vocab.find(word);
        if (it != m.vocab.end()) {
          ids.push_back(it->second);
          continue;
        }
      }
      const bool cacheable = word.size() <= Impl::kCacheableBytes;
      if (cacheable) {
        std::lock_guard<std::mutex> lock(m.cache_mutex);
        auto it = m.cache.find(word);
        if (it != m.cache.end()) {
          ids.insert(ids.end(), it->second.begin(), it->second.end());
          continue;
        }
      }
      // Merge the word's bytes, lowest rank first, leftmost among equal ranks (the HF library's
      // priority queue, stale entries skipped when popped).
      struct Symbol {
        int id, prev, next, len;
      };
      const int n = static_cast<int>(word.size());
      std::vector<Symbol> sym(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) sym[static_cast<size_t>(i)] = {m.byte_id[static_cast<uint8_t>(word[static_cast<size_t>(i)])], i - 1, i + 1 < n ? i + 1 : -1, 1};
      struct Merge {
        int pos, rank, id;
        bool operator<(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
      };
      std::priority_queue<Merge> queue;
      for (int i = 0; i + 1 < n; ++i)
        if (const auto* r = m.merge(sym[static_cast<size_t>(i)].id, sym[static_cast<size_t>(i + 1)].id)) queue.push({i, r->rank, r->id});
      while (!queue.empty()) {
        const Merge top = queue.top();
        queue.pop();
        Symbol& cur = sym[static_cast<size_t>(top.pos)];
        if (cur.len == 0 || cur.next < 0) continue;
        const Symbol right = sym[static_cast<size_t>(cur.next)];
        const auto* r = m.merge(cur.id, right.id);
        if (!r || r->id != top.id) continue;  // stale
        sym[static_cast<size_t>(cur.next)].len = 0;
        cur.id = top.id;
        cur.len += right.len;
        cur.next = right.next;
        if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = top.pos;
        if (cur.prev >= 0)
          if (const auto* rp = m.merge(sym[static_cast<size_t>(cur.prev)].id, cur.id)) queue.push({cur.prev, rp->rank, rp->id});
        if (cur.next >= 0)
          if (const auto* rn = m.merge(cur.id, sym[static_cast<size_t>(cur.next)].id)) queue.push({top.pos, rn->rank, rn->id});
      }
      word_ids.clear();
      for (int i = 0; i >= 0 && i < n; i = sym[static_cast<size_t>(i)].next) word_ids.push_back(sym[static_cast<size_t>(i)].id);
      ids.insert(ids.end(), word_ids.begin(), word_ids.end());
      if (cacheable) {
        std::lock_guard<std::mutex> lock(m.cache_mutex);
        if (m.cache.size() >= Impl::kCacheLimit) m.cache.clear();
        m.cache.emplace(word, word_ids);
      }
    }
  }
  return ids;
}

}  // namespace cllm
