#include "tokenizer_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tokenizer_unicode.h"

namespace kiln::tok {
namespace {

struct AssignedRange {
  const char* category;
  char32_t first, last;
};
// The code points that Hugging Face's Oniguruma (Unicode 16.0) knows and
// PCRE2 10.42 (Unicode 14.0) does not.
constexpr AssignedRange kUnicodeUpdate[] = {
#include "tokenizer_unicode_update.inc"
};

bool IsGeneralCategory(std::string_view name) {
  static constexpr std::string_view kNames[] = {
      "L",  "LC", "Lu", "Ll", "Lt", "Lm", "Lo", "M",  "Mn", "Mc", "Me", "N",  "Nd", "Nl", "No",
      "P",  "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "S",  "Sm", "Sc", "Sk", "So", "Z",  "Zs",
      "Zl", "Zp"};
  for (std::string_view n : kNames)
    if (n == name) return true;
  return false;
}

// `\p{name}` as members of a character class: PCRE2's property plus the
// code points of that category that PCRE2's tables lack.
std::string CategoryMembers(std::string_view name) {
  std::string out = absl::StrCat("\\p{", absl::string_view(name.data(), name.size()), "}");
  for (const AssignedRange& r : kUnicodeUpdate) {
    std::string_view c = r.category;
    bool in = c == name || (name.size() == 1 && c[0] == name[0]) ||
              (name == "LC" && (c == "Lu" || c == "Ll" || c == "Lt"));
    if (!in) continue;
    absl::StrAppend(&out, absl::StrFormat("\\x{%X}", static_cast<uint32_t>(r.first)));
    if (r.last != r.first)
      absl::StrAppend(&out, absl::StrFormat("-\\x{%X}", static_cast<uint32_t>(r.last)));
  }
  return out;
}

// Oniguruma's \s, \w and \h as members of a character class.
std::string ClassMembers(char escape) {
  switch (escape) {
    case 's':
      return "\\t-\\r\\x{85}\\p{Z}";
    case 'w':
      return absl::StrCat(CategoryMembers("L"), CategoryMembers("M"), CategoryMembers("N"),
                          CategoryMembers("Pc"), "\\x{200C}\\x{200D}");
    default:
      return "0-9A-Fa-f";
  }
}

std::string Pcre2Error(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

absl::StatusOr<std::string> OnigurumaToPcre2(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 16);
  int class_depth = 0;  // Oniguruma nests [...] sets
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[++i];
      // \p{Cat}, \p{^Cat}, \P{Cat} of a general category.
      if ((e == 'p' || e == 'P') && i + 1 < p.size() && p[i + 1] == '{') {
        size_t close = p.find('}', i + 2);
        std::string_view name =
            close == std::string_view::npos ? "" : p.substr(i + 2, close - i - 2);
        bool negated = e == 'P';
        if (!name.empty() && name[0] == '^') {
          negated = !negated;
          name.remove_prefix(1);
        }
        if (IsGeneralCategory(name) && !(negated && class_depth > 0)) {
          std::string members = CategoryMembers(name);
          if (class_depth > 0) {
            out += members;
          } else {
            absl::StrAppend(&out, negated ? "[^" : "[", members, "]");
          }
          i = close;
          continue;
        }
      }
      bool known = e == 's' || e == 'S' || e == 'w' || e == 'W' || e == 'h' || e == 'H';
      char lower = static_cast<char>(e | 0x20);
      if (!known) {
        out += c;
        out += e;
      } else if (class_depth == 0) {
        absl::StrAppend(&out, e == lower ? "[" : "[^", ClassMembers(lower), "]");
      } else if (e == lower) {
        out += ClassMembers(lower);
      } else if (e == 'S') {
        out += "\\S";  // PCRE2's \S differs from Oniguruma's only at U+180E
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "\\", std::string(1, e), " inside a character class is not supported"));
      }
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out += c;
      // A ']' first in a class (after an optional '^') is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out += c;
  }
  return out;
}

RegexScratch::RegexScratch() {
  data_ = pcre2_match_data_create(1, nullptr);
  context_ = pcre2_match_context_create(nullptr);
}

RegexScratch::~RegexScratch() {
  if (jit_stack_) pcre2_jit_stack_free(jit_stack_);
  pcre2_match_context_free(context_);
  pcre2_match_data_free(data_);
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern, Syntax syntax) {
  std::string translated(pattern);
  uint32_t options = PCRE2_UTF | PCRE2_UCP;
  if (syntax == Syntax::kOniguruma) {
    auto t = OnigurumaToPcre2(pattern);
    if (!t.ok()) return t.status();
    translated = std::move(*t);
    options |= PCRE2_MULTILINE;
  } else if (syntax == Syntax::kLiteral) {
    options = PCRE2_UTF | PCRE2_LITERAL;  // PCRE2_LITERAL takes no PCRE2_UCP
  }
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()),
                                   translated.size(), options, &error, &offset, context);
  pcre2_compile_context_free(context);
  if (!code) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot compile the pattern at offset ", offset, ": ", Pcre2Error(error)));
  }
  // JIT where the platform has it; the interpreter matches the same.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  std::unique_ptr<Regex> regex(new Regex);
  regex->code_ = code;
  regex->pattern_ = std::string(pattern);
  return regex;
}

Regex::~Regex() { pcre2_code_free(code_); }

absl::StatusOr<bool> Regex::Match(std::string_view text, size_t start, uint32_t options,
                                  RegexScratch* scratch, size_t* match_start,
                                  size_t* match_end) const {
  // Kiln's texts are valid UTF-8 (checked on entry), so PCRE2's own check,
  // which would rescan the text on every call, is skipped.
  options |= PCRE2_NO_UTF_CHECK;
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = pcre2_match(code_, subject, text.size(), start, options, scratch->data_,
                       scratch->context_);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !scratch->jit_stack_) {
    // Long runs can outgrow the default 32 KiB JIT stack.
    scratch->jit_stack_ = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(scratch->context_, nullptr, scratch->jit_stack_);
    rc = pcre2_match(code_, subject, text.size(), start, options, scratch->data_,
                     scratch->context_);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("pattern '", pattern_, "': ", Pcre2Error(rc)));
  }
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch->data_);
  *match_start = ovector[0];
  *match_end = ovector[1];
  return true;
}

absl::Status Regex::FindMatches(std::string_view text, RegexScratch* scratch,
                                std::vector<Span>* out) const {
  if (text.empty()) {
    out->push_back({0, 0, false});
    return absl::OkStatus();
  }
  size_t prev = 0;           // end of the last span
  size_t search = 0;         // where the next search starts
  size_t last_match_end = std::string_view::npos;
  while (search <= text.size()) {
    size_t s = 0, e = 0;
    auto found = Match(text, search, 0, scratch, &s, &e);
    if (!found.ok()) return found.status();
    if (!*found) break;
    if (s == e && e == last_match_end) {
      if (search >= text.size()) break;
      search += Utf8Length(static_cast<unsigned char>(text[search]));
      continue;
    }
    search = e;
    last_match_end = e;
    if (prev != s) out->push_back({prev, s, false});
    out->push_back({s, e, true});
    prev = e;
  }
  if (prev != text.size()) out->push_back({prev, text.size(), false});
  return absl::OkStatus();
}

absl::StatusOr<bool> Regex::MatchesAtStart(std::string_view text, RegexScratch* scratch) const {
  size_t s = 0, e = 0;
  return Match(text, 0, PCRE2_ANCHORED, scratch, &s, &e);
}

}  // namespace kiln::tok
