// Trie matching of added tokens, with the lstrip/rstrip options of tokenizer.json.
#include "data/added_tokens.h"

#include <stdexcept>

namespace needle::data {
namespace {

// Hugging Face strips Unicode whitespace; ASCII whitespace covers the tokens in
// the wild (and keeps this independent of the regex engine).
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) : tokens_(tokens) {
  nodes_.emplace_back();
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const std::string& s = tokens_[t].content;
    if (s.empty())
      throw std::invalid_argument("added token with id " + std::to_string(tokens_[t].id) +
                                  " is empty");
    int32_t node = 0;
    for (unsigned char c : s) {
      int32_t next = child(node, c);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_[node].children.emplace_back(c, next);
        nodes_.emplace_back();
      }
      node = next;
    }
    // With duplicates the first listed wins, as the id order of the file suggests.
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<int32_t>(t);
    first_byte_[static_cast<unsigned char>(s[0])] = true;
  }
}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char c) const {
  for (const auto& [byte, next] : nodes_[node].children)
    if (byte == c) return next;
  return -1;
}

std::vector<AddedTokenMatch> AddedTokenMatcher::find_all(std::string_view text) const {
  std::vector<AddedTokenMatch> out;
  if (tokens_.empty()) return out;
  size_t pos = 0;
  size_t floor = 0;  // lstrip must not reach back into the previous match
  while (pos < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    int32_t node = 0, best = -1;
    size_t best_end = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      node = child(node, static_cast<unsigned char>(text[i]));
      if (node < 0) break;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        best_end = i + 1;
      }
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[best];
    size_t begin = pos, end = best_end;
    if (tok.lstrip)
      while (begin > floor && is_space(text[begin - 1])) --begin;
    if (tok.rstrip)
      while (end < text.size() && is_space(text[end])) ++end;
    out.push_back({begin, end, tok.id});
    pos = floor = end;
  }
  return out;
}

}  // namespace needle::data
