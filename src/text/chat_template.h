// Chat prompt formats, rendered natively (no Jinja engine): a model's Jinja chat template
// (tokenizer_config.json, chat_template.jinja or GGUF tokenizer.chat_template, stored in the .cllm
// as metadata tokenizer.chat_template) is recognised as one of the known families, with the
// details that tell its versions apart, and rendered here exactly as jinja2 renders it
// (tests/test-chat.cpp compares the two on the real templates).
//
//   chatml  (SmolLM2/3, Qwen2/2.5/3)  <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n
//           <|im_start|>assistant\n{reply}<|im_end|>\n ...
//   llama3  <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>
//           <|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n
//   llama2  <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {reply} </s><s>[INST] {user} [/INST]
//   mistral <s>[INST] {system}\n\n{user}[/INST] {reply}</s> (v1: " [INST] ... [/INST]", v3-tekken: no spaces,
//           v7: [SYSTEM_PROMPT]{system}[/SYSTEM_PROMPT])
//   gemma   <bos><start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n{reply}<end_of_turn>\n
//   phi3    <|system|>\n{system}<|end|>\n<|user|>\n{user}<|end|>\n<|assistant|>\n{reply}<|end|>\n
//   zephyr  (TinyLlama-Chat) <|system|>\n{system}</s>\n<|user|>\n{user}</s>\n<|assistant|>\n{reply}</s>\n
//
// A rendering is a list of pieces: text, or a special token named by its piece ("<|im_end|>",
// the tokenizer's BOS/EOS). Text pieces are tokenized on their own, without BOS, which is what
// the Hugging Face library does with special tokens in a rendered template: it cuts them out
// and tokenizes the text between them.
#pragma once

#include <string>
#include <vector>

namespace cllm {

class Tokenizer;

enum class ChatFormat { none, chatml, llama3, llama2, mistral, gemma, phi3, zephyr };

// Where a Mistral template puts the system prompt: into the first user message (v1), the last
// message when it is a user's (`loop.last`: Nemo, Large 2407), or every user message equal to the
// last one (`message == user_messages[-1]`, a comparison of role and content: 7B v0.3).
enum class MistralSystemAt { first_user, last_message, like_last_user };

// How a Mistral template spells a turn; its versions differ only in these (and v7's system block).
struct MistralStyle {
  std::string open = "[INST] ";   // before the user's message (" [INST] " for v1, "[INST]" for tekken)
  std::string close = "[/INST]";  // after it (" [/INST]" for v1)
  std::string reply = " ";        // before the assistant's message ("" for tekken)
  bool trim_reply = true;         // the reply is trimmed (v3)
  MistralSystemAt system_at = MistralSystemAt::last_message;
  bool system_block = false;      // v7: [SYSTEM_PROMPT]{system}[/SYSTEM_PROMPT] after BOS
};

// A chat format and what the model's own template adds to it.
struct ChatTemplate {
  ChatFormat format = ChatFormat::none;
  std::string name;             // "chatml", "mistral-v3", ... (chat_template_names() lists them)
  bool system_allowed = true;   // false: the template refuses a system message (Gemma 1 and 2)
  bool alternating = true;      // Llama 2, Mistral, Gemma: the template refuses roles out of turn
  std::string default_system;   // chatml: the system message the template writes when there is none (Qwen2.5, SmolLM2)
  bool strip_thinking = false;  // chatml: earlier replies lose their <think>...</think> (Qwen3)
  // chatml, SmolLM3: a "## Metadata" system block (the date, the reasoning mode /think or
  // /no_think that the system prompt may pick), then the system prompt or the template's default
  // for the mode; no <|im_end|> closes it (the template writes none without tools).
  bool metadata_block = false;
  std::string think_default, no_think_default;
  bool knowledge_date = false;  // llama3: the system block is always there, with the knowledge cutoff and a date (3.1+)
  std::string date;             // that date, "26 Jul 2024" (3.1) or today's "05 Dec 2026" (3.2+: strftime_now);
                                // SmolLM3: today's "05 December 2026"
  MistralStyle mistral;
};

// The names --chat-template takes, as llama.cpp spells them: "chatml, llama2, llama3, mistral-v1, ...".
std::string chat_template_names();
// A named format with the settings its usual template has; throws naming the known ones.
ChatTemplate chat_template_from_name(const std::string& name);
// The format a Jinja chat template writes, from its markers; format none when it is none of them
// (or a version this file cannot render exactly, such as SmolLM3's or Mistral Small 3's).
ChatTemplate chat_template_detect(const std::string& jinja);
// Today's date as templates write it with strftime_now (local time): "%d %b %Y" is Llama 3.2's.
std::string chat_today(const char* strftime_format = "%d %b %Y");

// The family's name, "none" when none (what compress stores as tokenizer.chat_format).
const char* chat_format_name(ChatFormat f);
ChatFormat chat_format_detect(const std::string& jinja);  // chat_template_detect(jinja).format

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant"
  std::string content;
};

struct ChatPiece {
  bool special = false;  // a special token, given by its piece; else text
  std::string text;
  bool optional = false;  // a special token only where the vocabulary has it, else text (Mistral's [INST])
  bool operator==(const ChatPiece& o) const { return special == o.special && text == o.text; }
};

// The pieces of the tokens BOS and EOS stand for in templates (bos_token, eos_token).
struct ChatSpecials {
  std::string bos, eos;
};
ChatSpecials chat_specials(const Tokenizer& tok);

// A whole conversation exactly as the template renders it (jinja2 with trim_blocks and
// lstrip_blocks, as transformers' apply_chat_template); add_generation_prompt appends the
// assistant's header. Throws on roles the template refuses, naming the message.
std::vector<ChatPiece> chat_render(const ChatTemplate& t, const std::vector<ChatMessage>& messages,
                                   bool add_generation_prompt, const ChatSpecials& sp);

// The piece that ends a reply: <|im_end|>, <|eot_id|>, <end_of_turn>, <|end|>, else EOS.
std::string chat_end_of_turn(const ChatTemplate& t, const ChatSpecials& sp);

// Token ids of pieces: adjacent text pieces joined, then tokenized without BOS; special pieces
// must name tokens of tok (the error names the piece).
std::vector<int> chat_tokenize(const Tokenizer& tok, const std::vector<ChatPiece>& pieces);

// The pieces as one string, special tokens written as their piece (what Jinja would print).
std::string chat_text(const std::vector<ChatPiece>& pieces);

}  // namespace cllm
