// Byte-pair merging over a linked list of symbols with a lazily invalidated heap.
#include "data/bpe.h"

#include <queue>
#include <stdexcept>

namespace needle::data {

BpeModel::BpeModel(const std::vector<std::pair<std::string, int32_t>>& vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   bool ignore_merges, const std::string& source)
    : ignore_merges_(ignore_merges) {
  token_ids_.reserve(vocab.size());
  for (const auto& [bytes, id] : vocab) {
    if (id < 0) throw std::invalid_argument(source + ": negative token id " + std::to_string(id));
    if (bytes.empty())
      throw std::invalid_argument(source + ": empty token with id " + std::to_string(id));
    if (!token_ids_.emplace(bytes, id).second)
      throw std::invalid_argument(source + ": two vocabulary entries spell the same bytes (id " +
                                  std::to_string(id) + ")");
  }
  for (int b = 0; b < 256; ++b) {
    const int32_t id = find(std::string(1, static_cast<char>(b)));
    if (id < 0)
      throw std::invalid_argument(source + ": vocabulary lacks the single-byte token for byte " +
                                  std::to_string(b) + " (byte-level BPE needs all 256)");
    byte_ids_[b] = id;
  }
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int32_t l = find(left), r = find(right), result = find(left + right);
    if (l < 0 || r < 0 || result < 0)
      throw std::invalid_argument(source + ": merge " + std::to_string(rank) +
                                  " uses or makes a token missing from the vocabulary");
    // A repeated pair keeps its first (best) rank, as in GPT-2's dict(zip(...)).
    merges_.emplace(pair_key(l, r), Merge{static_cast<int32_t>(rank), result});
  }
}

int32_t BpeModel::find(std::string_view token) const {
  const auto it = token_ids_.find(std::string(token));
  return it == token_ids_.end() ? -1 : it->second;
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() == 1) {
    out.push_back(byte_ids_[static_cast<unsigned char>(word[0])]);
    return;
  }
  if (ignore_merges_) {
    const int32_t whole = find(word);
    if (whole >= 0) {
      out.push_back(whole);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // -1 at the ends; id -1 once merged into its left neighbour
  };
  struct Candidate {
    int32_t rank, pos;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const int32_t n = static_cast<int32_t>(word.size());
  std::vector<Symbol> sym(n);
  for (int32_t i = 0; i < n; ++i)
    sym[i] = {byte_ids_[static_cast<unsigned char>(word[i])], i - 1, i + 1 < n ? i + 1 : -1};

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push_pair = [&](int32_t pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    const auto it = merges_.find(pair_key(sym[pos].id, sym[sym[pos].next].id));
    if (it != merges_.end()) heap.push({it->second.rank, pos});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);

  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = sym[c.pos];
    if (left.id < 0 || left.next < 0) continue;
    // Stale entries are recognised by the pair's current rank: ranks are unique per pair.
    const auto it = merges_.find(pair_key(left.id, sym[left.next].id));
    if (it == merges_.end() || it->second.rank != c.rank) continue;
    Symbol& right = sym[left.next];
    left.id = it->second.result;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = c.pos;
    right.id = -1;
    push_pair(left.prev);
    push_pair(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

}  // namespace needle::data
