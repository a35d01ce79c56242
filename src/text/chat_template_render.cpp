// chat_render: each family's template, written out in C++ as jinja2 renders it (trim_blocks,
// lstrip_blocks). Each function names the template it follows; tests/test-chat.cpp renders the
// real templates with jinja2 and compares.
#include "common/error.h"
#include "text/chat_template.h"
#include "text/chat_text_util.h"

namespace cllm {

namespace {

ChatPiece text(std::string s) { return {false, std::move(s)}; }
ChatPiece special(std::string s) { return {true, std::move(s)}; }
ChatPiece marker(std::string s) { return {true, std::move(s), true}; }  // special where the vocabulary has it

using Pieces = std::vector<ChatPiece>;
using Messages = std::vector<ChatMessage>;

void append(Pieces& out, Pieces more) {
  for (auto& p : more) out.push_back(std::move(p));
}

bool has_system(const Messages& m) { return !m.empty() && m[0].role == "system"; }

// After an optional system message, user and assistant alternate (Llama 2, Mistral, Gemma).
void check_alternating(const Messages& m, const ChatTemplate& t) {
  if (!t.alternating) return;
  const size_t first = has_system(m) ? 1 : 0;
  for (size_t i = first; i < m.size(); ++i)
    if ((m[i].role == "user") != ((i - first) % 2 == 0))
      fail("chat message ", i, ": the ", t.name, " template needs roles alternating user/assistant/user/... after an "
           "optional system message, found '", m[i].role, "'");
}

// ChatML: SmolLM2 and Qwen2 (a default system message when there is none), Qwen2.5 (the same,
// outside its tools branch), Qwen3 (no default; earlier replies lose their thinking).
Pieces render_chatml(const ChatTemplate& t, const Messages& msgs, bool gen) {
  auto block = [](const std::string& role, const std::string& content) {
    return Pieces{special("<|im_start|>"), text(role + "\n" + content), special("<|im_end|>"), text("\n")};
  };
  Pieces out;
  if (!has_system(msgs) && !t.default_system.empty()) append(out, block("system", t.default_system));
  size_t last_user = msgs.size();  // Qwen3's last_query_index
  for (size_t i = 0; i < msgs.size(); ++i)
    if (msgs[i].role == "user") last_user = i;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role != "assistant" || !t.strip_thinking) {
      append(out, block(m.role, m.content));
      continue;
    }
    // Qwen3: content.split('</think>')[-1].lstrip('\n'); after the last user message (loop.last
    // or with reasoning) the thinking is written back in its own block.
    std::string content = m.content, reasoning;
    const size_t end = content.rfind("</think>");
    if (end != std::string::npos) {
      reasoning = rstrip_chars(content.substr(0, content.find("</think>")), "\n");
      const size_t open = reasoning.rfind("<think>");
      if (open != std::string::npos) reasoning = reasoning.substr(open + 7);
      reasoning = lstrip_chars(reasoning, "\n");
      content = lstrip_chars(content.substr(end + 8), "\n");
    }
    const bool after_query = last_user < msgs.size() && i > last_user;
    if (after_query && (i + 1 == msgs.size() || !reasoning.empty()))
      content = "<think>\n" + strip_chars(reasoning, "\n") + "\n</think>\n\n" + lstrip_chars(content, "\n");
    append(out, block("assistant", content));
  }
  if (gen) append(out, {special("<|im_start|>"), text("assistant\n")});
  return out;
}

// SmolLM3: "/no_think" or "/think" in the system prompt picks the mode (thinking by default) and
// is taken out of it; "/system_override" writes the prompt alone. Other system messages are not
// written. Replies lose leading newlines; without thinking they start with an empty think block.
Pieces render_smollm3(const ChatTemplate& t, const Messages& msgs, bool gen) {
  const char* const space = " \t\n\r\v\f";
  bool think = true;
  std::string custom;
  if (has_system(msgs)) {
    const std::string& sys = msgs[0].content;
    if (sys.find("/no_think") != std::string::npos) think = false;
    custom = rstrip_chars(replace_all(replace_all(sys, "/no_think", ""), "/think", ""), space);
  }
  const std::string empty_think = think ? "" : "<think>\n\n</think>\n";
  Pieces out = {special("<|im_start|>")};
  if (has_system(msgs) && msgs[0].content.find("/system_override") != std::string::npos) {
    append(out, {text("system\n" + rstrip_chars(replace_all(custom, "/system_override", ""), space)),
                 special("<|im_end|>"), text("\n")});
  } else {
    const std::string instructions = !custom.empty() ? custom + "\n\n" : think ? t.think_default : t.no_think_default;
    out.push_back(text("system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: " + t.date +
                       "\nReasoning Mode: " + (think ? "/think" : "/no_think") + "\n\n## Custom Instructions\n\n" +
                       instructions));
  }
  for (const auto& m : msgs) {
    if (m.role == "system") continue;
    const std::string content = m.role == "user" ? m.content : empty_think + lstrip_chars(m.content, "\n");
    append(out, {special("<|im_start|>"), text(m.role + "\n" + content), special("<|im_end|>"), text("\n")});
  }
  if (gen) append(out, {special("<|im_start|>"), text("assistant\n" + empty_think)});
  return out;
}

