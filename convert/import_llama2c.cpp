// llama2.c "legacy" (version 0) checkpoints: 7 x int32 header, then float32 tensors, each
// stacked over layers, in a fixed order (shared/models/README.md):
//   token_embedding_table [vocab][dim]       rms_att_weight [L][dim]
//   wq [L][dim][dim]    wk [L][kv_dim][dim]    wv [L][kv_dim][dim]    wo [L][dim][dim]
//   rms_ffn_weight [L][dim]
//   w1 [L][hidden][dim]  w2 [L][dim][hidden]   w3 [L][hidden][dim]
//   rms_final_weight [dim]   freq_cis_real [seq_len][head_size/2]   freq_cis_imag (same)
//   wcls [vocab][dim]  only when the header's vocab_size is negative (unshared classifier)
// Matrices are [out][in] (nn.Linear layout); RoPE rotates adjacent pairs (run.c).
#include <cstring>

#include "common/error.h"
#include "common/log.h"
#include "convert/import_util.h"
#include "convert/source_model.h"
#include "convert/tokenizer_import.h"

namespace cllm {

namespace {

// llama2.c's version 1/2 exports start with this magic ("ak42" little-endian).
constexpr uint32_t kLlama2cV1Magic = 0x616b3432;
// Generous bounds on header fields so every size below fits in 64 bits.
constexpr int32_t kMaxDim = 1 << 20;
constexpr int32_t kMaxLayers = 4096;
constexpr int32_t kMaxVocab = 1 << 24;

struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

std::string header_str(const Header& h) {
  return cat("dim=", h.dim, " hidden_dim=", h.hidden_dim, " layers=", h.n_layers, " heads=", h.n_heads,
             " kv_heads=", h.n_kv_heads, " vocab=", h.vocab_size, " seq_len=", h.seq_len);
}

void check_header(const Header& h, const std::string& path) {
  auto in_range = [&](const char* name, int32_t v, int32_t max) {
    if (v <= 0 || v > max)
      fail("'", path, "': header field ", name, " = ", v, " is not plausible (", header_str(h),
           "): not a llama2.c checkpoint?");
  };
  in_range("dim", h.dim, kMaxDim);
  in_range("hidden_dim", h.hidden_dim, kMaxDim * 8);
  in_range("n_layers", h.n_layers, kMaxLayers);
  in_range("n_heads", h.n_heads, h.dim);
  in_range("n_kv_heads", h.n_kv_heads, h.n_heads);
  if (h.vocab_size == 0 || h.vocab_size < -kMaxVocab || h.vocab_size > kMaxVocab)
    fail("'", path, "': header field vocab_size = ", h.vocab_size, " is not plausible (", header_str(h), ")");
  in_range("seq_len", h.seq_len, kMaxDim * 16);
  if (h.dim % h.n_heads != 0)
    fail("'", path, "': dim ", h.dim, " is not a multiple of n_heads ", h.n_heads, " (", header_str(h), ")");
  if (h.n_heads % h.n_kv_heads != 0)
    fail("'", path, "': n_heads ", h.n_heads, " is not a multiple of n_kv_heads ", h.n_kv_heads);
  if ((h.dim / h.n_heads) % 2 != 0)
    fail("'", path, "': head size ", h.dim / h.n_heads, " is odd: RoPE needs pairs");
}

// A positive vocab_size shares the classifier with the embedding; a negative one promises a
// separate classifier (wcls) of |vocab_size| rows.
bool shares_classifier(const Header& h) { return h.vocab_size > 0; }

uint64_t vocab_rows(const Header& h) {
  return static_cast<uint64_t>(shares_classifier(h) ? h.vocab_size : -static_cast<int64_t>(h.vocab_size));
}

constexpr uint64_t kHeaderBytes = 7 * 4;

// The 7 int32 header fields, refusing the newer exports' magic first.
Header read_header(const MappedFile& file, const std::string& path) {
  ByteReader r(file.data(), file.size(), path);
  if (file.size() >= 4) {
    uint32_t magic;
    std::memcpy(&magic, file.data(), 4);
    if (magic == kLlama2cV1Magic)
      fail("'", path, "': llama2.c version 1/2 export (magic \"ak42\") is not supported: export with "
           "the legacy format (version 0), or convert to GGUF or a Hugging Face folder");
  }
  Header h;
  h.dim = r.read<int32_t>("the header (7 int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len)");
  h.hidden_dim = r.read<int32_t>("header field hidden_dim");
  h.n_layers = r.read<int32_t>("header field n_layers");
  h.n_heads = r.read<int32_t>("header field n_heads");
  h.n_kv_heads = r.read<int32_t>("header field n_kv_heads");
  h.vocab_size = r.read<int32_t>("header field vocab_size");
  h.seq_len = r.read<int32_t>("header field seq_len");
  check_header(h, path);
  return h;
}

// The file must hold exactly the header's tensors; a mismatch names the likely cause.
void check_file_size(const Header& h, uint64_t file_size, const std::string& path) {
  const bool shared = shares_classifier(h);
  const uint64_t dim = h.dim, hidden = h.hidden_dim, L = h.n_layers, seq = h.seq_len;
  const uint64_t vocab = vocab_rows(h);
  const uint64_t head_size = dim / h.n_heads;
  const uint64_t kv_dim = dim * h.n_kv_heads / h.n_heads;

  // Expected size, in floats, with and without the classifier.
  const uint64_t body = vocab * dim + L * dim + L * dim * dim + 2 * L * kv_dim * dim + L * dim * dim +
                        L * dim + 3 * L * hidden * dim + dim + seq * head_size;
  const uint64_t without_cls = kHeaderBytes + 4 * body;
  const uint64_t with_cls = without_cls + 4 * vocab * dim;
  const uint64_t expect = shared ? without_cls : with_cls;
  if (file_size != expect) {
    std::string hint;
    if (shared && file_size == with_cls)
      hint = " (the file has room for a separate classifier, but vocab_size is positive, which means a shared one)";
    else if (!shared && file_size == without_cls)
      hint = " (vocab_size is negative, which promises a separate classifier, but the file has none)";
    else if (file_size < expect)
      hint = " (file truncated?)";
    fail("'", path, "': expected ", expect, " bytes for ", header_str(h), ", found ", file_size, hint);
  }
}

LlamaConfig config_from_header(const Header& h) {
  LlamaConfig c;
  c.dim = h.dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.head_dim = h.dim / h.n_heads;
  c.ffn_dim = h.hidden_dim;
  c.vocab_size = static_cast<int>(vocab_rows(h));
  c.context_length = h.seq_len;
  c.norm_eps = 1e-5f;        // fixed by run.c, not stored
  c.rope_theta = 10000.0f;   // likewise
  c.rope_layout = RopeLayout::interleaved;
  c.tie_embeddings = shares_classifier(h);
  return c;
}

// Walks the float section from `p`; each block is sliced per layer. The size check guarantees
// every slice lies inside the file.
void add_tensors(SourceModel& m, const Header& h, const uint8_t* p) {
  const uint64_t dim = h.dim, hidden = h.hidden_dim, seq = h.seq_len;
  const uint64_t vocab = vocab_rows(h);
  const uint64_t head_size = dim / h.n_heads;
  const uint64_t kv_dim = dim * h.n_kv_heads / h.n_heads;
  auto add = [&](const std::string& name, const std::string& source_name, std::vector<uint64_t> shape) {
    SourceTensor t;
    t.name = name;
    t.source_name = source_name;
    t.dtype = DType::F32;
    t.shape = std::move(shape);
    t.size = 4;
    for (auto d : t.shape) t.size *= d;
    t.data = p;
    p += t.size;
    m.tensors.push_back(std::move(t));
  };
  auto per_layer = [&](const char* part, const char* source, std::vector<uint64_t> shape) {
    for (int l = 0; l < h.n_layers; ++l)
      add(layer_tensor_name(l, part), cat(source, "[", l, "]"), shape);
  };
  add("token_embd.weight", "token_embedding_table", {vocab, dim});
  per_layer("attn_norm", "rms_att_weight", {dim});
  per_layer("attn_q", "wq", {dim, dim});
  per_layer("attn_k", "wk", {kv_dim, dim});
  per_layer("attn_v", "wv", {kv_dim, dim});
  per_layer("attn_output", "wo", {dim, dim});
  per_layer("ffn_norm", "rms_ffn_weight", {dim});
  per_layer("ffn_gate", "w1", {hidden, dim});
  per_layer("ffn_down", "w2", {dim, hidden});
  per_layer("ffn_up", "w3", {hidden, dim});
  add("output_norm.weight", "rms_final_weight", {dim});
  p += 4 * seq * head_size;  // freq_cis_real + freq_cis_imag: legacy RoPE tables run.c ignores
  if (!shares_classifier(h)) add("output.weight", "wcls", {vocab, dim});
}

struct SpecialTokens {
  int bos = 1, eos = 2;  // run.c's fixed ids
};

// Tokenizer: only from --tokenizer (llama2.c keeps it in a separate file).
SpecialTokens load_tokenizer(SourceModel& m, const std::string& path, const ImportOptions& opt) {
  SpecialTokens ids;
  if (!opt.tokenizer_path.empty()) {
    SpmInfo info;
    m.tokenizer = load_tokenizer_file(opt.tokenizer_path, m.config.vocab_size, &info);
    ids.bos = info.bos_id;
    ids.eos = info.eos_id;
  } else {
    log_debug("'", path, "': no --tokenizer given: the model will have no tokenizer");
  }
  return ids;
}

}  // namespace

SourceModel import_llama2c(const std::string& path, const ImportOptions& opt) {
  SourceModel m;
  m.format = SourceFormat::llama2c;
  m.path = path;
  m.files.push_back(std::make_unique<MappedFile>(path));
  const MappedFile& file = *m.files.back();

  const Header h = read_header(file, path);
  check_file_size(h, file.size(), path);
  m.config = config_from_header(h);
  add_tensors(m, h, file.data() + kHeaderBytes);

  const SpecialTokens ids = load_tokenizer(m, path, opt);
  fill_source_metadata(m);
  if (ids.bos >= 0) m.extra_metadata["tokenizer.bos_id"] = ids.bos;
  if (ids.eos >= 0) m.extra_metadata["tokenizer.eos_id"] = ids.eos;
  m.extra_metadata["tokenizer.add_bos"] = true;  // run.c always starts with BOS
  check_and_order_tensors(m);
  return m;
}

}  // namespace cllm
