// UTF-8 and Unicode helpers of the tokenizer (internal). Normalization forms
// come from utf8proc; everything else here is small and exact.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kiln::tok {

// The length of the UTF-8 sequence that starts with lead byte `c`, for text
// already known to be valid.
inline size_t Utf8Length(unsigned char c) {
  return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

// Whether `s` is valid UTF-8; if not, `*bad` is the offset of the first bad byte.
bool IsValidUtf8(std::string_view s, size_t* bad = nullptr);

// The code point at `s[*i]` of valid UTF-8; advances `*i` past it.
char32_t NextCodePoint(std::string_view s, size_t* i);
// The code point that ends at `s[end]` (exclusive) of valid UTF-8; `*start`
// receives its offset.
char32_t PrevCodePoint(std::string_view s, size_t end, size_t* start);
void AppendUtf8(char32_t c, std::string* out);

// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes
// one U+FFFD.
std::string Utf8Lossy(std::string_view bytes);

// The Unicode White_Space property (Rust's char::is_whitespace).
bool IsWhiteSpace(char32_t c);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
// Unicode normalization of valid UTF-8.
absl::StatusOr<std::string> NormalizeUnicode(std::string_view s, NormalForm form);

// The GPT-2 byte-to-character alphabet of byte-level BPE: printable bytes map
// to themselves, the others to U+0100 and up.
char32_t ByteToChar(unsigned char b);
// The byte of a byte-level character, or -1 if `c` is not one.
int CharToByte(char32_t c);
// The UTF-8 of ByteToChar(b), for the 256 bytes.
const std::string& ByteLevelUtf8(unsigned char b);

}  // namespace kiln::tok
