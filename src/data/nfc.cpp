// NFC = canonical decomposition, canonical ordering of combining marks, then
// canonical composition (UAX #15), with Hangul syllables handled arithmetically.
#include "data/nfc.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "data/utf8.h"

namespace needle::data {
namespace {

#include "data/nfc_data.inc"

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

struct Tables {
  std::unordered_map<uint32_t, std::vector<uint32_t>> full_decomposition;
  std::unordered_map<uint64_t, uint32_t> composition;

  Tables() {
    std::unordered_map<uint32_t, std::pair<uint32_t, uint32_t>> raw;
    constexpr size_t n = sizeof(kDecomposition) / sizeof(kDecomposition[0]);
    for (size_t i = 0; i < n; i += 3) {
      const uint32_t cp = kDecomposition[i] & 0x7FFFFFFF;
      raw[cp] = {kDecomposition[i + 1], kDecomposition[i + 2]};
      if (kDecomposition[i] >> 31)
        composition[key(kDecomposition[i + 1], kDecomposition[i + 2])] = cp;
    }
    // Mappings can nest (U+1E08 -> U+00C7 U+0301 -> C U+0327 U+0301); flatten once here.
    for (const auto& [cp, parts] : raw) {
      std::vector<uint32_t> out;
      expand(raw, parts.first, out);
      if (parts.second) expand(raw, parts.second, out);
      full_decomposition.emplace(cp, std::move(out));
    }
  }

  static uint64_t key(uint32_t a, uint32_t b) { return (uint64_t{a} << 32) | b; }

  static void expand(const std::unordered_map<uint32_t, std::pair<uint32_t, uint32_t>>& raw,
                     uint32_t cp, std::vector<uint32_t>& out) {
    const auto it = raw.find(cp);
    if (it == raw.end()) {
      out.push_back(cp);
      return;
    }
    expand(raw, it->second.first, out);
    if (it->second.second) expand(raw, it->second.second, out);
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

uint8_t combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  constexpr size_t n = sizeof(kCombiningClass) / sizeof(kCombiningClass[0]) / 3;
  size_t lo = 0, hi = n;
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (kCombiningClass[mid * 3 + 1] < cp)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < n && kCombiningClass[lo * 3] <= cp ? static_cast<uint8_t>(kCombiningClass[lo * 3 + 2])
                                                 : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto& full = tables().full_decomposition;
  const auto it = full.find(cp);
  if (it == full.end())
    out.push_back(cp);
  else
    out.insert(out.end(), it->second.begin(), it->second.end());
}

// 0 when the pair does not compose.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto& comp = tables().composition;
  const auto it = comp.find(Tables::key(a, b));
  return it == comp.end() ? 0 : it->second;
}

}  // namespace

std::string nfc(std::string_view text) {
  // U+0300 is the first code point that is not NFC-stable in every context; its
  // UTF-8 lead byte is 0xCC, so smaller bytes throughout mean nothing to do.
  if (std::none_of(text.begin(), text.end(),
                   [](char c) { return static_cast<unsigned char>(c) >= 0xCC; }))
    return std::string(text);

  std::vector<uint32_t> cps;
  cps.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    bool valid;
    uint32_t cp;
    pos += utf8_sequence(text, pos, valid, cp);
    decompose(valid ? cp : 0xFFFD, cps);
  }
  // Canonical ordering: a stable sort of each run of non-starters by class.
  for (size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j, [](uint32_t a, uint32_t b) {
      return combining_class(a) < combining_class(b);
    });
    i = j;
  }
  // Composition: a mark joins the last starter unless a mark of equal or higher
  // class (or a starter) stands between them.
  size_t out_len = 0;
  long starter = -1;
  int last_class = -1;
  for (size_t i = 0; i < cps.size(); ++i) {
    const uint32_t cp = cps[i];
    const int cls = combining_class(cp);
    if (starter >= 0 && (last_class < cls || last_class == 0)) {
      if (const uint32_t c = compose(cps[starter], cp)) {
        cps[starter] = c;
        continue;
      }
    }
    if (cls == 0) {
      starter = static_cast<long>(out_len);
      last_class = 0;
    } else {
      last_class = cls;
    }
    cps[out_len++] = cp;
  }
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < out_len; ++i) append_utf8(out, cps[i]);
  return out;
}

}  // namespace needle::data
