// Chat formats by name and by their Jinja template's markers; the end of a turn; pieces to ids.
// (chat_template_render.cpp renders each format.)
#include "text/chat_template.h"

#include <ctime>
#include <regex>

#include "common/error.h"
#include "text/tokenizer.h"

namespace cllm {

namespace {

const char* const kNames[] = {"chatml", "llama2",           "llama3",     "mistral-v1", "mistral-v3",
                              "mistral-v3-tekken", "mistral-v7", "gemma",      "phi3",       "zephyr"};

bool has(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

// A literal as templates write it: '\n' spelled as the escape \n or as a real newline.
bool has_literal(const std::string& jinja, const std::string& literal) {
  std::string escaped;
  for (char c : literal) escaped += c == '\n' ? std::string("\\n") : std::string(1, c);
  return jinja.find(literal) != std::string::npos || jinja.find(escaped) != std::string::npos;
}

// A Jinja string literal's escapes undone (\n, \t, \', \", \\).
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
  }
  return out;
}

// The system message a ChatML template writes when the conversation has none: the first
// "<|im_start|>system\n...<|im_end|>" written as one literal (no quote or brace inside).
std::string chatml_default_system(const std::string& jinja) {
  const std::regex literal(R"(<\|im_start\|>system(\\n|\n)([^'"{}]*?)<\|im_end\|>)");
  std::smatch m;
  return std::regex_search(jinja, m, literal) ? unescape(m[2].str()) : "";
}

ChatTemplate named(ChatFormat f, const char* name) {
  ChatTemplate t;
  t.format = f;
  t.name = name;
  return t;
}

MistralStyle mistral_style(const std::string& name) {
  MistralStyle s;
  if (name == "mistral-v1") {
    s.open = " [INST] ";
    s.close = " [/INST]";
    s.trim_reply = false;
    s.system_at = MistralSystemAt::first_user;
  } else if (name == "mistral-v3-tekken" || name == "mistral-v7") {
    s.open = "[INST]";
    s.reply = "";
    s.trim_reply = false;
    s.system_block = name == "mistral-v7";
  }
  return s;
}

