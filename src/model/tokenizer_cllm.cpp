// Tokenizer::from_cllm (declared in text/tokenizer.h): the tokenizer a .cllm file embeds. It
// lives here, not in src/text, because it reads a tensor of the container through the tile
// decoder (model/tensor_data.h); the text library only turns the bytes and metadata into a
// tokenizer (Tokenizer::from_embedded).
#include "text/tokenizer.h"

#include "common/crc32c.h"
#include "common/error.h"
#include "format/cllm_reader.h"
#include "model/tensor_data.h"

namespace cllm {

Tokenizer Tokenizer::from_cllm(const CllmFile& f, ThreadPool* pool) {
  return with_context(cat("'", f.path(), "'"), [&] {
    const auto& m = f.metadata();
    auto kind = m.find("tokenizer.model");
    const std::string model = kind != m.end() && kind->is_string() ? kind->get<std::string>() : "none";
    if (model == "none")
      fail("the file has no tokenizer (metadata tokenizer.model is \"none\"): compress the model with "
           "--tokenizer FILE (a SentencePiece .model or a tokenizer.json), or pass --tokenizer FILE where the "
           "command has it");
    if (model != "sentencepiece" && model != "bpe")
      fail("unsupported tokenizer '", model, "' (this version reads \"sentencepiece\" and \"bpe\")");
    const TensorInfo* data = f.find("tokenizer.data");
    if (!data) fail("metadata says tokenizer.model is \"", model, "\" but there is no tensor 'tokenizer.data'");
    // Its tiles' checksums are checked here even when the file was opened without verification
    // (tokenize opens big models that way): a few MiB at most.
    for (size_t i = 0; i < data->tiles.size(); ++i) {
      const TileInfo& tile = data->tiles[i];
      if (crc32c(f.tile_data(tile), tile.size) != tile.crc32c)
        fail("tensor 'tokenizer.data' tile ", i, ": checksum mismatch (file corrupted or incomplete)");
    }
    const auto bytes = decode_tensor_bytes(f, *data, pool);
    return from_embedded(model, std::string(bytes.begin(), bytes.end()), "tensor 'tokenizer.data'", m);
  });
}

}  // namespace cllm
