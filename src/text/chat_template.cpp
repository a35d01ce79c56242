#include "text/chat_template.h"

#include "common/error.h"
#include "text/tokenizer.h"

namespace cllm {

namespace {

const char* const kStartHeader = "<|start_header_id|>";
const char* const kEndHeader = "<|end_header_id|>";
const char* const kEotId = "<|eot_id|>";

// Jinja's trim / Python's str.strip(): white space at both ends (ASCII, NEL, NBSP and the
// Unicode spaces that UTF-8 spells in 2-3 bytes).
bool space_at(const std::string& s, size_t i, size_t* len) {
  static const char* const wide[] = {"\xC2\x85", "\xC2\xA0", "\xE1\x9A\x80", "\xE2\x80\x80", "\xE2\x80\x81",
                                     "\xE2\x80\x82", "\xE2\x80\x83", "\xE2\x80\x84", "\xE2\x80\x85", "\xE2\x80\x86",
                                     "\xE2\x80\x87", "\xE2\x80\x88", "\xE2\x80\x89", "\xE2\x80\x8A", "\xE2\x80\xA8",
                                     "\xE2\x80\xA9", "\xE2\x80\xAF", "\xE2\x81\x9F", "\xE3\x80\x80"};
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) {
    *len = 1;
    return true;
  }
  for (const char* w : wide) {
    const size_t n = std::char_traits<char>::length(w);
    if (s.compare(i, n, w) == 0) {
      *len = n;
      return true;
    }
  }
  return false;
}

std::string trim(const std::string& s) {
  size_t b = 0, len = 0;
  while (b < s.size() && space_at(s, b, &len)) b += len;
  size_t e = b;  // end of the last non-space character
  for (size_t i = b; i < s.size();) {
    if (space_at(s, i, &len)) {
      i += len;
    } else {
      ++i;
      while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
      e = i;
    }
  }
  return s.substr(b, e - b);
}

ChatPiece text(std::string s) { return {false, std::move(s)}; }
ChatPiece special(std::string s) { return {true, std::move(s)}; }

void append(std::vector<ChatPiece>& out, std::vector<ChatPiece> more) {
  for (auto& p : more) out.push_back(std::move(p));
}

void add_bos(std::vector<ChatPiece>& out, const ChatSpecials& sp) {
  if (!sp.bos.empty()) out.push_back(special(sp.bos));
}

// Llama 3: one header-framed block per message.
std::vector<ChatPiece> llama3_message(const std::string& role, const std::string& content) {
  return {special(kStartHeader), text(role), special(kEndHeader), text("\n\n" + trim(content)), special(kEotId)};
}
std::vector<ChatPiece> llama3_generation_prompt() {
  return {special(kStartHeader), text("assistant"), special(kEndHeader), text("\n\n")};
}

// Llama 2: the system prompt goes inside the first [INST].
std::vector<ChatPiece> llama2_user(const std::string& system, const std::string& user, bool first, const ChatSpecials& sp) {
  const std::string content = first && !system.empty() ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + user : user;
  std::vector<ChatPiece> out;
  add_bos(out, sp);
  out.push_back(text("[INST] " + trim(content) + " [/INST]"));
  return out;
}

// Zephyr (TinyLlama-Chat): "<|role|>\n", the content, EOS, "\n".
std::vector<ChatPiece> zephyr_message(const std::string& role, const std::string& content, const ChatSpecials& sp) {
  return {text("<|" + role + "|>\n" + content), special(sp.eos), text("\n")};
}

void check_role(const ChatMessage& m, size_t i) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant")
    fail("chat message ", i, ": role '", m.role, "' (expected system, user or assistant)");
}

}  // namespace

const char* chat_format_name(ChatFormat f) {
  switch (f) {
    case ChatFormat::llama3: return "llama3";
    case ChatFormat::llama2: return "llama2";
    case ChatFormat::zephyr: return "zephyr";
    case ChatFormat::none: break;
  }
  return "none";
}

ChatFormat chat_format_from_name(const std::string& name) {
  if (name == "llama3") return ChatFormat::llama3;
  if (name == "llama2") return ChatFormat::llama2;
  if (name == "zephyr" || name == "tinyllama") return ChatFormat::zephyr;
  if (name == "none") return ChatFormat::none;
  fail("unknown chat template '", name, "' (known: llama3, llama2, zephyr (tinyllama), none)");
}

