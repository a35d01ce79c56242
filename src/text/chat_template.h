// Chat prompt formats of the Llama family, rendered natively (no Jinja engine): the model's
// tokenizer_config.json chat_template is recognised as one of them at compress time and stored
// with it (metadata tokenizer.chat_template / tokenizer.chat_format).
//
//   llama3  <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>
//           <|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>
//           <|start_header_id|>assistant<|end_header_id|>\n\n{reply}<|eot_id|> ...
//   llama2  <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {reply} </s><s>[INST] {user} [/INST]
//   zephyr  (TinyLlama-Chat) <|system|>\n{system}</s>\n<|user|>\n{user}</s>\n<|assistant|>\n{reply}</s>\n
//
// A rendering is a list of pieces: text, or a special token named by its piece ("<|eot_id|>",
// the tokenizer's BOS/EOS). Text pieces are tokenized on their own, without BOS, which is what
// the Hugging Face library does with special tokens in a rendered template: it cuts them out
// and tokenizes the text between them.
#pragma once

#include <string>
#include <vector>

namespace cllm {

class Tokenizer;

enum class ChatFormat { none, llama3, llama2, zephyr };

const char* chat_format_name(ChatFormat f);  // "none", "llama3", "llama2", "zephyr"
// "llama3", "llama2", "zephyr" (also "tinyllama"), "none"; throws naming the known ones.
ChatFormat chat_format_from_name(const std::string& name);
// The format a Jinja chat template writes, from its markers; none when it is none of them.
ChatFormat chat_format_detect(const std::string& jinja);

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant"
  std::string content;
};

struct ChatPiece {
  bool special = false;  // a special token, given by its piece; else text
  std::string text;
  bool operator==(const ChatPiece& o) const { return special == o.special && text == o.text; }
};

// The pieces of the tokens BOS and EOS stand for in templates (bos_token, eos_token).
struct ChatSpecials {
  std::string bos, eos;
};
ChatSpecials chat_specials(const Tokenizer& tok);

// A whole conversation as the format's template renders it (the reference the chat session's
// turns must add up to); add_generation_prompt appends the assistant's header.
std::vector<ChatPiece> chat_render(ChatFormat f, const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                   const ChatSpecials& sp);

// The chat session, turn by turn. A user turn: the opening (BOS, the system prompt) when first,
// the user's message and the assistant's header. After the reply: the end-of-turn token (if the
// model did not write it) and what the template puts between messages.
std::vector<ChatPiece> chat_user_turn(ChatFormat f, const std::string& system, const std::string& user, bool first,
                                      const ChatSpecials& sp);
std::string chat_end_of_turn(ChatFormat f, const ChatSpecials& sp);  // the piece that ends a reply
std::vector<ChatPiece> chat_after_reply(ChatFormat f, const ChatSpecials& sp);  // after that piece

// Token ids of pieces: adjacent text pieces joined, then tokenized without BOS; special pieces
// must name tokens of tok (the error names the piece and the format).
std::vector<int> chat_tokenize(const Tokenizer& tok, const std::vector<ChatPiece>& pieces);

// The pieces as one string, special tokens written as their piece (what Jinja would print).
std::string chat_text(const std::vector<ChatPiece>& pieces);

}  // namespace cllm
