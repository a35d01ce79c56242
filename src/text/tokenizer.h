// Text <-> token ids for Llama models, one front for both kinds of tokenizer they ship:
//   - SentencePiece (Llama 1/2, TinyLlama, the stories models), through the SentencePiece library;
//   - BPE from a Hugging Face tokenizer.json or a GGUF "gpt2" vocabulary (byte-level: Llama 3,
//     Qwen, SmolLM, Mistral's Tekken, Phi-4; SentencePiece-style: Gemma ...), text/bpe_tokenizer.h.
// BOS/EOS handling and the streaming detokenizer follow llama.cpp: a prompt starts with BOS
// unless told otherwise, bytes are held back until they form whole UTF-8 characters (byte-fallback
// pieces <0xNN>, or BPE tokens that end inside a character), and the '▁' that begins the first
// SentencePiece piece after BOS prints as nothing.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "common/thread_pool.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace cllm {

class BpeTokenizer;
class CllmFile;

class Tokenizer {
 public:
  // The tokenizer embedded in a .cllm file (metadata tokenizer.model "sentencepiece" or "bpe",
  // tensor tokenizer.data), with the special ids, end-of-generation ids and chat template of its
  // metadata. Throws a clear error when the file has none.
  // Defined in the model library (model/tokenizer_cllm.cpp), which links this one: finding and
  // decoding the tensor needs the container and the tile decoder, which src/text does not use.
  static Tokenizer from_cllm(const CllmFile& f, ThreadPool* pool = nullptr);
  // What from_cllm does once it has the bytes of tensor tokenizer.data: the tokenizer of kind
  // ("sentencepiece" or "bpe") in blob (origin names it in errors), with tokenizer.bos_id,
  // tokenizer.eos_id, tokenizer.add_bos, tokenizer.eos_ids and the chat template of metadata.
  static Tokenizer from_embedded(const std::string& kind, const std::string& blob, const std::string& origin,
                                 const nlohmann::json& metadata);
  // A SentencePiece .model file, or a Hugging Face tokenizer.json (tokenize --tokenizer FILE).
  // Beside a tokenizer.json, tokenizer_config.json (when present) gives EOS, add_bos and the
  // chat template; BOS is the token its post-processor puts first.
  static Tokenizer from_file(const std::string& path);
  // A serialized SentencePiece ModelProto; origin names it in errors.
  static Tokenizer from_serialized(const std::string& proto, const std::string& origin);
  // The compact BPE form stored in .cllm files (bpe_spec_serialize) or a tokenizer.json's text.
  static Tokenizer from_bpe(const std::string& data, const std::string& origin);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of text, with BOS first when add_bos (and the model has a BOS token). For BPE,
  // special tokens written in the text ("<|eot_id|>") become their ids, as the Hugging Face
  // library does by default, and invalid UTF-8 is first repaired (each ill-formed subpart -> U+FFFD).
  std::vector<int> encode(const std::string& text, bool add_bos) const;
  // The text of ids (TokenDecoder over all of them); special tokens as their text when special.
  std::string decode(const std::vector<int>& ids, bool special = false) const;

  const char* model_name() const { return bpe_ ? "bpe" : "sentencepiece"; }
  int n_vocab() const { return static_cast<int>(text_.size()); }
  int bos_id() const { return bos_id_; }    // -1 when none
  int eos_id() const { return eos_id_; }    // -1 when none
  bool add_bos() const { return add_bos_; }  // the model's default (tokenizer.add_bos)
  // Ends generation: EOS, one of metadata tokenizer.eos_ids, or (BPE) a special token whose
  // text ends a turn (is_end_of_turn_text).
  bool is_eog(int id) const;
  // The id of the token whose piece is exactly this ("<|eot_id|>", "</s>"), -1 when none.
  int find_piece(const std::string& piece) const;
  // The chat template of tokenizer_config.json (Jinja), and the known format it was recognised
  // as ("llama3", "llama2", "zephyr", "none"); empty when the source had none.
  const std::string& chat_template() const { return chat_template_; }
  const std::string& chat_format() const { return chat_format_; }

  // The piece as stored ("▁Hello", "<0x0A>", "<s>"; BPE: "ĠHello", "<|eot_id|>").
  const std::string& piece(int id) const;
  // The piece as text: '▁' -> ' ', control tokens as their piece ("<s>"), byte tokens as
  // "<0xNN>" (one byte alone may be no valid UTF-8; likewise a BPE token's bytes that are no
  // whole characters). For listings like `tokenize`.
  std::string display(int id) const;
  bool is_control(int id) const { return kind(id) == Kind::control; }
  bool is_byte(int id) const { return kind(id) == Kind::byte; }

 private:
  friend class TokenDecoder;
  enum class Kind : uint8_t { normal, control, unknown, byte };
  Tokenizer();
  Kind kind(int id) const;
  void check_id(int id) const;
  void read_hf_config(const std::string& dir);  // tokenizer_config.json beside a tokenizer.json

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::unique_ptr<BpeTokenizer> bpe_;
  std::string origin_;                // for error messages
  std::vector<std::string> piece_;    // per id: the piece as stored
  std::vector<std::string> text_;     // per id: the bytes it stands for ('▁' as ' '); control: none
  std::vector<Kind> kind_;
  std::vector<uint8_t> byte_;         // per id: the byte of a <0xNN> piece
  std::vector<int> eos_ids_;
  int bos_id_ = -1, eos_id_ = -1;
  bool add_bos_ = true;
  bool bpe_byte_level_ = true;  // BPE: tokens are bytes spelled in the byte-level alphabet
  int strip_leading_ = 0;       // BPE: spaces its decoder strips from the start of the text
  std::string chat_template_, chat_format_;
};

// A special token's text that ends a turn in one of the families' chat formats, so ends
// generation: <|eot_id|>, <|eom_id|>, <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>,
// <|end_of_text|>, <|return|> (as llama.cpp's vocabulary counts them).
bool is_end_of_turn_text(const std::string& text);

// Turns a stream of token ids into UTF-8 text, piece by piece (streaming output).
class TokenDecoder {
 public:
  // special: control tokens print as their piece ("<|eot_id|>") instead of nothing.
  explicit TokenDecoder(const Tokenizer& tok, bool special = false) : tok_(tok), special_(special) {}
  // The text that token completes (maybe empty: control tokens, an unfinished UTF-8 sequence).
  std::string push(int id);
  // Whatever is still held back (an unfinished UTF-8 sequence, as U+FFFD).
  std::string flush();

 private:
  const Tokenizer& tok_;
  bool special_;
  std::string pending_;    // bytes of an unfinished UTF-8 sequence
  int prev_ = -1;          // the previous token
  bool produced_ = false;  // some text was produced already
  int stripped_ = 0;       // leading spaces dropped so far (Tokenizer::strip_leading_ at most)
};

}  // namespace cllm
