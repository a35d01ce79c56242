// The compact form of a BpeSpec that a .cllm file stores as tensor tokenizer.data
// (docs/format.md, "BPE tokenizer data"): what tokenizer.json holds, without the JSON parse
// and the byte-level spelling. The reader bounds every count and length before using it.
#include "text/bpe_spec.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace cllm {

namespace {

constexpr char kMagic[8] = {'c', 'l', 'l', 'm', '-', 'b', 'p', 'e'};
constexpr uint32_t kVersion = 2;  // 1: splits / add_prefix_space / byte_level_regex only (still read)

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

class Reader {
 public:
  Reader(const uint8_t* p, size_t n, const std::string& origin) : p_(p), n_(n), origin_(origin) {}
  size_t remaining() const { return n_ - pos_; }
  const uint8_t* take(size_t k, const char* what) {
    if (k > remaining())
      fail(origin_, ": truncated at byte ", pos_, " while reading ", what, " (", k, " bytes needed, ", remaining(),
           " left)");
    const uint8_t* q = p_ + pos_;
    pos_ += k;
    return q;
  }
  uint32_t u32(const char* what) {
    const uint8_t* q = take(4, what);
    return static_cast<uint32_t>(q[0]) | static_cast<uint32_t>(q[1]) << 8 | static_cast<uint32_t>(q[2]) << 16 |
           static_cast<uint32_t>(q[3]) << 24;
  }
  size_t pos() const { return pos_; }

 private:
  const uint8_t* p_;
  size_t n_, pos_ = 0;
  const std::string& origin_;
};

// The names the header gives the steps' kinds, in enum order.
const char* const kNormalizerKinds[] = {"nfc", "nfd", "nfkc", "nfkd", "prepend", "replace"};
const char* const kPreStepKinds[] = {"split", "byte_level", "metaspace"};

nlohmann::json normalizers_json(const std::vector<BpeNormalizer>& steps) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& n : steps)
    out.push_back({{"kind", kNormalizerKinds[static_cast<int>(n.kind)]}, {"pattern", n.pattern}, {"content", n.content}});
  return out;
}

nlohmann::json pre_steps_json(const std::vector<BpePreStep>& steps) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& p : steps)
    out.push_back({{"kind", kPreStepKinds[static_cast<int>(p.kind)]},
                   {"pattern", p.pattern},
                   {"behavior", static_cast<int>(p.behavior)},
                   {"invert", p.invert},
                   {"add_prefix_space", p.add_prefix_space},
                   {"use_regex", p.use_regex},
                   {"replacement", p.replacement},
                   {"prepend", static_cast<int>(p.prepend)},
                   {"split", p.split}});
  return out;
}

// The index of name in kinds, or a json exception (the caller reports it with the origin).
template <size_t N>
int kind_index(const std::string& name, const char* const (&kinds)[N]) {
  for (size_t i = 0; i < N; ++i)
    if (name == kinds[i]) return static_cast<int>(i);
  throw nlohmann::json::other_error::create(501, "unknown kind '" + name + "'", nullptr);
}

int bounded(const nlohmann::json& v, int hi) {
  const int x = v.get<int>();
  if (x < 0 || x > hi) throw nlohmann::json::other_error::create(501, "value " + std::to_string(x) + " out of range", nullptr);
  return x;
}

void read_steps(const nlohmann::json& h, BpeSpec& spec) {
  for (const auto& n : h.at("normalizers"))
    spec.normalizers.push_back({static_cast<BpeNormalizer::Kind>(kind_index(n.at("kind").get<std::string>(), kNormalizerKinds)),
                                n.at("pattern").get<std::string>(), n.at("content").get<std::string>()});
  for (const auto& p : h.at("pre_steps")) {
    BpePreStep s;
    s.kind = static_cast<BpePreStep::Kind>(kind_index(p.at("kind").get<std::string>(), kPreStepKinds));
    s.pattern = p.at("pattern").get<std::string>();
    s.behavior = static_cast<BpeSplitBehavior>(bounded(p.at("behavior"), 4));
    s.invert = p.at("invert").get<bool>();
    s.add_prefix_space = p.at("add_prefix_space").get<bool>();
    s.use_regex = p.at("use_regex").get<bool>();
    s.replacement = p.at("replacement").get<std::string>();
    s.prepend = static_cast<BpePreStep::Prepend>(bounded(p.at("prepend"), 2));
    s.split = p.at("split").get<bool>();
    spec.pre_steps.push_back(std::move(s));
  }
  spec.byte_fallback = h.at("byte_fallback").get<bool>();
  spec.fuse_unk = h.at("fuse_unk").get<bool>();
  spec.unk_id = h.at("unk_id").get<int>();
  spec.decode_strip_leading = bounded(h.at("decode_strip_leading"), 8);
}

// Version 1 had byte-level tokenizers only: Split (isolated) regexes, then ByteLevel.
void read_steps_v1(const nlohmann::json& h, BpeSpec& spec) {
  for (const auto& pattern : h.at("splits").get<std::vector<std::string>>()) {
    BpePreStep s;
    s.pattern = pattern;
    spec.pre_steps.push_back(std::move(s));
  }
  BpePreStep b;
  b.kind = BpePreStep::Kind::byte_level;
  b.add_prefix_space = h.at("add_prefix_space").get<bool>();
  b.use_regex = h.at("byte_level_regex").get<bool>();
  spec.pre_steps.push_back(std::move(b));
}

}  // namespace

