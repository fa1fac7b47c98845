// Tokenizer construction, encode (single and multi-threaded) and decode.
#include "data/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "data/nfc.h"
#include "data/pretokenizer.h"
#include "data/utf8.h"

namespace needle::data {

// Word -> ids. Bounded so that a stream of never-repeating words (hashes, long
// numbers) cannot grow it without limit; clearing is cheap and rare.
struct Tokenizer::Cache {
  static constexpr size_t kMaxWords = 1 << 20;
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>> words;
};

namespace {

std::vector<std::pair<std::string, int32_t>> to_raw_vocab(
    const std::vector<std::pair<std::string, int32_t>>& vocab, const std::vector<AddedToken>& added,
    const std::string& source) {
  std::vector<std::pair<std::string, int32_t>> raw;
  raw.reserve(vocab.size());
  std::string bytes;
  for (const auto& [spelled, id] : vocab) {
    if (from_byte_level(spelled, bytes)) {
      raw.emplace_back(bytes, id);
      continue;
    }
    // Added tokens may be spelled outside the byte-level alphabet (e.g. "<pad> "):
    // they are matched literally and never produced by merges.
    const bool is_added =
        std::any_of(added.begin(), added.end(), [&](const AddedToken& t) { return t.id == id; });
    if (!is_added)
      throw std::invalid_argument(source + ": vocabulary token \"" + spelled + "\" (id " +
                                  std::to_string(id) + ") is not in GPT-2's byte-level alphabet");
  }
  return raw;
}

}  // namespace

Tokenizer::Tokenizer(const std::vector<std::pair<std::string, int32_t>>& vocab,
                     const std::vector<std::pair<std::string, std::string>>& merges,
                     std::vector<AddedToken> added, TokenizerOptions options,
                     const std::string& source, bool ignore_merges)
    : model_(
          to_raw_vocab(vocab, added, source),
          [&] {
            // Merges are written in the byte-level alphabet too.
            std::vector<std::pair<std::string, std::string>> raw;
            raw.reserve(merges.size());
            std::string l, r;
            for (size_t i = 0; i < merges.size(); ++i) {
              if (!from_byte_level(merges[i].first, l) || !from_byte_level(merges[i].second, r))
                throw std::invalid_argument(source + ": merge " + std::to_string(i) +
                                            " is not in GPT-2's byte-level alphabet");
              raw.emplace_back(l, r);
            }
            return raw;
          }(),
          ignore_merges, source),
      added_(added),
      options_(options),
      caches_(std::max(2u, std::thread::hardware_concurrency())) {
  for (auto& c : caches_) c = std::make_unique<Cache>();
  int64_t size = 0;
  for (const auto& [spelled, id] : vocab) size = std::max<int64_t>(size, int64_t{id} + 1);
  for (const auto& t : added) {
    if (t.id < 0)
      throw std::invalid_argument(source + ": added token \"" + t.content + "\" has a negative id");
    size = std::max<int64_t>(size, int64_t{t.id} + 1);
  }
  id_to_bytes_.assign(size, "");
  id_to_spelling_.assign(size, "");
  id_used_.assign(size, false);
  std::string bytes;
  for (const auto& [spelled, id] : vocab) {
    if (id_used_[id])
      throw std::invalid_argument(source + ": id " + std::to_string(id) +
                                  " is given to two vocabulary tokens");
    id_used_[id] = true;
    id_to_spelling_[id] = spelled;
    spelling_to_id_.emplace(spelled, id);
    if (from_byte_level(spelled, bytes)) id_to_bytes_[id] = bytes;
  }
  // An added token decodes to its literal content even when the vocabulary spells it otherwise.
  for (const auto& t : added) {
    if (!id_used_[t.id]) id_to_spelling_[t.id] = t.content;
    spelling_to_id_.emplace(t.content, t.id);
    id_used_[t.id] = true;
    id_to_bytes_[t.id] = t.content;
    if (t.content == "<|endoftext|>") eot_ = t.id;
  }
}

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

// A free cache from the pool, locked; or nullptr when all are in use (more
// concurrent callers than hardware threads), in which case the caller uses a
// private one rather than waiting.
Tokenizer::Cache* Tokenizer::acquire_cache(std::unique_lock<std::mutex>& lock) const {
  for (const auto& cache : caches_) {
    lock = std::unique_lock<std::mutex>(cache->mutex, std::try_to_lock);
    if (lock.owns_lock()) return cache.get();
  }
  return nullptr;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::unique_lock<std::mutex> lock;
  Cache local;
  Cache* cache = acquire_cache(lock);
  std::vector<int32_t> out;
  out.reserve(text.size() / 4 + 1);
  encode_into(text, out, cache ? *cache : local);
  return out;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          int num_threads) const {
  if (num_threads < 0)
    throw std::invalid_argument("encode_batch: num_threads must be >= 0, got " +
                                std::to_string(num_threads));
  if (num_threads == 0)
    num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads = static_cast<int>(std::min<size_t>(num_threads, std::max<size_t>(texts.size(), 1)));
  std::vector<std::vector<int32_t>> out(texts.size());
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&] {
    std::unique_lock<std::mutex> lock;
    Cache local;
    Cache* pooled = acquire_cache(lock);
    Cache& cache = pooled ? *pooled : local;
    try {
      // Texts are handed out one by one, so a few long documents cannot leave a thread idle.
      for (size_t i = next++; i < texts.size(); i = next++) {
        out[i].reserve(texts[i].size() / 4 + 1);
        encode_into(texts[i], out[i], cache);
      }
    } catch (...) {
      std::lock_guard<std::mutex> g(error_mutex);
      if (!error) error = std::current_exception();
      next = texts.size();
    }
  };
  std::vector<std::thread> threads;
  for (int t = 1; t < num_threads; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

void Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& out, Cache& cache) const {
  if (const size_t bad = find_invalid_utf8(text); bad != std::string_view::npos)
    throw std::invalid_argument("encode: text is not valid UTF-8 (ill-formed byte at offset " +
                                std::to_string(bad) + ")");
  size_t pos = 0;
  for (const AddedTokenMatch& m : added_.find_all(text)) {
    encode_piece(text.substr(pos, m.begin - pos), out, cache);
    out.push_back(m.id);
    pos = m.end;
  }
  encode_piece(text.substr(pos), out, cache);
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out,
                             Cache& cache) const {
  if (piece.empty()) return;
  std::string buffer;
  if (options_.nfc) {
    buffer = nfc(piece);
    piece = buffer;
  }
  if (options_.add_prefix_space && piece[0] != ' ') {
    buffer = " " + std::string(piece);
    piece = buffer;
  }
  auto encode_word = [&](std::string_view word) {
    std::string key(word);
    const auto it = cache.words.find(key);
    if (it != cache.words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
    const size_t start = out.size();
    model_.encode_word(word, out);
    if (cache.words.size() >= Cache::kMaxWords) cache.words.clear();
    cache.words.emplace(std::move(key), std::vector<int32_t>(out.begin() + start, out.end()));
  };
  if (options_.use_regex) {
    Pretokenizer::split(piece, encode_word);
  } else {
    encode_word(piece);
  }
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !id_used_[id])
    throw std::out_of_range("token id " + std::to_string(id) + " is not in the vocabulary (size " +
                            std::to_string(vocab_size()) + ")");
  return id_to_bytes_[id];
}

std::string Tokenizer::decode_bytes(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  return replace_invalid_utf8(decode_bytes(ids));
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const auto it = spelling_to_id_.find(std::string(token));
  if (it == spelling_to_id_.end()) return std::nullopt;
  return it->second;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  token_bytes(id);  // range check
  return id_to_spelling_[id];
}

}  // namespace needle::data
