#include "common/bpe_pretokenizer.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

namespace dgptq {
namespace {

struct Range {
  char32_t first;
  char32_t last;
  CharClass cls;
};

constexpr CharClass L = CharClass::kLetter;
constexpr CharClass N = CharClass::kNumber;
constexpr CharClass S = CharClass::kSpace;
constexpr CharClass O = CharClass::kOther;

// Non-ASCII code points that are not letters, sorted and disjoint; anything not
// listed is a letter. See the header for what this approximates.
constexpr Range kRanges[] = {
    {0x0080, 0x0084, O},   {0x0085, 0x0085, S},   {0x0086, 0x009F, O},    {0x00A0, 0x00A0, S},
    {0x00A1, 0x00A9, O},   {0x00AB, 0x00B1, O},   {0x00B2, 0x00B3, N},    {0x00B4, 0x00B4, O},
    {0x00B6, 0x00B8, O},   {0x00B9, 0x00B9, N},   {0x00BB, 0x00BB, O},    {0x00BC, 0x00BE, N},
    {0x00BF, 0x00BF, O},   {0x00D7, 0x00D7, O},   {0x00F7, 0x00F7, O},    {0x0300, 0x036F, O},
    {0x037E, 0x037E, O},   {0x0387, 0x0387, O},   {0x0483, 0x0489, O},    {0x055A, 0x055F, O},
    {0x0589, 0x058A, O},   {0x0591, 0x05C7, O},   {0x0600, 0x061F, O},    {0x064B, 0x065F, O},
    {0x0660, 0x0669, N},   {0x066A, 0x066D, O},   {0x06D4, 0x06D4, O},    {0x06F0, 0x06F9, N},
    {0x0964, 0x0965, O},   {0x0966, 0x096F, N},   {0x09E6, 0x09EF, N},    {0x0A66, 0x0A6F, N},
    {0x0AE6, 0x0AEF, N},   {0x0B66, 0x0B6F, N},   {0x0BE6, 0x0BF2, N},    {0x0C66, 0x0C6F, N},
    {0x0CE6, 0x0CEF, N},   {0x0D66, 0x0D78, N},   {0x0DE6, 0x0DEF, N},    {0x0E50, 0x0E59, N},
    {0x0ED0, 0x0ED9, N},   {0x0F20, 0x0F33, N},   {0x1040, 0x1049, N},    {0x1090, 0x1099, N},
    {0x1369, 0x137C, N},   {0x1680, 0x1680, S},   {0x16EE, 0x16F0, N},    {0x17E0, 0x17E9, N},
    {0x1810, 0x1819, N},   {0x1946, 0x194F, N},   {0x19D0, 0x19DA, N},    {0x1AB0, 0x1AFF, O},
    {0x1B50, 0x1B59, N},   {0x1BB0, 0x1BB9, N},   {0x1C40, 0x1C49, N},    {0x1C50, 0x1C59, N},
    {0x1DC0, 0x1DFF, O},   {0x2000, 0x200A, S},   {0x200B, 0x2027, O},    {0x2028, 0x2029, S},
    {0x202A, 0x202E, O},   {0x202F, 0x202F, S},   {0x2030, 0x205E, O},    {0x205F, 0x205F, S},
    {0x2060, 0x206F, O},   {0x2070, 0x2070, N},   {0x2074, 0x2079, N},    {0x207A, 0x207E, O},
    {0x2080, 0x2089, N},   {0x208A, 0x208E, O},   {0x20A0, 0x20FF, O},    {0x2100, 0x2101, O},
    {0x2103, 0x2106, O},   {0x2108, 0x2109, O},   {0x2116, 0x2118, O},    {0x211E, 0x2123, O},
    {0x2125, 0x2125, O},   {0x2127, 0x2127, O},   {0x2129, 0x2129, O},    {0x212E, 0x212E, O},
    {0x2150, 0x2182, N},   {0x2185, 0x2189, N},   {0x218A, 0x218B, O},    {0x2190, 0x245F, O},
    {0x2460, 0x249B, N},   {0x249C, 0x24E9, O},   {0x24EA, 0x24FF, N},    {0x2500, 0x2775, O},
    {0x2776, 0x2793, N},   {0x2794, 0x2BFF, O},   {0x2E00, 0x2E7F, O},    {0x2FF0, 0x2FFF, O},
    {0x3000, 0x3000, S},   {0x3001, 0x3004, O},   {0x3007, 0x3007, N},    {0x3008, 0x3020, O},
    {0x3021, 0x3029, N},   {0x302A, 0x3030, O},   {0x3036, 0x3037, O},    {0x3038, 0x303A, N},
    {0x303D, 0x303F, O},   {0x3099, 0x309C, O},   {0x30A0, 0x30A0, O},    {0x30FB, 0x30FB, O},
    {0x3220, 0x3229, N},   {0x3280, 0x3289, N},   {0xA620, 0xA629, N},    {0xA8D0, 0xA8D9, N},
    {0xA900, 0xA909, N},   {0xA9D0, 0xA9D9, N},   {0xAA50, 0xAA59, N},    {0xABF0, 0xABF9, N},
    {0xE000, 0xF8FF, O},   {0xFD3E, 0xFD3F, O},   {0xFE00, 0xFE19, O},    {0xFE20, 0xFE6F, O},
    {0xFEFF, 0xFEFF, O},   {0xFF01, 0xFF0F, O},   {0xFF10, 0xFF19, N},    {0xFF1A, 0xFF20, O},
    {0xFF3B, 0xFF40, O},   {0xFF5B, 0xFF65, O},   {0xFFE0, 0xFFEE, O},    {0xFFF9, 0xFFFD, O},
    {0x104A0, 0x104A9, N}, {0x1D7CE, 0x1D7FF, N}, {0x1F000, 0x1F0FF, O},  {0x1F100, 0x1F10C, N},
    {0x1F10D, 0x1FAFF, O}, {0xE0000, 0xE01EF, O}, {0xF0000, 0x10FFFF, O},
};

constexpr bool SortedAndDisjoint() {
  for (size_t i = 0; i < std::size(kRanges); ++i) {
    if (kRanges[i].first > kRanges[i].last) return false;
    if (i > 0 && kRanges[i - 1].last >= kRanges[i].first) return false;
  }
  return true;
}
static_assert(SortedAndDisjoint(), "kRanges must be sorted and disjoint for binary search");

bool IsCrLf(char32_t c) { return c == '\r' || c == '\n'; }

// The text as code points with their classes; offsets[i] is the byte offset of code
// point i, offsets[size()] == text.size().
struct CodePoints {
  std::vector<char32_t> cp;
  std::vector<CharClass> cls;
  std::vector<size_t> offsets;
  size_t size() const { return cp.size(); }
};

CodePoints Decode(std::string_view text) {
  CodePoints c;
  size_t pos = 0;
  while (pos < text.size()) {
    char32_t cp = 0;
    size_t len = DecodeUtf8(text, pos, &cp);
    if (len == 0) {  // callers pass valid UTF-8; keep a stray byte as "other"
      cp = 0xFFFD;
      len = 1;
    }
    c.cp.push_back(cp);
    c.cls.push_back(ClassifyCodePoint(cp));
    c.offsets.push_back(pos);
    pos += len;
  }
  c.offsets.push_back(text.size());
  return c;
}

char32_t Lower(char32_t c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

// Length (in code points) of a contraction 's 't 're 've 'm 'll 'd at i, or 0.
size_t Contraction(const CodePoints& c, size_t i, bool ignore_case) {
  if (c.cp[i] != '\'' || i + 1 >= c.size()) return 0;
  auto at = [&](size_t k) -> char32_t {
    if (k >= c.size()) return 0;
    return ignore_case ? Lower(c.cp[k]) : c.cp[k];
  };
  const char32_t a = at(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  const char32_t b = at(i + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// The whitespace alternatives shared by both patterns, at i where cls[i] is a space:
// `\s*[\r\n]+` (Llama 3 only), then `\s+(?!\S)`, then `\s+`. Returns the match end.
size_t MatchSpaces(const CodePoints& c, size_t i, bool newline_rule) {
  size_t end = i;
  while (end < c.size() && c.cls[end] == S) ++end;
  if (newline_rule) {
    // Greedy \s* backs off to the last CR/LF of the run; [\r\n]+ ends right after it.
    for (size_t k = end; k > i; --k) {
      if (IsCrLf(c.cp[k - 1])) return k;
    }
  }
  if (end == c.size()) return end;  // (?!\S) holds at the end of the text
  if (end - 1 > i) return end - 1;  // leave the last space to prefix the next word
  return end;
}

// End (code point index) of the Llama 3 match starting at i.
size_t MatchLlama3(const CodePoints& c, size_t i, size_t max_digits) {
  const size_t n = c.size();
  if (const size_t k = Contraction(c, i, /*ignore_case=*/true)) return i + k;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  size_t j = i;
  if (c.cls[j] != L && c.cls[j] != N && !IsCrLf(c.cp[j]) && j + 1 < n && c.cls[j + 1] == L) ++j;
  if (c.cls[j] == L) {
    while (j < n && c.cls[j] == L) ++j;
    return j;
  }
  // \p{N}{1,max_digits}
  if (c.cls[i] == N) {
    j = i;
    while (j < n && c.cls[j] == N && j - i < max_digits) ++j;
    return j;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  j = i;
  if (c.cp[j] == ' ' && j + 1 < n && c.cls[j + 1] == O) ++j;
  if (c.cls[j] == O) {
    while (j < n && c.cls[j] == O) ++j;
    while (j < n && IsCrLf(c.cp[j])) ++j;
    return j;
  }
  return MatchSpaces(c, i, /*newline_rule=*/true);
}

// End (code point index) of the GPT-2 match starting at i.
size_t MatchGpt2(const CodePoints& c, size_t i) {
  const size_t n = c.size();
  if (const size_t k = Contraction(c, i, /*ignore_case=*/false)) return i + k;
  //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+  (the optional space binds to any run)
  const size_t j = (c.cp[i] == ' ' && i + 1 < n && c.cls[i + 1] != S) ? i + 1 : i;
  if (c.cls[j] != S) {
    const CharClass run = c.cls[j];
    size_t k = j;
    while (k < n && c.cls[k] == run) ++k;
    return k;
  }
  return MatchSpaces(c, i, /*newline_rule=*/false);
}

template <typename Match>
std::vector<std::string_view> Split(std::string_view text, Match match) {
  const CodePoints c = Decode(text);
  std::vector<std::string_view> pieces;
  size_t i = 0;
  while (i < c.size()) {
    const size_t end = match(c, i);
    pieces.push_back(text.substr(c.offsets[i], c.offsets[end] - c.offsets[i]));
    i = end;
  }
  return pieces;
}

}  // namespace

CharClass ClassifyCodePoint(char32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return L;
    if (cp >= '0' && cp <= '9') return N;
    if (cp == ' ' || (cp >= '\t' && cp <= '\r')) return S;
    return O;
  }
  const auto it = std::upper_bound(std::begin(kRanges), std::end(kRanges), cp,
                                   [](char32_t v, const Range& r) { return v < r.first; });
  if (it == std::begin(kRanges)) return L;
  const Range& r = *std::prev(it);
  return cp <= r.last ? r.cls : L;
}

size_t DecodeUtf8(std::string_view text, size_t pos, char32_t* cp) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[pos + k]); };
  const uint8_t b0 = byte(0);
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  size_t len = 0;
  char32_t v = 0;
  char32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, v = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, v = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, v = b0 & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (text.size() - pos < len) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((byte(k) & 0xC0) != 0x80) return 0;
    v = (v << 6) | (byte(k) & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return len;
}

bool IsValidUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    char32_t cp = 0;
    const size_t len = DecodeUtf8(text, pos, &cp);
    if (len == 0) return false;
    pos += len;
  }
  return true;
}

std::vector<std::string_view> SplitLlama3(std::string_view text, int max_digits) {
  const size_t digits = max_digits < 1 ? 1 : static_cast<size_t>(max_digits);
  return Split(text, [digits](const CodePoints& c, size_t i) { return MatchLlama3(c, i, digits); });
}

std::vector<std::string_view> SplitGpt2(std::string_view text) {
  return Split(text, [](const CodePoints& c, size_t i) { return MatchGpt2(c, i); });
}

}  // namespace dgptq
