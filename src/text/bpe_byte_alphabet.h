// GPT-2's byte <-> character table, the byte-level alphabet: how tokenizer.json spells raw
// bytes. Printable bytes stand for themselves, the other 68 (controls, space, 0x7F-0xA0, 0xAD)
// for U+0100 upwards, in byte order ("Ġ" U+0120 is a space).
#pragma once

#include <string>

namespace cllm {

std::string bpe_bytes_to_piece(const std::string& bytes);
bool bpe_piece_to_bytes(const std::string& piece, std::string* bytes);  // false: not byte-level

}  // namespace cllm
