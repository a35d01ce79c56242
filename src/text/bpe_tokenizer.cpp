#include "text/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "common/error.h"
#include "text/bpe_added_tokens.h"
#include "text/bpe_normalizer.h"
#include "text/utf8.h"

namespace cllm {

namespace {

uint64_t pair_key(int a, int b) { return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b); }

}  // namespace

struct BpeTokenizer::Impl {
  std::unordered_map<std::string, int> vocab;  // raw bytes -> id (the lowest id for equal bytes)
  bool byte_level = true;
  std::array<int, 256> byte_id{};      // byte-level: the token of each byte, -1 when none
  std::array<int, 256> fallback_id{};  // byte_fallback: the <0xNN> token of each byte, -1 when none
  bool byte_fallback = false, fuse_unk = false;
  int unk_id = -1;
  struct MergeRule {
    int rank, id;
  };
  std::unordered_map<uint64_t, MergeRule> merges;  // (left, right) -> rank and merged id
  std::unique_ptr<BpeNormalizerChain> normalizer;
  std::unique_ptr<BpePretokenizer> pretokenizer;
  std::unique_ptr<BpeAddedTokens> added;

  static constexpr size_t kCacheLimit = 1 << 16;  // pieces; the cache is dropped when it is full
  static constexpr size_t kCacheableBytes = 256;  // longer pieces are not cached (as HF)
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int>> cache;

  const MergeRule* merge(int a, int b) const {
    auto it = merges.find(pair_key(a, b));
    return it == merges.end() ? nullptr : &it->second;
  }
  // Appends the ids of one pre-tokenized piece (cached).
  void encode_piece(const std::string& word, bool ignore_merges, std::vector<int>& ids) const;
  // The piece's starting symbols: one token per byte or per character (see the header).
  std::vector<int> initial_symbols(const std::string& word) const;
  // The ids the piece's symbols merge into.
  std::vector<int> merge_symbols(const std::string& word) const;
  // The text fragments between added tokens, normalized, with the normalized added tokens cut out.
  std::vector<BpeFragment> fragments(const std::string& text) const;
};

BpeTokenizer::BpeTokenizer(BpeSpec spec, const std::string& origin) : spec_(std::move(spec)), impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const int n = n_tokens();
  if (n == 0) fail(origin, ": the BPE tokenizer has no tokens");
  m.vocab.reserve(static_cast<size_t>(n));
  for (int id = 0; id < n; ++id) m.vocab.emplace(spec_.tokens[static_cast<size_t>(id)], id);  // keeps the first
  m.byte_level = spec_.byte_level();
  m.byte_fallback = spec_.byte_fallback;
  m.fuse_unk = spec_.fuse_unk;
  m.unk_id = spec_.unk_id;
  for (int b = 0; b < 256; ++b) {
    auto it = m.vocab.find(std::string(1, static_cast<char>(b)));
    m.byte_id[static_cast<size_t>(b)] = it == m.vocab.end() ? -1 : it->second;
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto fb = m.vocab.find(name);
    m.fallback_id[static_cast<size_t>(b)] = fb == m.vocab.end() ? -1 : fb->second;
  }
  m.merges.reserve(spec_.merges.size());
  for (size_t rank = 0; rank < spec_.merges.size(); ++rank) {
    const auto [a, b] = spec_.merges[rank];
    if (a < 0 || a >= n || b < 0 || b >= n) fail(origin, ": merge ", rank, " names a token outside 0..", n - 1);
    const std::string joined = spec_.tokens[static_cast<size_t>(a)] + spec_.tokens[static_cast<size_t>(b)];
    auto it = m.vocab.find(joined);
    if (it == m.vocab.end())
      fail(origin, ": merge ", rank, " ('", bpe_bytes_to_piece(spec_.tokens[static_cast<size_t>(a)]), "' '",
           bpe_bytes_to_piece(spec_.tokens[static_cast<size_t>(b)]), "') makes a token that is not in the vocabulary");
    m.merges[pair_key(a, b)] = {static_cast<int>(rank), it->second};  // a repeated pair keeps its last rank, as HF
  }
  for (const auto& [what, id] : {std::pair<const char*, int>{"post-processor's BOS", spec_.template_bos}, {"unknown token", spec_.unk_id}})
    if (id < -1 || id >= n) fail(origin, ": the ", what, " id ", id, " is outside 0..", n - 1);
  m.normalizer = std::make_unique<BpeNormalizerChain>(spec_.normalizers, origin);
  m.pretokenizer = std::make_unique<BpePretokenizer>(spec_.pre_steps, origin);
  m.added = std::make_unique<BpeAddedTokens>(spec_.added, n, origin);
}

BpeTokenizer::~BpeTokenizer() = default;

int BpeTokenizer::n_missing_bytes() const {
  if (!impl_->byte_level) return 0;
  return static_cast<int>(std::count(impl_->byte_id.begin(), impl_->byte_id.end(), -1));
}

