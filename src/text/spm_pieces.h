// A check SentencePiece needs before it loads a ModelProto: a piece its trie cannot hold (an
// empty one, or one with a NUL byte, which ends a key there) makes its loader throw from deep
// inside (darts_clone) instead of returning an error (a fuzzing finding). The ModelProto's pieces
// (field 1, each a message whose field 1 is the piece) are read from the wire format here.
#pragma once

#include <string>
#include <string_view>

namespace cllm {

// "piece 7 is empty" / "piece 7 contains a NUL byte", or "" when every piece is fine or the
// bytes are not protobuf's wire format at all (SentencePiece's own parse then refuses them).
std::string spm_piece_problem(std::string_view proto);

}  // namespace cllm