ChatFormat chat_format_detect(const std::string& jinja) {
  if (jinja.find(kStartHeader) != std::string::npos && jinja.find(kEotId) != std::string::npos) return ChatFormat::llama3;
  if (jinja.find("[INST]") != std::string::npos && jinja.find("[/INST]") != std::string::npos) return ChatFormat::llama2;
  if (jinja.find("<|user|>") != std::string::npos && jinja.find("<|assistant|>") != std::string::npos)
    return ChatFormat::zephyr;
  return ChatFormat::none;
}

ChatSpecials chat_specials(const Tokenizer& tok) {
  ChatSpecials sp;
  if (tok.bos_id() >= 0) sp.bos = tok.piece(tok.bos_id());
  if (tok.eos_id() >= 0) sp.eos = tok.piece(tok.eos_id());
  return sp;
}

std::vector<ChatPiece> chat_render(ChatFormat f, const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                   const ChatSpecials& sp) {
  for (size_t i = 0; i < messages.size(); ++i) check_role(messages[i], i);
  std::vector<ChatPiece> out;
  switch (f) {
    case ChatFormat::llama3:
      add_bos(out, sp);
      for (const auto& m : messages) append(out, llama3_message(m.role, m.content));
      if (add_generation_prompt) append(out, llama3_generation_prompt());
      break;
    case ChatFormat::llama2: {
      // As the Llama-2-chat template: a leading system message is folded into the first user
      // turn; then user and assistant must alternate.
      size_t first = 0;
      std::string system;
      if (!messages.empty() && messages[0].role == "system") {
        system = messages[0].content;
        first = 1;
      }
      for (size_t i = first; i < messages.size(); ++i) {
        const auto& m = messages[i];
        if ((m.role == "user") != ((i - first) % 2 == 0))
          fail("chat message ", i, ": the llama2 format needs roles alternating user/assistant/user/..., found '",
               m.role, "'");
        if (m.role == "user") append(out, llama2_user(system, m.content, i == first, sp));
        else append(out, {text(" " + trim(m.content) + " "), special(sp.eos)});
      }
      break;
    }
    case ChatFormat::zephyr:
      // The template writes no BOS; the tokenizer puts it first, as for any prompt.
      add_bos(out, sp);
      for (const auto& m : messages) append(out, zephyr_message(m.role, m.content, sp));
      if (add_generation_prompt) out.push_back(text("<|assistant|>\n"));
      break;
    case ChatFormat::none:
      fail("no chat format: the model has no known chat template (pass --chat-template llama3, llama2 or zephyr)");
  }
  return out;
}

std::vector<ChatPiece> chat_user_turn(ChatFormat f, const std::string& system, const std::string& user, bool first,
                                      const ChatSpecials& sp) {
  std::vector<ChatPiece> out;
  switch (f) {
    case ChatFormat::llama3:
      if (first) add_bos(out, sp);
      if (first && !system.empty()) append(out, llama3_message("system", system));
      append(out, llama3_message("user", user));
      append(out, llama3_generation_prompt());
      break;
    case ChatFormat::llama2:
      append(out, llama2_user(system, user, first, sp));
      break;
    case ChatFormat::zephyr:
      if (first) add_bos(out, sp);
      if (first && !system.empty()) append(out, zephyr_message("system", system, sp));
      append(out, zephyr_message("user", user, sp));
      out.push_back(text("<|assistant|>\n"));
      break;
    case ChatFormat::none:
      return chat_render(f, {}, true, sp);  // throws
  }
  return out;
}

std::string chat_end_of_turn(ChatFormat f, const ChatSpecials& sp) {
  return f == ChatFormat::llama3 ? kEotId : sp.eos;
}

std::vector<ChatPiece> chat_after_reply(ChatFormat f, const ChatSpecials&) {
  if (f == ChatFormat::zephyr) return {text("\n")};
  return {};
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
    if (!p.special) {
      pending += p.text;
      continue;
    }
    flush();
    if (p.text.empty()) fail("the chat format needs a BOS or EOS token, and the tokenizer has none");
    const int id = tok.find_piece(p.text);
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