int BpeTokenizer::find(const std::string& bytes) const {
  for (const auto& t : spec_.added)
    if (t.content == bytes) return t.id;
  auto it = impl_->vocab.find(bytes);
  return it == impl_->vocab.end() ? -1 : it->second;
}

std::vector<BpeFragment> BpeTokenizer::Impl::fragments(const std::string& text) const {
  if (normalizer->empty()) return added->cut(text);
  std::vector<BpeFragment> frags = added->cut_raw(text);
  for (auto& f : frags)
    if (f.token < 0) f.text = normalizer->normalize(std::move(f.text));
  frags.erase(std::remove_if(frags.begin(), frags.end(), [](const BpeFragment& f) { return f.token < 0 && f.text.empty(); }),
              frags.end());
  added->cut_normalized(frags);
  return frags;
}

std::vector<int> BpeTokenizer::encode(const std::string& input) const {
  const Impl& m = *impl_;
  std::vector<int> ids;
  if (input.empty()) return ids;
  const std::vector<BpeFragment> frags = m.fragments(utf8_is_valid(input) ? input : utf8_repair(input));
  std::vector<std::string> pieces;
  for (const auto& f : frags) {
    if (f.token >= 0) {
      ids.push_back(f.token);
      continue;
    }
    m.pretokenizer->split(f.text, f.at_start, pieces);
    for (const auto& word : pieces) m.encode_piece(word, spec_.ignore_merges, ids);
  }
  return ids;
}

void BpeTokenizer::Impl::encode_piece(const std::string& word, bool ignore_merges, std::vector<int>& ids) const {
  if (ignore_merges) {
    auto it = vocab.find(word);
    if (it != vocab.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheableBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(word);
    if (it != cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int> word_ids = merge_symbols(word);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= kCacheLimit) cache.clear();
    cache.emplace(word, std::move(word_ids));
  }
}

std::vector<int> BpeTokenizer::Impl::initial_symbols(const std::string& word) const {
  std::vector<int> ids;
  ids.reserve(word.size());
  bool prev_unknown = false;
  for (size_t i = 0, len = 1; i < word.size(); i += len) {
    int id = -1;
    if (byte_level) {
      len = 1;
      id = byte_id[static_cast<uint8_t>(word[i])];
    } else {
      utf8_code_point(word, i, &len);
      auto it = vocab.find(word.substr(i, len));
      if (it != vocab.end()) id = it->second;
    }
    if (id >= 0) {
      ids.push_back(id);
      prev_unknown = false;
      continue;
    }
    if (byte_fallback) {  // all of the character's byte tokens, or none of them
      bool all = true;
      for (size_t k = 0; k < len; ++k) all = all && fallback_id[static_cast<uint8_t>(word[i + k])] >= 0;
      if (all) {
        for (size_t k = 0; k < len; ++k) ids.push_back(fallback_id[static_cast<uint8_t>(word[i + k])]);
        prev_unknown = false;
        continue;
      }
    }
    if (unk_id >= 0 && !(fuse_unk && prev_unknown)) ids.push_back(unk_id);
    prev_unknown = unk_id >= 0;
  }
  return ids;
}

// Lowest rank first, leftmost among equal ranks: the HF library's priority queue, stale
// entries skipped when popped.
std::vector<int> BpeTokenizer::Impl::merge_symbols(const std::string& word) const {
  struct Symbol {
    int id, prev, next;
    bool gone;
  };
  const std::vector<int> start = initial_symbols(word);
  const int n = static_cast<int>(start.size());
  std::vector<Symbol> sym(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) sym[static_cast<size_t>(i)] = {start[static_cast<size_t>(i)], i - 1, i + 1 < n ? i + 1 : -1, false};
  struct Merge {
    int pos, rank, id;
    bool operator<(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Merge> queue;
  for (int i = 0; i + 1 < n; ++i)
    if (const auto* r = merge(sym[static_cast<size_t>(i)].id, sym[static_cast<size_t>(i + 1)].id)) queue.push({i, r->rank, r->id});
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& cur = sym[static_cast<size_t>(top.pos)];
    if (cur.gone || cur.next < 0) continue;
    const Symbol right = sym[static_cast<size_t>(cur.next)];
    const auto* r = merge(cur.id, right.id);
    if (!r || r->id != top.id) continue;  // stale
    sym[static_cast<size_t>(cur.next)].gone = true;
    cur.id = top.id;
    cur.next = right.next;
    if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = top.pos;
    if (cur.prev >= 0)
      if (const auto* rp = merge(sym[static_cast<size_t>(cur.prev)].id, cur.id)) queue.push({cur.prev, rp->rank, rp->id});
    if (cur.next >= 0)
      if (const auto* rn = merge(cur.id, sym[static_cast<size_t>(cur.next)].id)) queue.push({top.pos, rn->rank, rn->id});
  }
  std::vector<int> word_ids;
  for (int i = n > 0 ? 0 : -1; i >= 0; i = sym[static_cast<size_t>(i)].next) word_ids.push_back(sym[static_cast<size_t>(i)].id);
  return word_ids;
}

}  // namespace cllm
