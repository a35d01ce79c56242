// Text <-> token ids for Llama models with a SentencePiece tokenizer (Llama 1/2, TinyLlama, the
// stories models), through the SentencePiece library. BOS/EOS handling and the streaming
// detokenizer follow llama.cpp: a prompt starts with BOS unless told otherwise, byte-fallback
// pieces (<0xNN>) are held back until they form whole UTF-8 characters, and the '▁' that
// begins the first piece after BOS prints as nothing.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "format/cllm_reader.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace cllm {

class Tokenizer {
 public:
  // The tokenizer embedded in a .cllm file (metadata tokenizer.model == "sentencepiece",
  // tensor tokenizer.data). Throws a clear error when the file has none.
  static Tokenizer from_cllm(const CllmFile& f, ThreadPool* pool = nullptr);
  // A SentencePiece .model file (tokenize --tokenizer FILE).
  static Tokenizer from_file(const std::string& path);
  // A serialized SentencePiece ModelProto; origin names it in errors.
  static Tokenizer from_serialized(const std::string& proto, const std::string& origin);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of text, with BOS first when add_bos (and the model has a BOS token).
  std::vector<int> encode(const std::string& text, bool add_bos) const;

  int n_vocab() const { return static_cast<int>(text_.size()); }
  int bos_id() const { return bos_id_; }    // -1 when none
  int eos_id() const { return eos_id_; }    // -1 when none
  bool add_bos() const { return add_bos_; }  // the model's default (tokenizer.add_bos)

  // The piece as stored ("▁Hello", "<0x0A>", "<s>").
  const std::string& piece(int id) const;
  // The piece as text: '▁' -> ' ', control tokens as their piece ("<s>"), byte tokens as
  // "<0xNN>" (one byte alone may be no valid UTF-8). For listings like `tokenize`.
  std::string display(int id) const;
  bool is_control(int id) const { return kind(id) == Kind::control; }
  bool is_byte(int id) const { return kind(id) == Kind::byte; }

 private:
  friend class TokenDecoder;
  enum class Kind : uint8_t { normal, control, unknown, byte };
  Tokenizer() = default;
  Kind kind(int id) const;
  void check_id(int id) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string origin_;                // for error messages
  std::vector<std::string> text_;     // per id: the piece with '▁' as ' ' (normal tokens)
  std::vector<Kind> kind_;
  std::vector<uint8_t> byte_;         // per id: the byte of a <0xNN> piece
  int bos_id_ = -1, eos_id_ = -1;
  bool add_bos_ = true;
};

// Turns a stream of token ids into UTF-8 text, piece by piece (streaming output).
class TokenDecoder {
 public:
  explicit TokenDecoder(const Tokenizer& tok) : tok_(tok) {}
  // The text that token completes (maybe empty: control tokens, an unfinished UTF-8 sequence).
  std::string push(int id);
  // Whatever is still held back (an unfinished UTF-8 sequence, as U+FFFD per byte).
  std::string flush();

 private:
  const Tokenizer& tok_;
  std::string pending_;    // bytes of an unfinished UTF-8 sequence
  size_t need_ = 0;        // its full length
  int prev_ = -1;          // the previous token
};

}  // namespace cllm
