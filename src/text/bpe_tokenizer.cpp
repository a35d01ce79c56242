#include "text/bpe_tokenizer.h"

#include <array>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "common/error.h"
#include "text/bpe_added_tokens.h"
#include "text/utf8.h"

namespace cllm {

namespace {

uint64_t pair_key(int a, int b) { return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b); }

}  // namespace

struct BpeTokenizer::Impl {
  std::unordered_map<std::string, int> vocab;  // raw bytes -> id (the lowest id for equal bytes)
  std::array<int, 256> byte_id{};
  struct MergeRule {
    int rank, id;
  };
  std::unordered_map<uint64_t, MergeRule> merges;  // (left, right) -> rank and merged id
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
  // The ids the piece's bytes merge into.
  std::vector<int> merge_bytes(const std::string& word) const;
};

BpeTokenizer::BpeTokenizer(BpeSpec spec, const std::string& origin) : spec_(std::move(spec)), impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const int n = n_tokens();
  if (n == 0) fail(origin, ": the BPE tokenizer has no tokens");
  m.vocab.reserve(static_cast<size_t>(n));
  for (int id = 0; id < n; ++id) m.vocab.emplace(spec_.tokens[static_cast<size_t>(id)], id);  // keeps the first
  for (int b = 0; b < 256; ++b) {
    auto it = m.vocab.find(std::string(1, static_cast<char>(b)));
    if (it == m.vocab.end())
      fail(origin, ": byte 0x", "0123456789ABCDEF"[b >> 4], "0123456789ABCDEF"[b & 15], " ('",
           bpe_bytes_to_piece(std::string(1, static_cast<char>(b))), "') has no token: not a byte-level vocabulary");
    m.byte_id[static_cast<size_t>(b)] = it->second;
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
  if (spec_.template_bos < -1 || spec_.template_bos >= n)
    fail(origin, ": the post-processor's BOS id ", spec_.template_bos, " is outside 0..", n - 1);
  m.pretokenizer = std::make_unique<BpePretokenizer>(spec_, origin);
  m.added = std::make_unique<BpeAddedTokens>(spec_.added, n, origin);
}

BpeTokenizer::~BpeTokenizer() = default;

int BpeTokenizer::find(const std::string& bytes) const {
  for (const auto& t : spec_.added)
    if (t.content == bytes) return t.id;
  auto it = impl_->vocab.find(bytes);
  return it == impl_->vocab.end() ? -1 : it->second;
}

std::vector<int> BpeTokenizer::encode(const std::string& input) const {
  const Impl& m = *impl_;
  std::vector<int> ids;
  if (input.empty()) return ids;
  const std::vector<BpeFragment> frags = m.added->cut(utf8_is_valid(input) ? input : utf8_repair(input));
  std::vector<std::string> pieces;
  for (const auto& f : frags) {
    if (f.token >= 0) {
      ids.push_back(f.token);
      continue;
    }
    m.pretokenizer->split(f.text, pieces);
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
  std::vector<int> word_ids = merge_bytes(word);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= kCacheLimit) cache.clear();
    cache.emplace(word, std::move(word_ids));
  }
}

// Lowest rank first, leftmost among equal ranks: the HF library's priority queue, stale
// entries skipped when popped.
std::vector<int> BpeTokenizer::Impl::merge_bytes(const std::string& word) const {
  struct Symbol {
    int id, prev, next, len;
  };
  const int n = static_cast<int>(word.size());
  std::vector<Symbol> sym(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) sym[static_cast<size_t>(i)] = {byte_id[static_cast<uint8_t>(word[static_cast<size_t>(i)])], i - 1, i + 1 < n ? i + 1 : -1, 1};
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
    if (cur.len == 0 || cur.next < 0) continue;
    const Symbol right = sym[static_cast<size_t>(cur.next)];
    const auto* r = merge(cur.id, right.id);
    if (!r || r->id != top.id) continue;  // stale
    sym[static_cast<size_t>(cur.next)].len = 0;
    cur.id = top.id;
    cur.len += right.len;
    cur.next = right.next;
    if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = top.pos;
    if (cur.prev >= 0)
      if (const auto* rp = merge(sym[static_cast<size_t>(cur.prev)].id, cur.id)) queue.push({cur.prev, rp->rank, rp->id});
    if (cur.next >= 0)
      if (const auto* rn = merge(cur.id, sym[static_cast<size_t>(cur.next)].id)) queue.push({top.pos, rn->rank, rn->id});
  }
  std::vector<int> word_ids;
  for (int i = 0; i >= 0 && i < n; i = sym[static_cast<size_t>(i)].next) word_ids.push_back(sym[static_cast<size_t>(i)].id);
  return word_ids;
}

}  // namespace cllm