// Llama 3 (Meta-Llama-3-8B-Instruct): header-framed messages, trimmed. 3.1+: the system block is
// always written, with the knowledge cutoff and the date before the (trimmed) system message.
Pieces render_llama3(const ChatTemplate& t, const Messages& msgs, bool gen, const ChatSpecials& sp) {
  auto header = [](const std::string& role) {
    return Pieces{special("<|start_header_id|>"), text(role), special("<|end_header_id|>")};
  };
  Pieces out;
  if (!sp.bos.empty()) out.push_back(special(sp.bos));
  size_t first = 0;
  if (t.knowledge_date) {
    const std::string system = has_system(msgs) ? trim(msgs[0].content) : "";
    first = has_system(msgs) ? 1 : 0;
    append(out, header("system"));
    append(out, {text("\n\nCutting Knowledge Date: December 2023\nToday Date: " + t.date + "\n\n" + system),
                 special("<|eot_id|>")});
  }
  for (size_t i = first; i < msgs.size(); ++i) {
    append(out, header(msgs[i].role));
    append(out, {text("\n\n" + trim(msgs[i].content)), special("<|eot_id|>")});
  }
  if (gen) {
    append(out, header("assistant"));
    out.push_back(text("\n\n"));
  }
  return out;
}

// Llama 2 (Llama-2-7b-chat-hf): the system prompt inside the first [INST], BOS before each.
Pieces render_llama2(const ChatTemplate& t, const Messages& msgs, const ChatSpecials& sp) {
  check_alternating(msgs, t);
  const size_t first = has_system(msgs) ? 1 : 0;
  Pieces out;
  for (size_t i = first; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role == "assistant") {
      append(out, {text(" " + trim(m.content) + " "), special(sp.eos)});
      continue;
    }
    const std::string content =
        i == first && first == 1 ? "<<SYS>>\n" + msgs[0].content + "\n<</SYS>>\n\n" + m.content : m.content;
    if (!sp.bos.empty()) out.push_back(special(sp.bos));
    out.push_back(text("[INST] " + trim(content) + " [/INST]"));
  }
  return out;
}

// Whether user message i (after the system message) gets the system prompt.
bool mistral_system_here(const MistralStyle& s, const Messages& msgs, size_t i) {
  switch (s.system_at) {
    case MistralSystemAt::first_user: return i == 1;
    case MistralSystemAt::last_message: return i + 1 == msgs.size();
    case MistralSystemAt::like_last_user:
      for (size_t k = msgs.size(); k-- > 1;)
        if (msgs[k].role == "user") return msgs[k].content == msgs[i].content;
  }
  return false;
}

// Mistral: v1 (Mistral-7B-Instruct-v0.1), v3 (v0.3, Large 2407), v3-tekken (Nemo), v7 (Small 3
// without a default system message); MistralStyle holds where they differ.
Pieces render_mistral(const ChatTemplate& t, const Messages& msgs, const ChatSpecials& sp) {
  check_alternating(msgs, t);
  const MistralStyle& s = t.mistral;
  const size_t first = has_system(msgs) ? 1 : 0;
  Pieces out;
  if (!sp.bos.empty()) out.push_back(special(sp.bos));
  if (first && s.system_block)
    append(out, {marker("[SYSTEM_PROMPT]"), text(msgs[0].content), marker("[/SYSTEM_PROMPT]")});
  // The open/close strings may carry a space outside the marker (" [INST] ").
  auto framed = [](const std::string& spelled, const char* tag) {
    const size_t at = spelled.find(tag);
    const size_t end = at + std::char_traits<char>::length(tag);
    return Pieces{text(spelled.substr(0, at)), marker(tag), text(spelled.substr(end))};
  };
  for (size_t i = first; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role == "assistant") {
      append(out, {text(s.reply + (s.trim_reply ? trim(m.content) : m.content)), special(sp.eos)});
      continue;
    }
    const bool with_system = first && !s.system_block && mistral_system_here(s, msgs, i);
    append(out, framed(s.open, "[INST]"));
    out.push_back(text(with_system ? msgs[0].content + "\n\n" + m.content : m.content));
    append(out, framed(s.close, "[/INST]"));
  }
  return out;
}

