// Regular expressions of tokenizer.json (internal), on PCRE2 (8-bit, UTF,
// Unicode properties, JIT when the platform has it).
//
// Hugging Face compiles the patterns of Split, Replace and its own GPT-2
// pattern with Oniguruma in Ruby syntax. PCRE2 reads the same syntax with five
// differences that matter for tokenizers, which Compile bridges: `^` and `$`
// match at line breaks (PCRE2_MULTILINE); `\s`, `\w`, `\h` (and their
// negations) mean Oniguruma's classes: `\s` is [\t-\r\x85\p{Z}] (PCRE2's
// includes U+180E), `\w` is letters, marks, numbers, connector punctuation
// and the joiners (PCRE2's lacks the marks), `\h` is a hex digit (PCRE2's is
// horizontal space); and `\p{..}` of a general category also covers what
// Unicode 15.0 and 16.0 assigned (Oniguruma's tables are at 16.0, Debian's
// PCRE2 10.42 at 14.0: new emoji such as U+1FA75, CJK Extensions H and I),
// from tokenizer_unicode_update.inc.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct pcre2_real_code_8;
struct pcre2_real_match_data_8;
struct pcre2_real_match_context_8;
struct pcre2_real_jit_stack_8;

namespace kiln::tok {

// A span of a text, as Hugging Face's Pattern::find_matches gives them: the
// spans cover the text in order, each flagged a match or not.
struct Span {
  size_t start = 0;
  size_t end = 0;
  bool match = false;
};

// Per-call match state (match data, a JIT stack when one is needed). Not
// shared between threads.
class RegexScratch {
 public:
  RegexScratch();
  ~RegexScratch();
  RegexScratch(const RegexScratch&) = delete;
  RegexScratch& operator=(const RegexScratch&) = delete;

 private:
  friend class Regex;
  pcre2_real_match_data_8* data_ = nullptr;
  pcre2_real_match_context_8* context_ = nullptr;
  pcre2_real_jit_stack_8* jit_stack_ = nullptr;
};

class Regex {
 public:
  enum class Syntax {
    kOniguruma,  // a tokenizer.json "Regex" pattern (see above)
    kLiteral,    // a tokenizer.json "String" pattern
    kPcre2,      // Kiln's own patterns
  };
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern, Syntax syntax);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the spans of `text` (valid UTF-8) to `out`, matches found
  // left to right as Oniguruma's find_iter finds them (an empty match right
  // after the previous match is skipped). An empty text gives one empty span.
  absl::Status FindMatches(std::string_view text, RegexScratch* scratch,
                           std::vector<Span>* out) const;
  // Whether the pattern matches at the start of `text`.
  absl::StatusOr<bool> MatchesAtStart(std::string_view text, RegexScratch* scratch) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  // pcre2_match at `start`; false when there is no match.
  absl::StatusOr<bool> Match(std::string_view text, size_t start, uint32_t options,
                             RegexScratch* scratch, size_t* match_start,
                             size_t* match_end) const;

  pcre2_real_code_8* code_ = nullptr;
  std::string pattern_;  // as given, for errors
};

// The Oniguruma (Ruby syntax) pattern rewritten for PCRE2 (see above);
// exposed for tests.
absl::StatusOr<std::string> OnigurumaToPcre2(std::string_view pattern);

}  // namespace kiln::tok