// Where a Mistral template's versions differ, read from the template's literals.
ChatTemplate detect_mistral(const std::string& jinja) {
  ChatTemplate t = named(ChatFormat::mistral, "mistral-v3");
  MistralStyle& s = t.mistral;
  std::smatch m;
  if (has(jinja, "[SYSTEM_PROMPT]")) {
    if (has(jinja, "default_system_message")) return {};  // Mistral Small 3: a dated default we do not write
    t.name = "mistral-v7";
    s = mistral_style(t.name);
    return t;
  }
  if (std::regex_search(jinja, m, std::regex(R"(['"]( ?\[INST\] ?)['"])"))) s.open = m[1].str();
  if (std::regex_search(jinja, m, std::regex(R"(['"]( ?\[/INST\])['"])"))) s.close = m[1].str();
  const std::regex reply(R"((['"] ['"]\s*\+\s*)?message\[['"]content['"]\](\s*\|\s*trim)?\s*\+\s*eos_token)");
  if (std::regex_search(jinja, m, reply)) {
    s.reply = m[1].matched ? " " : "";
    s.trim_reply = m[2].matched;
  }
  if (has(jinja, "loop.first and system_message")) s.system_at = MistralSystemAt::first_user;
  else if (has(jinja, "user_messages[-1]) and system_message")) s.system_at = MistralSystemAt::like_last_user;
  t.system_allowed = has(jinja, "system_message");
  t.alternating = has(jinja, "must alternate");
  if (s.open == " [INST] ") t.name = "mistral-v1";
  else if (s.open == "[INST]") t.name = "mistral-v3-tekken";
  return t;
}

ChatTemplate detect_llama3(const std::string& jinja) {
  ChatTemplate t = named(ChatFormat::llama3, "llama3");
  t.knowledge_date = has(jinja, "Cutting Knowledge Date");
  std::smatch m;
  if (has(jinja, "strftime_now")) t.date = chat_today();  // transformers defines strftime_now
  else if (std::regex_search(jinja, m, std::regex(R"(date_string = "([^"]*)\")"))) t.date = m[1].str();
  else t.date = "26 Jul 2024";
  return t;
}

// SmolLM3: the two default system prompts, the literals written for /think and otherwise.
ChatTemplate detect_smollm3(const std::string& jinja) {
  const std::regex defaults(
      R"re(reasoning_mode == "/think" -%\}\s*\{\{- "((?:[^"\\]|\\.)*)" -\}\}\s*\{%- else -%\}\s*\{\{- "((?:[^"\\]|\\.)*)" -\}\})re");
  std::smatch m;
  if (!has(jinja, "Reasoning Mode") || !std::regex_search(jinja, m, defaults)) return {};
  ChatTemplate t = named(ChatFormat::chatml, "smollm3");
  t.metadata_block = true;
  t.think_default = unescape(m[1].str());
  t.no_think_default = unescape(m[2].str());
  t.date = chat_today("%d %B %Y");
  return t;
}

ChatTemplate detect_chatml(const std::string& jinja) {
  if (has(jinja, "Knowledge Cutoff Date")) return detect_smollm3(jinja);
  if (has(jinja, "<|im_sep|>")) return {};  // Phi-4: a format of its own
  ChatTemplate t = named(ChatFormat::chatml, "chatml");
  t.default_system = chatml_default_system(jinja);
  t.strip_thinking = has(jinja, "</think>");
  return t;
}

ChatTemplate detect_gemma(const std::string& jinja) {
  ChatTemplate t = named(ChatFormat::gemma, "gemma");
  if (has(jinja, "System role not supported")) t.system_allowed = false;  // Gemma 1 and 2
  else if (!has(jinja, "first_user_prefix")) return {};                    // a system turn of its own: not Google's
  return t;
}

}  // namespace

std::string chat_template_names() {
  std::string s;
  for (const char* n : kNames) s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}

ChatTemplate chat_template_from_name(const std::string& name) {
  if (name == "chatml") return named(ChatFormat::chatml, "chatml");
  if (name == "llama3") return named(ChatFormat::llama3, "llama3");
  if (name == "llama2") return named(ChatFormat::llama2, "llama2");
  if (name == "gemma") return named(ChatFormat::gemma, "gemma");
  if (name == "phi3") return named(ChatFormat::phi3, "phi3");
  if (name == "zephyr" || name == "tinyllama") return named(ChatFormat::zephyr, "zephyr");
  const std::string mistral = name == "mistral" ? "mistral-v3" : name == "mistral-v7-tekken" ? "mistral-v7" : name;
  for (const char* n : {"mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7"}) {
    if (mistral != n) continue;
    ChatTemplate t = named(ChatFormat::mistral, n);
    t.mistral = mistral_style(n);
    return t;
  }
  fail("unknown chat template '", name, "' (known: ", chat_template_names(), ")");
}

ChatTemplate chat_template_detect(const std::string& jinja) {
  if (has(jinja, "<|start_header_id|>") && has(jinja, "<|eot_id|>")) return detect_llama3(jinja);
  if (has(jinja, "<|im_start|>") && has(jinja, "<|im_end|>")) return detect_chatml(jinja);
  if (has(jinja, "<start_of_turn>") && has(jinja, "<end_of_turn>")) return detect_gemma(jinja);
  if (has(jinja, "[INST]") && has(jinja, "[/INST]"))
    return has(jinja, "<<SYS>>") ? named(ChatFormat::llama2, "llama2") : detect_mistral(jinja);
  if (has_literal(jinja, "<|user|>\n") && has(jinja, "<|end|>")) return named(ChatFormat::phi3, "phi3");
  if (has(jinja, "<|user|>") && has(jinja, "<|assistant|>") && has(jinja, "eos_token"))
    return named(ChatFormat::zephyr, "zephyr");
  return {};
}

std::string chat_today(const char* strftime_format) {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[64];
  std::strftime(buf, sizeof buf, strftime_format, &local);
  return buf;
}

const char* chat_format_name(ChatFormat f) {
  switch (f) {
    case ChatFormat::chatml: return "chatml";
    case ChatFormat::llama3: return "llama3";
    case ChatFormat::llama2: return "llama2";
    case ChatFormat::mistral: return "mistral";
    case ChatFormat::gemma: return "gemma";
    case ChatFormat::phi3: return "phi3";
    case ChatFormat::zephyr: return "zephyr";
    case ChatFormat::none: break;
  }
  return "none";
}

ChatFormat chat_format_detect(const std::string& jinja) { return chat_template_detect(jinja).format; }

ChatSpecials chat_specials(const Tokenizer& tok) {
  ChatSpecials sp;
  if (tok.bos_id() >= 0) sp.bos = tok.piece(tok.bos_id());
  if (tok.eos_id() >= 0) sp.eos = tok.piece(tok.eos_id());
  return sp;
}

std::string chat_end_of_turn(const ChatTemplate& t, const ChatSpecials& sp) {
  switch (t.format) {
    case ChatFormat::chatml: return "<|im_end|>";
    case ChatFormat::llama3: return "<|eot_id|>";
    case ChatFormat::gemma: return "<end_of_turn>";
    case ChatFormat::phi3: return "<|end|>";
    default: return sp.eos;
  }
}

std::vector<int> chat_tokenize(const Tokenizer& tok, const std::vector<ChatPiece>& pieces) {
  std::vector<int> ids;
  std::string pending;  // adjacent text pieces, joined
  auto flush = [&] {
    if (pending.empty()) return;
    const auto t = tok.encode(pending, false);
    ids.insert(ids.end(), t.begin(), t.end());
    pending.clear();
  };
  for (const auto& p : pieces) {
    const int id = p.special && !p.text.empty() ? tok.find_piece(p.text) : -1;
    if (!p.special || (p.optional && id < 0)) {
      pending += p.text;
      continue;
    }
    flush();
    if (p.text.empty()) fail("the chat format needs a BOS or EOS token, and the tokenizer has none");
    if (id < 0)
      fail("the chat format needs the token '", p.text, "', which this tokenizer does not have (pick another format "
           "with --chat-template)");
    ids.push_back(id);
  }
  flush();
  return ids;
}

std::string chat_text(const std::vector<ChatPiece>& pieces) {
  std::string out;
  for (const auto& p : pieces) out += p.text;
  return out;
}

}  // namespace cllm
