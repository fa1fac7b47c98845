// Loading tokenizers from GPT-2's files (encoder.json + vocab.bpe) and from Hugging
// Face tokenizer.json. Anything the encoder would not reproduce faithfully (another
// model type, normalizer, pre-tokenizer or post-processor) is refused by name
// rather than silently encoded differently.
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "data/json.h"
#include "data/tokenizer.h"

namespace needle::data {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error("error while reading " + path);
  return ss.str();
}

json::Value parse_file(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
}

int32_t token_id(const json::Value& v, const std::string& where) {
  if (!v.is_int() || v.as_int() < 0 || v.as_int() > INT32_MAX)
    throw std::invalid_argument(where + ": token ids must be non-negative integers below 2^31");
  return static_cast<int32_t>(v.as_int());
}

std::vector<std::pair<std::string, int32_t>> read_vocab(const json::Value& obj,
                                                        const std::string& where) {
  if (!obj.is_object())
    throw std::invalid_argument(where + ": expected an object of token -> id, got " +
                                type_name(obj.type()));
  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(obj.as_object().size());
  for (const auto& [token, id] : obj.as_object())
    vocab.emplace_back(token, token_id(id, where + " \"" + token + "\""));
  return vocab;
}

// "left right" -> (left, right); byte-level tokens never contain a plain space.
std::pair<std::string, std::string> split_merge(const std::string& line, const std::string& where) {
  const size_t space = line.find(' ');
  if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
      line.find(' ', space + 1) != std::string::npos)
    throw std::invalid_argument(where + ": expected a merge \"left right\", got \"" + line + "\"");
  return {line.substr(0, space), line.substr(space + 1)};
}

bool get_bool(const json::Value& obj, std::string_view key, bool fallback,
              const std::string& where) {
  const json::Value* v = obj.find(key);
  if (!v || v->is_null()) return fallback;
  if (!v->is_bool())
    throw std::invalid_argument(where + ": \"" + std::string(key) + "\" must be true or false");
  return v->as_bool();
}

std::string type_of(const json::Value& v, const std::string& where) {
  if (!v.is_object()) throw std::invalid_argument(where + " must be an object or null");
  const json::Value* t = v.find("type");
  if (!t || !t->is_string()) throw std::invalid_argument(where + " has no \"type\" string");
  return t->as_string();
}

// Only NFC (or nothing) is supported: other normalizers change which ids come out.
bool read_normalizer(const json::Value* n, const std::string& where) {
  if (!n || n->is_null()) return false;
  const std::string type = type_of(*n, where);
  if (type == "NFC") return true;
  if (type == "Sequence") {
    bool nfc = false;
    for (const auto& inner : n->at("normalizers").as_array()) nfc |= read_normalizer(&inner, where);
    return nfc;
  }
  throw std::invalid_argument(where + ": normalizer \"" + type +
                              "\" is not supported (only NFC or none)");
}

void read_pre_tokenizer(const json::Value* p, TokenizerOptions& options, const std::string& where) {
  if (!p || p->is_null())
    throw std::invalid_argument(
        where + ": pre_tokenizer is null; only the ByteLevel pre-tokenizer is supported");
  const std::string type = type_of(*p, where);
  if (type == "Sequence") {
    const auto& inner = p->at("pretokenizers").as_array();
    if (inner.size() != 1)
      throw std::invalid_argument(
          where + ": a pre_tokenizer Sequence is supported only with one ByteLevel inside");
    return read_pre_tokenizer(&inner[0], options, where);
  }
  if (type != "ByteLevel")
    throw std::invalid_argument(where + ": pre_tokenizer \"" + type +
                                "\" is not supported (only ByteLevel)");
  options.add_prefix_space = get_bool(*p, "add_prefix_space", false, where + " pre_tokenizer");
  options.use_regex = get_bool(*p, "use_regex", true, where + " pre_tokenizer");
}

void check_passive(const json::Value* v, const char* field, const std::string& where) {
  if (!v || v->is_null()) return;
  const std::string type = type_of(*v, where + " " + field);
  if (type != "ByteLevel")
    throw std::invalid_argument(where + ": " + field + " \"" + type +
                                "\" is not supported (only ByteLevel or none)");
}

}  // namespace

