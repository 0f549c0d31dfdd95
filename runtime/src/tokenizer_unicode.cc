#include "tokenizer_unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <iterator>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kiln::tok {
namespace {

bool IsContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// The length of the valid UTF-8 sequence at s[i], or 0 if there is none; in
// that case `*bad_len` is the length of the maximal invalid subpart (the
// prefix of a valid sequence that is cut short, or the single bad byte), as
// Unicode's "substitution of maximal subparts" and Rust's Utf8Chunks count it.
size_t ValidSequenceAt(std::string_view s, size_t i, size_t* bad_len) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t n = s.size();
  *bad_len = 1;
  if (c < 0x80) return 1;
  size_t width = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    width = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    width = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    width = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + 1 >= n || b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < width; ++k) {
    *bad_len = k;
    if (i + k >= n || !IsContinuation(b(i + k))) return 0;
  }
  return width;
}

std::array<char32_t, 256> MakeByteToChar() {
  std::array<char32_t, 256> table{};
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    table[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

const std::array<char32_t, 256>& ByteToCharTable() {
  static const std::array<char32_t, 256> table = MakeByteToChar();
  return table;
}

}  // namespace

bool IsValidUtf8(std::string_view s, size_t* bad) {
  for (size_t i = 0; i < s.size();) {
    size_t bad_len;
    size_t len = ValidSequenceAt(s, i, &bad_len);
    if (len == 0) {
      if (bad) *bad = i;
      return false;
    }
    i += len;
  }
  return true;
}

char32_t NextCodePoint(std::string_view s, size_t* i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(*i);
  size_t len = Utf8Length(c);
  char32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (b(*i + k) & 0x3F);
  *i += len;
  return cp;
}

char32_t PrevCodePoint(std::string_view s, size_t end, size_t* start) {
  size_t i = end - 1;
  while (i > 0 && IsContinuation(static_cast<unsigned char>(s[i]))) --i;
  *start = i;
  return NextCodePoint(s, &i);
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    size_t bad_len;
    size_t len = ValidSequenceAt(bytes, i, &bad_len);
    if (len == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      i += bad_len;
    } else {
      out.append(bytes.substr(i, len));
      i += len;
    }
  }
  return out;
}

bool IsWhiteSpace(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

namespace {

struct CodePointRange {
  char32_t first, last;
};
// Code points that Hugging Face's normalizers (Unicode 9.0 tables) treat as
// plain starters although utf8proc knows their class or decomposition.
constexpr CodePointRange kNormalizationOpaque[] = {
#include "tokenizer_normalization_update.inc"
};

bool IsNormalizationOpaque(char32_t c) {
  if (c < kNormalizationOpaque[0].first) return false;
  const CodePointRange* end = std::end(kNormalizationOpaque);
  const CodePointRange* it = std::upper_bound(
      std::begin(kNormalizationOpaque), end, c,
      [](char32_t v, const CodePointRange& r) { return v < r.first; });
  return it != std::begin(kNormalizationOpaque) && c <= (it - 1)->last;
}

absl::StatusOr<std::string> NormalizeWithUtf8proc(std::string_view s, NormalForm form) {
  if (s.empty()) return std::string();
  int options = UTF8PROC_STABLE;
  switch (form) {
    case NormalForm::kNfc: options |= UTF8PROC_COMPOSE; break;
    case NormalForm::kNfd: options |= UTF8PROC_DECOMPOSE; break;
    case NormalForm::kNfkc: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case NormalForm::kNfkd: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                   static_cast<utf8proc_ssize_t>(s.size()), &out,
                   static_cast<utf8proc_option_t>(options));
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("utf8proc: ", utf8proc_errmsg(n)));
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

}  // namespace

absl::StatusOr<std::string> NormalizeUnicode(std::string_view s, NormalForm form) {
  bool ascii = true;
  for (char c : s) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii) return std::string(s);  // every normal form leaves ASCII as it is
  // An opaque code point is a starter that nothing composes with or reorders
  // across: the text normalizes piece by piece around it.
  std::string out;
  size_t segment = 0;
  for (size_t i = 0; i < s.size();) {
    size_t at = i;
    if (!IsNormalizationOpaque(NextCodePoint(s, &i))) continue;
    auto n = NormalizeWithUtf8proc(s.substr(segment, at - segment), form);
    if (!n.ok()) return n.status();
    out += *n;
    out.append(s.substr(at, i - at));
    segment = i;
  }
  auto n = NormalizeWithUtf8proc(s.substr(segment), form);
  if (!n.ok()) return n.status();
  out += *n;
  return out;
}

char32_t ByteToChar(unsigned char b) { return ByteToCharTable()[b]; }

int CharToByte(char32_t c) {
  static const std::array<int, 0x144> table = [] {
    std::array<int, 0x144> t{};
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[ByteToCharTable()[b]] = b;
    return t;
  }();
  return c < table.size() ? table[c] : -1;
}

const std::string& ByteLevelUtf8(unsigned char b) {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    for (int i = 0; i < 256; ++i) AppendUtf8(ByteToCharTable()[i], &t[i]);
    return t;
  }();
  return table[b];
}

}  // namespace kiln::tok
