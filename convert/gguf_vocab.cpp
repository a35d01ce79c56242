#include "convert/gguf_vocab.h"

#include <algorithm>
#include <unordered_map>

#include "common/error.h"
#include "text/bpe_byte_alphabet.h"
#include "text/bpe_tokenizer.h"
#include "text/tokenizer.h"

namespace cllm {

namespace {

// The Split regexes of the families' tokenizer.json files.
const char* const kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
const char* const kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
const char* const kTekkenRegex =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kGpt4oRegex =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// Digits (individual_digits), as tokenizer.json's Digits step reads (bpe_spec_json.cpp).
const char* const kDigit = "[\\p{N}\\x{11DE0}-\\x{11DE9}\\x{16FF4}-\\x{16FF6}]";

// A family's pipeline: a Split regex (or none), GPT-2's regex in ByteLevel, NFC, ignore_merges.
struct PrePipeline {
  std::vector<const char*> names;  // tokenizer.ggml.pre values
  const char* split;               // null: none
  bool digits;                     // Digits (individual) first
  bool gpt2_regex;                 // ByteLevel use_regex
  bool nfc;
  bool ignore_merges;
};

const PrePipeline kPipelines[] = {
    {{"llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx", "falcon3", "pixtral"}, kLlama3Regex, false, false, false, true},
    {{"qwen2", "deepseek-r1-qwen", "megrez"}, kQwen2Regex, false, false, true, false},
    {{"tekken"}, kTekkenRegex, false, false, false, true},
    {{"gpt-4o", "llama4"}, kGpt4oRegex, false, false, false, false},
    {{"smollm", "starcoder", "refact"}, nullptr, true, true, false, false},
    {{"gpt-2", "gpt2", "default", "phi-2"}, nullptr, false, true, false, false},
};

const PrePipeline& find_pipeline(const GGUFFile& g, const std::string& pre) {
  for (const auto& p : kPipelines)
    if (std::find(p.names.begin(), p.names.end(), pre) != p.names.end()) return p;
  fail("'", g.path(), "': tokenizer.ggml.pre '", pre, "' is not supported (", gguf_bpe_pre_names(), ")");
}

void set_pipeline(const PrePipeline& p, BpeSpec& spec) {
  if (p.nfc) spec.normalizers.push_back({BpeNormalizer::Kind::nfc, "", ""});
  if (p.digits) {
    BpePreStep d;
    d.pattern = kDigit;
    spec.pre_steps.push_back(d);
  }
  if (p.split) {
    BpePreStep s;
    s.pattern = p.split;
    spec.pre_steps.push_back(s);
  }
  BpePreStep b;
  b.kind = BpePreStep::Kind::byte_level;
  b.use_regex = p.gpt2_regex;
  spec.pre_steps.push_back(b);
  spec.ignore_merges = p.ignore_merges;
}

enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// spec.tokens and spec.added from the tokens and their types; by_piece maps each spelling to its id.
void read_tokens(const GGUFFile& g, BpeSpec& spec, std::unordered_map<std::string, int>& by_piece) {
  const auto tokens = g.get_string_array("tokenizer.ggml.tokens");
  std::vector<int32_t> types(tokens.size(), kNormal);
  if (g.find("tokenizer.ggml.token_type")) types = g.get_i32_array("tokenizer.ggml.token_type");
  if (types.size() != tokens.size())
    fail("'", g.path(), "': tokenizer.ggml.token_type has ", types.size(), " entries, tokenizer.ggml.tokens ", tokens.size());
  spec.tokens.resize(tokens.size());
  for (size_t id = 0; id < tokens.size(); ++id) {
    const std::string piece(tokens[id]);
    by_piece.emplace(piece, static_cast<int>(id));
    if (types[id] == kControl || types[id] == kUserDefined) {  // written as they are, cut out of the text first
      BpeAddedToken t;
      t.id = static_cast<int>(id);
      t.content = piece;
      t.special = types[id] == kControl;
      t.normalized = !t.special;
      spec.added.push_back(t);
      spec.tokens[id] = piece;
    } else if (!bpe_piece_to_bytes(piece, &spec.tokens[id])) {
      fail("'", g.path(), "': tokenizer.ggml.tokens[", id, "] '", piece, "' is not spelled in the byte-level alphabet");
    }
  }
}

void read_merges(const GGUFFile& g, const std::unordered_map<std::string, int>& by_piece, BpeSpec& spec) {
  if (!g.find("tokenizer.ggml.merges")) fail("'", g.path(), "': a \"gpt2\" vocabulary needs tokenizer.ggml.merges");
  const auto merges = g.get_string_array("tokenizer.ggml.merges");
  spec.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string m(merges[i]);
    const size_t sp = m.find(' ', 1);  // the byte-level alphabet has no ' ' (a space is 'Ġ')
    const auto a = by_piece.find(m.substr(0, sp));
    const auto b = sp == std::string::npos ? by_piece.end() : by_piece.find(m.substr(sp + 1));
    if (a == by_piece.end() || b == by_piece.end())
      fail("'", g.path(), "': tokenizer.ggml.merges[", i, "] '", m, "' does not name two tokens of the vocabulary");
    spec.merges.emplace_back(a->second, b->second);
  }
}

}  // namespace

std::string gguf_bpe_pre_names() {
  std::string out;
  for (const auto& p : kPipelines)
    for (const char* n : p.names) out += (out.empty() ? "" : ", ") + std::string(n);
  return out;
}

BpeSpec gguf_bpe_spec(const GGUFFile& g, int bos) {
  std::string pre = "default";
  g.get_string("tokenizer.ggml.pre", &pre);
  BpeSpec spec;
  set_pipeline(find_pipeline(g, pre), spec);
  std::unordered_map<std::string, int> by_piece;
  read_tokens(g, spec, by_piece);
  read_merges(g, by_piece, spec);
  spec.template_bos = bos >= 0 && bos < static_cast<int>(spec.tokens.size()) ? bos : -1;
  return spec;
}

SourceTokenizer gguf_bpe_tokenizer(const GGUFFile& g, int vocab_size, int bos) {
  BpeSpec spec = gguf_bpe_spec(g, bos);
  const size_t n = spec.tokens.size();
  if (n > static_cast<size_t>(vocab_size))
    fail("'", g.path(), "': tokenizer.ggml.tokens has ", n, " tokens, more than the ", vocab_size,
         " rows of token_embd.weight");
  SourceTokenizer tok;
  tok.kind = "bpe";
  tok.origin = "gguf metadata";
  tok.data = bpe_spec_serialize(spec);
  BpeTokenizer check(std::move(spec), "'" + g.path() + "': tokenizer.ggml.*");  // refuses merges or regexes it cannot use
  return tok;
}

std::vector<int> gguf_eog_ids(const GGUFFile& g, int n_vocab) {
  std::vector<int> ids;
  uint64_t u = 0;
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
    if (g.get_uint(key, &u) && u < static_cast<uint64_t>(n_vocab)) ids.push_back(static_cast<int>(u));
  if (g.find("tokenizer.ggml.tokens") && g.find("tokenizer.ggml.token_type")) {
    const auto tokens = g.get_string_array("tokenizer.ggml.tokens");
    const auto types = g.get_i32_array("tokenizer.ggml.token_type");
    for (size_t id = 0; id < tokens.size() && id < types.size() && id < static_cast<size_t>(n_vocab); ++id)
      if (types[id] == kControl && is_end_of_turn_text(std::string(tokens[id]))) ids.push_back(static_cast<int>(id));
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace cllm