Tokenizer Tokenizer::from_gpt2(const std::string& encoder_json_path,
                               const std::string& vocab_bpe_path) {
  const json::Value encoder = parse_file(encoder_json_path);
  const auto vocab = read_vocab(encoder, encoder_json_path);

  std::istringstream lines(read_file(vocab_bpe_path));
  std::vector<std::pair<std::string, std::string>> merges;
  std::string line;
  for (size_t line_no = 1; std::getline(lines, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    merges.push_back(split_merge(line, vocab_bpe_path + " line " + std::to_string(line_no)));
  }
  if (merges.empty()) throw std::invalid_argument(vocab_bpe_path + ": no merges found");

  std::vector<AddedToken> added;
  for (const auto& [token, id] : vocab)
    if (token == "<|endoftext|>") added.push_back({token, id, true, false, false});
  return Tokenizer(vocab, merges, std::move(added), TokenizerOptions{}, encoder_json_path);
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  const json::Value root = parse_file(path);
  if (!root.is_object())
    throw std::invalid_argument(path + ": expected a JSON object at the top level");
  try {
    const json::Value* model = root.find("model");
    if (!model || !model->is_object()) throw std::invalid_argument("no \"model\" object");
    const std::string model_type = type_of(*model, "model");
    if (model_type != "BPE")
      throw std::invalid_argument("model type \"" + model_type + "\" is not supported (only BPE)");
    if (const json::Value* d = model->find("dropout"); d && !d->is_null() && d->as_double() != 0.0)
      throw std::invalid_argument("BPE dropout is not supported");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (const json::Value* v = model->find(key); v && !v->is_null() && !v->as_string().empty())
        throw std::invalid_argument(std::string("BPE option ") + key + " is not supported");
    if (get_bool(*model, "byte_fallback", false, "model"))
      throw std::invalid_argument("BPE byte_fallback is not supported (byte-level BPE needs none)");
    const bool ignore_merges = get_bool(*model, "ignore_merges", false, "model");

    const auto vocab = read_vocab(model->at("vocab"), "model.vocab");
    std::vector<std::pair<std::string, std::string>> merges;
    const auto& merge_list = model->at("merges").as_array();
    merges.reserve(merge_list.size());
    for (size_t i = 0; i < merge_list.size(); ++i) {
      const json::Value& m = merge_list[i];
      const std::string where = "model.merges[" + std::to_string(i) + "]";
      if (m.is_string()) {
        merges.push_back(split_merge(m.as_string(), where));
      } else if (m.is_array() && m.as_array().size() == 2 && m.as_array()[0].is_string() &&
                 m.as_array()[1].is_string()) {
        merges.emplace_back(m.as_array()[0].as_string(), m.as_array()[1].as_string());
      } else {
        throw std::invalid_argument(where + ": expected \"left right\" or [left, right]");
      }
    }

    std::vector<AddedToken> added;
    if (const json::Value* list = root.find("added_tokens"); list && !list->is_null()) {
      for (const auto& t : list->as_array()) {
        if (get_bool(t, "single_word", false, "added_tokens"))
          throw std::invalid_argument("added token \"" + t.at("content").as_string() +
                                      "\" uses single_word, which is not supported");
        added.push_back({t.at("content").as_string(), token_id(t.at("id"), "added_tokens"),
                         get_bool(t, "special", false, "added_tokens"),
                         get_bool(t, "lstrip", false, "added_tokens"),
                         get_bool(t, "rstrip", false, "added_tokens")});
      }
    }

    TokenizerOptions options;
    options.nfc = read_normalizer(root.find("normalizer"), "normalizer");
    read_pre_tokenizer(root.find("pre_tokenizer"), options, "pre_tokenizer");
    check_passive(root.find("post_processor"), "post_processor", "tokenizer");
    check_passive(root.find("decoder"), "decoder", "tokenizer");
    return Tokenizer(vocab, merges, std::move(added), options, path, ignore_merges);
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    // Errors raised by the constructor already name the file.
    if (what.rfind(path, 0) == 0) throw;
    throw std::invalid_argument(path + ": " + what);
  }
}

}  // namespace needle::data