// Gemma: <start_of_turn>role\n{trimmed}<end_of_turn>\n, the assistant is "model". Gemma 3 puts
// the system message (untrimmed) and a blank line before the first user message; Gemma 1 and 2
// refuse one.
Pieces render_gemma(const ChatTemplate& t, const Messages& msgs, bool gen, const ChatSpecials& sp) {
  check_alternating(msgs, t);
  const size_t first = has_system(msgs) ? 1 : 0;
  Pieces out;
  if (!sp.bos.empty()) out.push_back(special(sp.bos));
  for (size_t i = first; i < msgs.size(); ++i) {
    const std::string role = msgs[i].role == "assistant" ? "model" : msgs[i].role;
    const std::string prefix = i == first && first == 1 ? msgs[0].content + "\n\n" : "";
    append(out, {special("<start_of_turn>"), text(role + "\n" + prefix + trim(msgs[i].content)),
                 special("<end_of_turn>"), text("\n")});
  }
  if (gen) append(out, {special("<start_of_turn>"), text("model\n")});
  return out;
}

// Phi-3 (Phi-3-mini-4k-instruct): <|role|>\n{content}<|end|>\n; without a generation prompt the
// template ends with EOS. (Phi-3.5's skips an empty system message; a chat never sends one.)
Pieces render_phi3(const Messages& msgs, bool gen, const ChatSpecials& sp) {
  Pieces out;
  for (const auto& m : msgs) {
    append(out, {special("<|" + m.role + "|>"), text("\n" + m.content), special("<|end|>"), text("\n")});
  }
  if (gen) append(out, {special("<|assistant|>"), text("\n")});
  else out.push_back(special(sp.eos));
  return out;
}

// Zephyr (TinyLlama-1.1B-Chat-v1.0): "<|role|>\n", the content, EOS, "\n". The markers are text.
Pieces render_zephyr(const Messages& msgs, bool gen, const ChatSpecials& sp) {
  Pieces out;
  for (const auto& m : msgs) append(out, {text("<|" + m.role + "|>\n" + m.content), special(sp.eos), text("\n")});
  if (gen) out.push_back(text("<|assistant|>\n"));
  return out;
}

}  // namespace

std::vector<ChatPiece> chat_render(const ChatTemplate& t, const std::vector<ChatMessage>& messages,
                                   bool add_generation_prompt, const ChatSpecials& sp) {
  for (size_t i = 0; i < messages.size(); ++i)
    if (messages[i].role != "system" && messages[i].role != "user" && messages[i].role != "assistant")
      fail("chat message ", i, ": role '", messages[i].role, "' (expected system, user or assistant)");
  if (has_system(messages) && !t.system_allowed)
    fail("chat message 0: the model's chat template (", t.name, ") refuses a system message: the model takes no system "
         "prompt");
  switch (t.format) {
    case ChatFormat::chatml:
      return t.metadata_block ? render_smollm3(t, messages, add_generation_prompt)
                              : render_chatml(t, messages, add_generation_prompt);
    case ChatFormat::llama3: return render_llama3(t, messages, add_generation_prompt, sp);
    case ChatFormat::llama2: return render_llama2(t, messages, sp);
    case ChatFormat::mistral: return render_mistral(t, messages, sp);
    case ChatFormat::gemma: return render_gemma(t, messages, add_generation_prompt, sp);
    case ChatFormat::phi3: return render_phi3(messages, add_generation_prompt, sp);
    case ChatFormat::zephyr: return render_zephyr(messages, add_generation_prompt, sp);
    case ChatFormat::none: break;
  }
  fail("no chat format: the model's chat template is none of the known ones (pass --chat-template NAME, one of ",
       chat_template_names(), ")");
}

}  // namespace cllm
