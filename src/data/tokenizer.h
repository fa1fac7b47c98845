// needle::data::Tokenizer: byte-level BPE as in GPT-2 and GPT-NeoX/Pythia.
// encode: added tokens are cut out first, the rest is (optionally) NFC-normalized,
// split by GPT-2's pre-tokenizer, and each word is turned into ids by BPE (with a
// per-word cache, since natural text repeats its words). decode concatenates the
// tokens' bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/added_tokens.h"
#include "data/bpe.h"

namespace needle::data {

struct TokenizerOptions {
  bool nfc = false;               // NFC normalizer (Pythia's tokenizer.json has one)
  bool add_prefix_space = false;  // ByteLevel option: a space before text that lacks one
  bool use_regex = true;          // ByteLevel option: false keeps each text piece whole
};

class Tokenizer {
 public:
  // vocab holds every token's spelling in the byte-level alphabet (as in the
  // files), e.g. "Ġworld"; added tokens are matched literally and may be absent
  // from vocab.
  Tokenizer(const std::vector<std::pair<std::string, int32_t>>& vocab,
            const std::vector<std::pair<std::string, std::string>>& merges,
            std::vector<AddedToken> added, TokenizerOptions options, const std::string& source,
            bool ignore_merges = false);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // GPT-2's encoder.json + vocab.bpe (<|endoftext|> becomes the special token).
  static Tokenizer from_gpt2(const std::string& encoder_json_path,
                             const std::string& vocab_bpe_path);
  // A Hugging Face tokenizer.json with a BPE model and a ByteLevel pre-tokenizer.
  static Tokenizer from_file(const std::string& tokenizer_json_path);

  // text must be valid UTF-8 (std::invalid_argument otherwise).
  std::vector<int32_t> encode(std::string_view text) const;
  // Encodes many texts on num_threads threads (0: one per hardware thread).
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts,
                                                 int num_threads = 0) const;

  // The concatenated bytes of the tokens; may end inside a UTF-8 character.
  std::string decode_bytes(const std::vector<int32_t>& ids) const;
  // decode_bytes with ill-formed UTF-8 replaced by U+FFFD, as Python's
  // bytes.decode("utf-8", "replace") does.
  std::string decode(const std::vector<int32_t>& ids) const;

  int64_t vocab_size() const { return static_cast<int64_t>(id_to_bytes_.size()); }
  std::optional<int32_t> eot_token() const { return eot_; }
  std::optional<int32_t> token_to_id(std::string_view token) const;  // vocabulary spelling
  std::string id_to_token(int32_t id) const;                         // std::out_of_range if unknown
  const TokenizerOptions& options() const { return options_; }

 private:
  struct Cache;
  Cache* acquire_cache(std::unique_lock<std::mutex>& lock) const;
  void encode_into(std::string_view text, std::vector<int32_t>& out, Cache& cache) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out, Cache& cache) const;
  const std::string& token_bytes(int32_t id) const;

  BpeModel model_;
  AddedTokenMatcher added_;
  TokenizerOptions options_;
  std::vector<std::string> id_to_bytes_;     // raw bytes per id ("" where the id is unused)
  std::vector<std::string> id_to_spelling_;  // as written in the vocabulary file
  std::vector<bool> id_used_;
  std::unordered_map<std::string, int32_t>
      spelling_to_id_;  // vocabulary spellings and added contents
  std::optional<int32_t> eot_;
  // Word caches kept across calls, one per concurrently encoding thread.
  std::vector<std::unique_ptr<Cache>> caches_;
};

}  // namespace needle::data
