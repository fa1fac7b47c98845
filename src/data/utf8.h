// UTF-8 helpers for the tokenizer and the JSON reader, and GPT-2's byte <-> unicode
// table (the printable stand-ins that byte-level BPE vocabularies are written in).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace needle::data {

// Length of the UTF-8 sequence starting at s[pos]. When it is well formed, sets
// valid and codepoint; otherwise clears valid and returns the length of the
// maximal ill-formed subpart (>= 1), the unit that Unicode (and Python's
// errors="replace") turns into one U+FFFD.
size_t utf8_sequence(std::string_view s, size_t pos, bool& valid, uint32_t& codepoint);

// Offset of the first ill-formed byte, or std::string_view::npos if s is valid UTF-8.
size_t find_invalid_utf8(std::string_view s);

// s with every maximal ill-formed subpart replaced by U+FFFD.
std::string replace_invalid_utf8(std::string_view s);

void append_utf8(std::string& out, uint32_t codepoint);

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the rest
// to U+0100 onwards, so every byte string has a whitespace-free printable spelling.
const std::array<uint32_t, 256>& byte_to_codepoint();

// Inverse of byte_to_codepoint(); -1 for code points outside the table.
int codepoint_to_byte(uint32_t codepoint);

// Spelling of raw bytes in the byte-level alphabet, and back. from_byte_level
// returns false (and leaves out partially filled) if a character is not in the table.
std::string to_byte_level(std::string_view bytes);
bool from_byte_level(std::string_view spelled, std::string& out);

}  // namespace needle::data
