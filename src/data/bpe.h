// The BPE model: a vocabulary of byte strings and ranked merges, applied to one
// pre-tokenized word at a time. Works on raw bytes; the byte-level spelling of
// vocabulary files is undone by the loaders.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace needle::data {

class BpeModel {
 public:
  // vocab: (token bytes, id); merges in rank order as (left bytes, right bytes).
  // Every single byte must be in the vocabulary (byte-level BPE never needs an
  // unknown token), and each merge's parts and result must be too. Errors
  // (std::invalid_argument) start with `source` so that they name the file.
  BpeModel(const std::vector<std::pair<std::string, int32_t>>& vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges,
           const std::string& source);

  // Appends the ids of one word. Merges are applied lowest rank first, leftmost
  // first among equal ranks, as GPT-2's reference loop does; a heap keeps long
  // words (runs of digits, base64 blobs) O(n log n) instead of quadratic.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  // -1 if the byte string is not a token.
  int32_t find(std::string_view token) const;
  size_t num_merges() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  std::unordered_map<std::string, int32_t> token_ids_;
  std::array<int32_t, 256> byte_ids_{};
  std::unordered_map<uint64_t, Merge> merges_;
  bool ignore_merges_;
};

}  // namespace needle::data
