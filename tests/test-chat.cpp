// Specification of chat: the Llama 3, Llama 2 and Zephyr (TinyLlama) formats rendered natively
// as their Jinja templates render them, the session that feeds a conversation turn by turn into
// one KV cache, HF folders with a tokenizer.json compressed with their chat template, and
// `codecllm run --chat` on a synthetic Llama-3.1-shaped model (--verbose-prompt's tokens).
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "common/error.h"
#include "common/file_io.h"
#include "convert/compress.h"
#include "convert/source_model.h"
#include "convert/synth.h"
#include "format/cllm_reader.h"
#include "model/chat_session.h"
#include "tests/test_util.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

using namespace cllm;
using Catch::Contains;

namespace {

const Tokenizer& llama3() {
  static const Tokenizer tok = Tokenizer::from_file(test::shared_model("llama3.1/tokenizer.json"));
  return tok;
}
const Tokenizer& llama2() {
  static const Tokenizer tok = Tokenizer::from_file(test::shared_model("tokenizer.model"));
  return tok;
}

// The chat templates of meta-llama/Llama-2-7b-chat-hf and TinyLlama/TinyLlama-1.1B-Chat-v1.0
// (tokenizer_config.json); Llama 3's is in ../shared/models/llama3.1/tokenizer_config.json.
const char* const kLlama2Template =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
    "%}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
    "== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
const char* const kTinyLlamaTemplate =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token "
    "}}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% "
    "endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

const std::vector<ChatMessage> kConversation = {{"system", "You are terse."},
                                                {"user", "Hi there!"},
                                                {"assistant", "Hello."},
                                                {"user", "And now?"}};

// What each template renders for kConversation with add_generation_prompt (jinja2 with
// trim_blocks and lstrip_blocks, as transformers' apply_chat_template). Zephyr's has no BOS: the
// tokenizer puts it first, so the rendering starts with it.
const char* const kLlama3Text =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nAnd now?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n";
const char* const kLlama2Text = "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there! [/INST] Hello. </s><s>[INST] And now? [/INST]";
const char* const kZephyrText =
    "<|system|>\nYou are terse.</s>\n<|user|>\nHi there!</s>\n<|assistant|>\nHello.</s>\n<|user|>\nAnd now?</s>\n"
    "<|assistant|>\n";

// Adjacent text pieces joined: two renderings are the same prompt when these are equal.
std::vector<ChatPiece> merged(const std::vector<ChatPiece>& pieces) {
  std::vector<ChatPiece> out;
  for (const auto& p : pieces) {
    if (!p.special && !out.empty() && !out.back().special) out.back().text += p.text;
    else out.push_back(p);
  }
  return out;
}

std::vector<ChatPiece> operator+(std::vector<ChatPiece> a, const std::vector<ChatPiece>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int> operator+(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A scripted engine: records every forward call and makes greedy sampling pick script[k] on
// call k (logits 0, one 1).
struct FakeEngine {
  struct Call {
    std::vector<int> tokens;
    int pos;
  };
  std::vector<Call> calls;
  std::vector<int> script;
  std::vector<float> logits;
  explicit FakeEngine(int n_vocab) : logits(static_cast<size_t>(n_vocab)) {}
  ForwardFn fn() {
    return [this](const int* t, int n, int pos) {
      calls.push_back({std::vector<int>(t, t + n), pos});
      std::fill(logits.begin(), logits.end(), 0.0f);
      const size_t k = calls.size() - 1;
      REQUIRE(k < script.size());
      logits[static_cast<size_t>(script[k])] = 1.0f;
      return logits.data();
    };
  }
  std::vector<int> fed() const {
    std::vector<int> all;
    for (const auto& c : calls) all.insert(all.end(), c.tokens.begin(), c.tokens.end());
    return all;
  }
};

// The codecllm binary with stdin from a string; exit status, stdout and stderr.
int run_cli_with_input(const std::vector<std::string>& args, const std::string& input, std::string* out,
                       std::string* err) {
  test::TempDir tmp("cllm-chat-cli");
  std::ofstream(tmp.file("in"), std::ios::binary) << input;
  const char* binary = std::getenv("CLLM_BINARY");
  std::string cmd = std::string("'") + (binary ? binary : CLLM_BINARY) + "'";
  for (const auto& a : args) {
    std::string q = "'";
    for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    cmd += " " + q + "'";
  }
  cmd += " <" + tmp.file("in") + " >" + tmp.file("out") + " 2>" + tmp.file("err");
  const int status = std::system(cmd.c_str());
  *out = read_text_file(tmp.file("out"));
  *err = read_text_file(tmp.file("err"));
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// --verbose-prompt's listing: turn number -> the ids it fed.
std::map<int, std::vector<int>> verbose_turns(const std::string& err) {
  std::map<int, std::vector<int>> turns;
  std::istringstream in(err);
  std::string line;
  const std::regex head("^codecllm: turn (\\d+): (\\d+) tokens: '.*");
  const std::regex id_line("^ *(\\d+) -> '.*");
  int turn = -1;
  size_t want = 0;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, head)) {
      turn = std::stoi(m[1]);
      want = std::stoul(m[2]);
      turns[turn];
    } else if (turn >= 0 && turns[turn].size() < want && std::regex_match(line, m, id_line)) {
      turns[turn].push_back(std::stoi(m[1]));
    }
  }
  return turns;
}

// llama3-tiny (Llama 3.1's shapes in miniature: 128256-token vocabulary, GQA, llama3 rope) with
// the Llama-3.1 tokenizer.json and chat template, as an HF folder and compressed.
struct TinyLlama3 {
  test::TempDir dir{"cllm-llama3-tiny"};
  std::string hf = dir.file("hf"), cllm = dir.file("llama3-tiny.cllm");
  TinyLlama3() {
    SynthOptions so;
    so.threads = 2;
    so.tokenizer_dir = test::shared_model("llama3.1");
    synth_model(find_model_preset("llama3-tiny"), hf, so);
    CompressOptions co;
    co.threads = 2;
    compress_model(open_source_model(hf), cllm, co);
  }
};
const TinyLlama3& tiny_llama3() {
  static const TinyLlama3 m;
  return m;
}

}  // namespace

