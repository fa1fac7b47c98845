// UTF-8 validation/repair and GPT-2's byte-level alphabet.
#include "data/utf8.h"

namespace needle::data {

size_t utf8_sequence(std::string_view s, size_t pos, bool& valid, uint32_t& codepoint) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + pos;
  const size_t left = s.size() - pos;
  const unsigned char b0 = p[0];
  valid = false;
  if (b0 < 0x80) {
    valid = true;
    codepoint = b0;
    return 1;
  }
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // beyond U+10FFFF
  } else {
    return 1;
  }
  uint32_t cp = b0 & (0x3F >> need);
  for (size_t i = 1; i <= need; ++i) {
    if (i >= left) return i;
    const unsigned char b = p[i];
    const unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) return i;
    cp = (cp << 6) | (b & 0x3F);
  }
  valid = true;
  codepoint = cp;
  return need + 1;
}

size_t find_invalid_utf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    // ASCII dominates real text; skip it eight bytes at a time.
    while (pos + 8 <= s.size()) {
      uint64_t word;
      __builtin_memcpy(&word, s.data() + pos, 8);
      if (word & 0x8080808080808080ULL) break;
      pos += 8;
    }
    if (pos >= s.size()) break;
    bool valid;
    uint32_t cp;
    const size_t n = utf8_sequence(s, pos, valid, cp);
    if (!valid) return pos;
    pos += n;
  }
  return std::string_view::npos;
}

std::string replace_invalid_utf8(std::string_view s) {
  if (find_invalid_utf8(s) == std::string_view::npos) return std::string(s);
  std::string out;
  out.reserve(s.size() + 16);
  size_t pos = 0;
  while (pos < s.size()) {
    bool valid;
    uint32_t cp;
    const size_t n = utf8_sequence(s, pos, valid, cp);
    if (valid) {
      out.append(s.data() + pos, n);
    } else {
      out += "\xEF\xBF\xBD";
    }
    pos += n;
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

const std::array<uint32_t, 256>& byte_to_codepoint() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t[b] = printable ? b : next++;
    }
    return t;
  }();
  return table;
}

int codepoint_to_byte(uint32_t codepoint) {
  static const std::array<int16_t, 324> inverse = [] {
    std::array<int16_t, 324> inv{};
    inv.fill(-1);
    const auto& fwd = byte_to_codepoint();
    for (int b = 0; b < 256; ++b) inv[fwd[b]] = static_cast<int16_t>(b);
    return inv;
  }();
  return codepoint < inverse.size() ? inverse[codepoint] : -1;
}

std::string to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) append_utf8(out, byte_to_codepoint()[b]);
  return out;
}

bool from_byte_level(std::string_view spelled, std::string& out) {
  out.clear();
  size_t pos = 0;
  while (pos < spelled.size()) {
    bool valid;
    uint32_t cp;
    pos += utf8_sequence(spelled, pos, valid, cp);
    const int b = valid ? codepoint_to_byte(cp) : -1;
    if (b < 0) return false;
    out += static_cast<char>(b);
  }
  return true;
}

}  // namespace needle::data
