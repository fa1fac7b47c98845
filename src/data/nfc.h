// Unicode Normalization Form C, for tokenizer.json files with an NFC normalizer
// (Pythia's has one). Tables come from src/data/nfc_data.inc.
#pragma once

#include <string>
#include <string_view>

namespace needle::data {

// NFC of valid UTF-8 text. Text without characters at or above U+0300 is
// already NFC and is returned unchanged without decoding.
std::string nfc(std::string_view text);

}  // namespace needle::data