// Layout (little-endian; docs/format.md "BPE tokenizer data"):
//   "cllm-bpe" | u32 version | u32 n_header | header JSON | u32 n_tokens | n_tokens x u32 length |
//   token bytes | u32 n_merges | n_merges x (u32 left, u32 right)
std::vector<uint8_t> bpe_spec_serialize(const BpeSpec& spec) {
  nlohmann::json added = nlohmann::json::array();
  for (const auto& t : spec.added)
    added.push_back({{"id", t.id}, {"special", t.special}, {"lstrip", t.lstrip}, {"rstrip", t.rstrip},
                     {"normalized", t.normalized}});
  const nlohmann::json header = {{"normalizers", normalizers_json(spec.normalizers)},
                                 {"pre_steps", pre_steps_json(spec.pre_steps)},
                                 {"ignore_merges", spec.ignore_merges},
                                 {"byte_fallback", spec.byte_fallback},
                                 {"fuse_unk", spec.fuse_unk},
                                 {"unk_id", spec.unk_id},
                                 {"decode_strip_leading", spec.decode_strip_leading},
                                 {"template_bos", spec.template_bos},
                                 {"added", added}};
  const std::string h = header.dump();
  std::vector<uint8_t> out(kMagic, kMagic + 8);
  put_u32(out, kVersion);
  put_u32(out, static_cast<uint32_t>(h.size()));
  out.insert(out.end(), h.begin(), h.end());
  put_u32(out, static_cast<uint32_t>(spec.tokens.size()));
  for (const auto& t : spec.tokens) put_u32(out, static_cast<uint32_t>(t.size()));
  for (const auto& t : spec.tokens) out.insert(out.end(), t.begin(), t.end());
  put_u32(out, static_cast<uint32_t>(spec.merges.size()));
  for (const auto& [a, b] : spec.merges) {
    put_u32(out, static_cast<uint32_t>(a));
    put_u32(out, static_cast<uint32_t>(b));
  }
  return out;
}

bool bpe_spec_looks_serialized(const uint8_t* data, size_t size) {
  return size >= 8 && std::memcmp(data, kMagic, 8) == 0;
}

BpeSpec bpe_spec_deserialize(const uint8_t* data, size_t size, const std::string& origin) {
  if (!bpe_spec_looks_serialized(data, size)) fail(origin, ": not codecllm BPE tokenizer data (no 'cllm-bpe' magic)");
  Reader r(data, size, origin);
  r.take(8, "magic");
  const uint32_t version = r.u32("version");
  if (version != kVersion && version != 1)
    fail(origin, ": BPE tokenizer data version ", version, ", this build reads 1 and ", kVersion);
  const uint32_t nh = r.u32("header length");
  const uint8_t* hp = r.take(nh, "header");
  BpeSpec spec;
  try {
    const auto h = nlohmann::json::parse(hp, hp + nh);
    if (version == 1) read_steps_v1(h, spec);
    else read_steps(h, spec);
    spec.ignore_merges = h.at("ignore_merges").get<bool>();
    spec.template_bos = h.at("template_bos").get<int>();
    for (const auto& a : h.at("added")) {
      BpeAddedToken t;
      t.id = a.at("id").get<int>();
      t.special = a.at("special").get<bool>();
      t.lstrip = a.at("lstrip").get<bool>();
      t.rstrip = a.at("rstrip").get<bool>();
      t.normalized = a.at("normalized").get<bool>();
      spec.added.push_back(t);
    }
  } catch (const nlohmann::json::exception& e) {
    fail(origin, ": BPE tokenizer header: ", e.what());
  }
  const uint32_t n = r.u32("token count");
  if (n == 0 || static_cast<uint64_t>(n) * 4 > r.remaining())
    fail(origin, ": token count ", n, " does not fit the ", r.remaining(), " bytes left");
  std::vector<uint32_t> len(n);
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; ++i) total += len[i] = r.u32("token lengths");
  if (total > r.remaining()) fail(origin, ": the tokens' lengths add up to ", total, " bytes, only ", r.remaining(), " left");
  spec.tokens.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* p = r.take(len[i], "token bytes");
    spec.tokens[i].assign(reinterpret_cast<const char*>(p), len[i]);
  }
  const uint32_t nm = r.u32("merge count");
  if (static_cast<uint64_t>(nm) * 8 != r.remaining())
    fail(origin, ": ", nm, " merges need ", static_cast<uint64_t>(nm) * 8, " bytes, ", r.remaining(), " are left");
  spec.merges.resize(nm);
  for (uint32_t i = 0; i < nm; ++i) {
    const uint32_t a = r.u32("merge"), b = r.u32("merge");
    if (a >= n || b >= n) fail(origin, ": merge ", i, " names token ", std::max(a, b), ", outside the ", n, " tokens");
    spec.merges[i] = {static_cast<int>(a), static_cast<int>(b)};
  }
  for (auto& t : spec.added) {
    if (t.id < 0 || static_cast<uint32_t>(t.id) >= n)
      fail(origin, ": added token id ", t.id, " is outside the ", n, " tokens");
    t.content = spec.tokens[static_cast<size_t>(t.id)];
  }
  return spec;
}

}  // namespace cllm
