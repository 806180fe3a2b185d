// Pre-tokenization for byte-level BPE: UTF-8 decoding, a Unicode character
// classification, and the regex splits of GPT-2 and Llama 3 / Qwen 2, hand-written as
// scanners over code points (no regex library). Pure functions, thread-safe.
//
// Classification (an approximation of the Unicode general categories the regexes use):
// ASCII is exact (letters, digits, the six ASCII White_Space characters, the rest
// "other"). Non-ASCII code points are letters (\p{L}) unless a built-in table places
// them elsewhere: all Unicode White_Space characters are spaces; the decimal digits of
// the major scripts, superscripts/subscripts, fractions, Roman numerals and circled
// numbers are numbers (\p{N}); Latin-1 punctuation and symbols, combining diacritics
// (U+0300-036F), general punctuation, currency, arrows, mathematical operators, box
// drawing, shapes, dingbats, CJK and fullwidth punctuation, private use areas and the
// emoji planes are "other". Not covered (treated as letters): combining marks of
// Indic and other scripts (\p{M}, which the real regexes put in the "other" runs), and
// rarer symbol blocks. For ASCII and for Latin, Greek, Cyrillic and CJK text with the
// common punctuation the splits agree with the real regexes.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace dgptq {

enum class CharClass : unsigned char { kLetter, kNumber, kSpace, kOther };

CharClass ClassifyCodePoint(char32_t cp);

// Decodes the code point starting at text[pos] (pos < text.size()) into *cp and
// returns its byte length (1-4), or 0 when the bytes there are not valid UTF-8
// (overlong forms, surrogates and values above U+10FFFF are invalid).
size_t DecodeUtf8(std::string_view text, size_t pos, char32_t* cp);
// True when all of `text` is valid UTF-8.
bool IsValidUtf8(std::string_view text);

// Splits `text` (valid UTF-8) with the Llama 3 pattern
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// with `max_digits` as the upper bound of the \p{N} run (3 for Llama 3; 1 gives Qwen 2's
// `\p{N}`). The pieces are views into `text` and concatenate to it.
std::vector<std::string_view> SplitLlama3(std::string_view text, int max_digits);

// Splits `text` (valid UTF-8) with the GPT-2 pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
std::vector<std::string_view> SplitGpt2(std::string_view text);

}  // namespace dgptq