TEST_CASE("chat: the format is recognised from the template a model ships", "[chat]") {
  const auto tc = nlohmann::json::parse(read_text_file(test::shared_model("llama3.1/tokenizer_config.json")));
  CHECK(chat_format_detect(tc.at("chat_template").get<std::string>()) == ChatFormat::llama3);
  CHECK(chat_format_detect(kLlama2Template) == ChatFormat::llama2);
  CHECK(chat_format_detect(kTinyLlamaTemplate) == ChatFormat::zephyr);
  CHECK(chat_format_detect("{% for m in messages %}<|im_start|>{{ m['role'] }}{% endfor %}") == ChatFormat::none);
  CHECK(chat_format_detect("") == ChatFormat::none);
  CHECK(chat_format_from_name("llama3") == ChatFormat::llama3);
  CHECK(chat_format_from_name("tinyllama") == ChatFormat::zephyr);
  CHECK(std::string(chat_format_name(ChatFormat::zephyr)) == "zephyr");
  CHECK_THROWS_WITH(chat_format_from_name("chatml"), Contains("unknown chat template 'chatml'") && Contains("llama3"));
}

TEST_CASE("chat: each format renders a conversation exactly as its Jinja template does", "[chat]") {
  const ChatSpecials l3 = chat_specials(llama3());
  CHECK(l3.bos == "<|begin_of_text|>");
  const ChatSpecials l2 = chat_specials(llama2());
  CHECK(l2.bos == "<s>");
  CHECK(l2.eos == "</s>");
  CHECK(chat_text(chat_render(ChatFormat::llama3, kConversation, true, l3)) == kLlama3Text);
  CHECK(chat_text(chat_render(ChatFormat::llama2, kConversation, true, l2)) == kLlama2Text);
  CHECK(chat_text(chat_render(ChatFormat::zephyr, kConversation, true, l2)) == std::string("<s>") + kZephyrText);

  // Jinja's trim/strip: white space around a message goes (Llama 3 trims, Llama 2 strips).
  CHECK(chat_text(chat_render(ChatFormat::llama3, {{"user", " \n Hi \t"}}, false, l3)) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  CHECK(chat_text(chat_render(ChatFormat::llama2, {{"user", "  Hi\n"}}, true, l2)) == "<s>[INST] Hi [/INST]");
  // Without a system message Llama 2 has no <<SYS>> block; its roles must alternate.
  CHECK_THROWS_WITH(chat_render(ChatFormat::llama2, {{"user", "a"}, {"user", "b"}}, true, l2),
                    Contains("alternating user/assistant"));
  CHECK_THROWS_WITH(chat_render(ChatFormat::llama3, {{"robot", "a"}}, true, l3), Contains("role 'robot'"));
  CHECK_THROWS_WITH(chat_render(ChatFormat::none, kConversation, true, l3), Contains("--chat-template"));

  // Special tokens are pieces of their own, text is tokenized between them: for Llama 3 the
  // ids are those of the whole rendered text (the tokenizer finds the special tokens in it).
  const auto pieces = chat_render(ChatFormat::llama3, kConversation, true, l3);
  CHECK(chat_tokenize(llama3(), pieces) == llama3().encode(kLlama3Text, false));
  // Llama 2 with SentencePiece: BOS, then each [INST] block with its reply tokenized in one go,
  // as Meta's reference chat code does: encode("[INST] ... [/INST] Hello. ") then EOS.
  {
    const auto ids = chat_tokenize(llama2(), chat_render(ChatFormat::llama2, kConversation, true, l2));
    const auto want = std::vector<int>{1} +
                      llama2().encode("[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there! [/INST] Hello. ", false) +
                      std::vector<int>{2, 1} + llama2().encode("[INST] And now? [/INST]", false);
    CHECK(ids == want);
  }
  // A format whose tokens the tokenizer lacks is refused, naming the token.
  CHECK_THROWS_WITH(chat_tokenize(llama2(), chat_render(ChatFormat::llama3, kConversation, true, l2)),
                    Contains("'<|start_header_id|>'") && Contains("--chat-template"));
}

TEST_CASE("chat: the session's turns add up to the template's rendering of the conversation", "[chat]") {
  for (const ChatFormat f : {ChatFormat::llama3, ChatFormat::llama2, ChatFormat::zephyr}) {
    INFO("format " << chat_format_name(f));
    const ChatSpecials sp = chat_specials(f == ChatFormat::llama3 ? llama3() : llama2());
    // The reply as the template writes it, between the generation prompt and the end of turn.
    const std::vector<ChatPiece> reply = {{false, f == ChatFormat::llama2 ? " Hello. " : "Hello."}};
    const auto turns = chat_user_turn(f, "You are terse.", "Hi there!", true, sp) + reply +
                       std::vector<ChatPiece>{{true, chat_end_of_turn(f, sp)}} + chat_after_reply(f, sp) +
                       chat_user_turn(f, "You are terse.", "And now?", false, sp);
    CHECK(merged(turns) == merged(chat_render(f, kConversation, true, sp)));
  }
  CHECK(chat_end_of_turn(ChatFormat::llama3, chat_specials(llama3())) == "<|eot_id|>");
  CHECK(chat_end_of_turn(ChatFormat::llama2, chat_specials(llama2())) == "</s>");
}

TEST_CASE("chat session: one KV cache holds the whole conversation, positions continue across turns", "[chat]") {
  const Tokenizer& tok = llama3();
  const int eot = 128009;
  const auto hello = tok.encode("Hello.", false);
  const auto ok = tok.encode(" OK then!", false);
  REQUIRE(hello.size() == 2);
  REQUIRE(ok.size() == 3);
  FakeEngine engine(tok.n_vocab());
  // Turn 1 samples "Hello." and <|eot_id|>; turn 2 " OK then!", cut there by -n 3; turn 3 ends at once.
  engine.script = hello + std::vector<int>{eot} + ok + std::vector<int>{0, eot};

  ChatOptions opt;
  opt.format = ChatFormat::llama3;
  opt.system = "You are terse.";
  opt.sampling.temp = 0;
  opt.n_predict = 3;
  ChatSession s(engine.fn(), 4096, tok.n_vocab(), tok, opt);
  CHECK(s.end_of_turn_id() == eot);

  const ChatTurn t1 = s.turn("Hi there!");
  CHECK(t1.pos == 0);
  CHECK(tok.decode(t1.prompt, true) ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(t1.reply == hello + std::vector<int>{eot});
  CHECK(t1.text == "Hello.");
  CHECK(t1.end_of_turn);
  // The prompt in one call, then each reply token but the end of turn at the next position.
  REQUIRE(engine.calls.size() == 3);
  CHECK(engine.calls[0].pos == 0);
  CHECK(engine.calls[1].tokens == std::vector<int>{hello[0]});
  CHECK(engine.calls[1].pos == static_cast<int>(t1.prompt.size()));
  CHECK(engine.calls[2].tokens == std::vector<int>{hello[1]});
  CHECK(engine.calls[2].pos == static_cast<int>(t1.prompt.size()) + 1);

  const ChatTurn t2 = s.turn("And now?");
  CHECK(t2.pos == static_cast<int>(t1.prompt.size()) + 2);
  CHECK(engine.calls[3].pos == t2.pos);
  // It starts by closing turn 1 with <|eot_id|>, which was sampled but never fed.
  CHECK(tok.decode(t2.prompt, true) ==
        "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnd now?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(t2.reply == ok);  // -n 3: cut after three tokens, all of them fed
  CHECK(t2.text == " OK then!");
  CHECK_FALSE(t2.end_of_turn);

  // Everything fed so far is the template's rendering of the conversation, the reply as sampled.
  const auto rendered = chat_tokenize(tok, chat_render(ChatFormat::llama3,
                                                       {{"system", "You are terse."}, {"user", "Hi there!"},
                                                        {"assistant", "Hello."}, {"user", "And now?"}},
                                                       true, chat_specials(tok)));
  CHECK(engine.fed() == rendered + ok);
  CHECK(s.position() == static_cast<int>((rendered + ok).size()));

  // A cut reply is closed with <|eot_id|> too, right after its last token.
  const ChatTurn t3 = s.turn("Bye.");
  CHECK(t3.pos == static_cast<int>((rendered + ok).size()));
  CHECK(t3.prompt.front() == eot);
  CHECK(t3.reply == std::vector<int>{eot});
  CHECK(s.turns() == 3);
}

TEST_CASE("chat session: a full context ends the reply, and a message that no longer fits is refused", "[chat]") {
  const Tokenizer& tok = llama3();
  FakeEngine engine(tok.n_vocab());
  engine.script = std::vector<int>(64, 9906);  // "Hello" forever
  ChatOptions opt;
  opt.format = ChatFormat::llama3;
  opt.sampling.temp = 0;
  const int first = static_cast<int>(chat_tokenize(tok, chat_user_turn(ChatFormat::llama3, "", "Hi", true,
                                                                        chat_specials(tok))).size());
  ChatSession s(engine.fn(), first + 4, tok.n_vocab(), tok, opt);
  const ChatTurn t = s.turn("Hi");
  CHECK(t.context_full);
  CHECK(t.reply.size() == 5);  // 4 fed into the last free positions, the 5th sampled from the last
  CHECK(s.position() == first + 4);
  CHECK_THROWS_WITH(s.turn("More?"), Contains("0 of the context's") && Contains("larger -c"));

  opt.format = ChatFormat::none;
  CHECK_THROWS_WITH(ChatSession(engine.fn(), 64, tok.n_vocab(), tok, opt),
                    Contains("no known chat template") && Contains("--chat-template"));
  opt.format = ChatFormat::llama3;  // Llama 3's headers with the Llama-2 vocabulary
  CHECK_THROWS_WITH(ChatSession(engine.fn(), 64, llama2().n_vocab(), llama2(), opt), Contains("'<|eot_id|>'"));
}

TEST_CASE("compress: an HF folder with tokenizer.json and no tokenizer.model carries the BPE tokenizer and its chat "
          "template", "[chat][convert]") {
  const TinyLlama3& m = tiny_llama3();
  REQUIRE(path_exists(path_join(m.hf, "tokenizer.json")));
  REQUIRE_FALSE(path_exists(path_join(m.hf, "tokenizer.model")));
  const CllmFile f = CllmFile::open(m.cllm);
  const auto& meta = f.metadata();
  CHECK(meta.at("tokenizer.model") == "bpe");
  CHECK(meta.at("tokenizer.source") == "tokenizer.json");
  CHECK(meta.at("tokenizer.bos_id") == 128000);  // config.json's bos/eos ids come first
  CHECK(meta.at("tokenizer.eos_id") == 128001);
  CHECK(meta.at("tokenizer.add_bos") == true);
  CHECK(meta.at("tokenizer.chat_format") == "llama3");
  const auto tc = nlohmann::json::parse(read_text_file(test::shared_model("llama3.1/tokenizer_config.json")));
  CHECK(meta.at("tokenizer.chat_template") == tc.at("chat_template"));  // the Jinja, as it was

  const Tokenizer tok = Tokenizer::from_cllm(f);
  CHECK(std::string(tok.model_name()) == "bpe");
  CHECK(tok.n_vocab() == 128256);
  CHECK(tok.chat_format() == "llama3");
  for (const std::string text : {"Hello world", "<|start_header_id|>user<|end_header_id|>\n\nHi 123456!", "日本語 🦙"})
    CHECK(tok.encode(text, true) == llama3().encode(text, true));

  // tokenize reads it from the container, or straight from tokenizer.json.
  std::string out, err;
  REQUIRE(test::run_cli({"tokenize", m.cllm, "Hello world", "--ids"}, &out, &err) == 0);
  CHECK(out == "[128000, 9906, 1917]\n");
  REQUIRE(test::run_cli({"tokenize", "--tokenizer", test::shared_model("llama3.1/tokenizer.json"), "--ids",
                         "<|eot_id|>Hello world"}, &out, &err) == 0);
  CHECK(out == "[128000, 128009, 9906, 1917]\n");
  REQUIRE(test::run_cli({"tokenize", m.cllm, "Hi world", "--no-bos"}, &out, &err) == 0);
  CHECK(out == " 13347 -> 'Hi'\n  1917 -> ' world'\n");

  // A tokenizer.json larger than the model's vocabulary is refused, naming both.
  test::TempDir small;
  SynthOptions so;
  so.threads = 2;
  so.tokenizer_dir = test::shared_model("llama3.1");
  CHECK_THROWS_WITH(synth_model(find_model_preset("tiny-test"), small.file("hf"), so),
                    Contains("128256 tokens, more than the preset's vocabulary of 4096"));
}

TEST_CASE("run --chat: a synthetic Llama-3.1-shaped model chats in each format, --verbose-prompt shows the tokens",
          "[chat][run]") {
  const TinyLlama3& m = tiny_llama3();
  const Tokenizer& tok = llama3();
  const std::string input = "Hi there!\nAnd \\\nnow?\n";  // the second message spans two lines
  struct Case {
    const char* name;
    std::vector<std::string> flags;
    std::string turn1, turn2;  // the rendered prompts (special tokens written out)
  };
  const std::vector<Case> cases = {
      {"llama3 (the model's template)", {"--chat", "-sys", "You are terse."},
       "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
       "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
       "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnd \nnow?<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\n\n"},
      {"llama2", {"-cnv", "--system-prompt", "You are terse.", "--chat-template", "llama2"},
       "<|begin_of_text|>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there! [/INST]",
       "<|end_of_text|><|begin_of_text|>[INST] And \nnow? [/INST]"},
      {"zephyr", {"--chat", "-sys", "You are terse.", "--chat-template", "tinyllama"},
       "<|begin_of_text|><|system|>\nYou are terse.<|end_of_text|>\n<|user|>\nHi there!<|end_of_text|>\n<|assistant|>\n",
       "<|end_of_text|>\n<|user|>\nAnd \nnow?<|end_of_text|>\n<|assistant|>\n"},
  };
  for (const auto& c : cases) {
    INFO("format " << c.name);
    std::vector<std::string> args = {"run", m.cllm, "--device", "cpu", "--verbose-prompt", "-n", "6", "--temp", "0",
                                     "-c", "512", "-t", "2"};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    std::string out, err;
    REQUIRE(run_cli_with_input(args, input, &out, &err) == 0);
    INFO("stderr: " << err);
    const auto turns = verbose_turns(err);
    REQUIRE(turns.size() == 2);
    CHECK(tok.decode(turns.at(1), true) == c.turn1);
    CHECK(tok.decode(turns.at(2), true) == c.turn2);
    CHECK(turns.at(1).front() == 128000);  // BOS starts the conversation in every format
    // Each prompt is the tokenizer's ids of its text: special tokens are never spelled out as text.
    CHECK(turns.at(1) == tok.encode(c.turn1, false));
    CHECK(turns.at(2) == tok.encode(c.turn2, false));
    // The transcript: each message after "> ", then the reply (6 tokens of a random model).
    CHECK(out.rfind("> Hi there!\n", 0) == 0);
    CHECK_THAT(out, Contains("\n> And \nnow?\n"));
    REQUIRE(out.size() >= 3);
    CHECK(out.substr(out.size() - 3) == "> \n");  // the prompt for a message that never came
    CHECK_THAT(err, Contains("codecllm: chat: 2 turns") && Contains("# ") && Contains("logits hash"));
  }
}

TEST_CASE("run --chat: a model without a chat template asks for --chat-template, SentencePiece models chat too",
          "[chat][run]") {
  test::TempDir dir;
  const std::string model = test::compress_stories(dir);  // stories260K: a SentencePiece tokenizer, no template
  std::string out, err;
  CHECK(run_cli_with_input({"run", model, "--chat", "--device", "cpu"}, "Hi\n", &out, &err) == 1);
  CHECK_THAT(err, Contains("no known chat template") && Contains("--chat-template"));

  REQUIRE(run_cli_with_input({"run", model, "--chat", "--chat-template", "llama2", "--verbose-prompt", "--device",
                              "cpu", "--temp", "0", "-n", "8", "-p", "Once upon a time"},
                             "", &out, &err) == 0);
  const auto turns = verbose_turns(err);
  REQUIRE(turns.size() == 1);
  const Tokenizer tok = Tokenizer::from_file(test::shared_model("tok512.model"));
  CHECK(turns.at(1) == std::vector<int>{1} + tok.encode("[INST] Once upon a time [/INST]", false));  // -p: the first message
  CHECK(out.rfind("> Once upon a time\n", 0) == 0);

  // --verbose-prompt without --chat lists the plain prompt's tokens.
  REQUIRE(test::run_cli({"run", model, "--verbose-prompt", "-p", "Once upon", "-n", "1", "--device", "cpu"}, &out,
                        &err) == 0);
  CHECK_THAT(err, Contains("codecllm: prompt: ") && Contains(" tokens: '<s>Once upon'") && Contains("     1 -> '<s>'"));
}

TEST_CASE("chat session: the model's EOS ends a reply too, the next turn closes it with the format's end of turn",
          "[chat]") {
  const CllmFile f = CllmFile::open(tiny_llama3().cllm);
  const Tokenizer tok = Tokenizer::from_cllm(f);
  REQUIRE(tok.eos_id() == 128001);  // <|end_of_text|>, config.json's eos_token_id (Llama-3.1-8B base)
  CHECK(tok.is_eog(128001));
  CHECK(tok.is_eog(128009));  // <|eot_id|> too: a special token that ends a turn (convert/tokenizer_import.h)
  FakeEngine engine(tok.n_vocab());
  engine.script = {9906, 128001, 128009};
  ChatOptions opt;
  opt.format = ChatFormat::llama3;
  opt.sampling.temp = 0;
  ChatSession s(engine.fn(), 256, tok.n_vocab(), tok, opt);
  const ChatTurn t1 = s.turn("Hi");
  CHECK(t1.reply == std::vector<int>{9906, 128001});
  CHECK(t1.end_of_turn);
  const ChatTurn t2 = s.turn("Again");
  CHECK(t2.prompt.front() == 128009);  // <|eot_id|>, not the <|end_of_text|> that was sampled
  CHECK(t2.reply == std::vector<int>{128009});
}
