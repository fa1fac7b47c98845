// GPT-2's pre-tokenizer: splits text into the words that BPE merges never cross,
// with exactly the regex of GPT-2 (and of Hugging Face's ByteLevel pre-tokenizer):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
#pragma once

#include <string_view>
#include <vector>

namespace needle::data {

// Calls emit(std::string_view word) for each piece of text, in order; the pieces
// concatenate back to text. text must be valid UTF-8 (checked by the caller).
// Thread-safe: the compiled pattern is shared, match state is per thread.
class Pretokenizer {
 public:
  template <class Emit>
  static void split(std::string_view text, Emit&& emit) {
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t end = next_end(text, pos);
      emit(text.substr(pos, end - pos));
      pos = end;
    }
  }

  static std::vector<std::string_view> split(std::string_view text);

 private:
  // End of the piece that starts at pos (> pos).
  static size_t next_end(std::string_view text, size_t pos);
};

}  // namespace needle::data
