// Added (special) tokens such as <|endoftext|>: literal strings matched in the raw
// text before pre-tokenization, so that BPE never splits them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace needle::data {

struct AddedToken {
  std::string content;  // raw UTF-8, as it appears in text
  int32_t id = -1;
  bool special = true;
  bool lstrip = false;  // the match swallows whitespace on its left
  bool rstrip = false;  // ... and on its right
};

struct AddedTokenMatch {
  size_t begin, end;  // span removed from the text, stripped whitespace included
  int32_t id;
};

// Leftmost-longest matching through a byte trie: the same choice Hugging Face
// makes when one added token is a prefix of another.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);

  bool empty() const { return tokens_.empty(); }
  std::vector<AddedTokenMatch> find_all(std::string_view text) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t token = -1;  // index into tokens_ when a token ends here
  };
  int32_t child(int32_t node, unsigned char c) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
};

}  // namespace needle::data
