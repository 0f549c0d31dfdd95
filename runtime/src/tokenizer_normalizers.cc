// Normalizers of tokenizer.json, and the span helpers that the stages share.
#include <algorithm>

#include "absl/strings/match.h"
#include "tokenizer_pipeline.h"
#include "tokenizer_unicode.h"

namespace kiln::tok {

void SplitPiece(const Piece& piece, const std::vector<Span>& spans, SplitBehavior behavior,
                Pieces* out) {
  // (start, end, removed), as Hugging Face's NormalizedString::split folds them.
  struct Cut {
    size_t start, end;
    bool removed;
  };
  std::vector<Cut> cuts;
  cuts.reserve(spans.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) cuts.push_back({s.start, s.end, false});
      break;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) cuts.push_back({s.start, s.end, s.match});
      break;
    case SplitBehavior::kContiguous:
      for (const Span& s : spans) {
        if (s.match == previous_match && !cuts.empty()) {
          cuts.back().end = s.end;
        } else {
          cuts.push_back({s.start, s.end, false});
        }
        previous_match = s.match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.match && !previous_match && !cuts.empty()) {
          cuts.back().end = s.end;
        } else {
          cuts.push_back({s.start, s.end, false});
        }
        previous_match = s.match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->match && !previous_match && !cuts.empty()) {
          cuts.back().start = it->start;
        } else {
          cuts.push_back({it->start, it->end, false});
        }
        previous_match = it->match;
      }
      std::reverse(cuts.begin(), cuts.end());
      break;
  }
  for (const Cut& c : cuts) {
    if (c.removed || c.start == c.end) continue;
    Piece p;
    p.text = piece.text.substr(c.start, c.end - c.start);
    p.at_origin = piece.at_origin && c.start == 0;
    out->push_back(std::move(p));
  }
}

absl::StatusOr<std::string> ReplaceMatches(const Regex& regex, const std::string& text,
                                           const std::string& content, Scratch* scratch) {
  std::vector<Span> spans;
  absl::Status st = regex.FindMatches(text, &scratch->regex, &spans);
  if (!st.ok()) return st;
  std::string out;
  out.reserve(text.size());
  for (const Span& s : spans) {
    if (s.match) {
      out += content;
    } else {
      out.append(text, s.start, s.end - s.start);
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Regex>> ParsePattern(const Json& obj, const std::string& path) {
  auto pattern = Member(obj, "pattern", path);
  if (!pattern.ok()) return pattern.status();
  const Json& p = **pattern;
  std::string ppath = JoinPath(path, "pattern");
  const Json* text = nullptr;
  Regex::Syntax syntax = Regex::Syntax::kLiteral;
  if (p.is_object() && p.size() == 1 && p.contains("String")) {
    text = &p["String"];
  } else if (p.is_object() && p.size() == 1 && p.contains("Regex")) {
    text = &p["Regex"];
    syntax = Regex::Syntax::kOniguruma;
  }
  if (!text || !text->is_string()) {
    return JsonError(ppath, absl::StrCat("expected {\"String\": ...} or {\"Regex\": ...}, got ",
                                         Describe(p)));
  }
  const std::string& s = text->get_ref<const std::string&>();
  // Hugging Face compiles an empty pattern into one that matches everywhere.
  if (s.empty()) return JsonError(ppath, "an empty pattern is not supported");
  auto regex = Regex::Compile(s, syntax);
  if (!regex.ok()) {
    return JsonError(ppath, absl::StrCat("'", s, "': ", regex.status().message()));
  }
  return regex;
}

namespace {

class SequenceNormalizer : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> steps;
  absl::Status Normalize(std::string* text, Scratch* scratch) const override {
    for (const auto& step : steps) {
      absl::Status st = step->Normalize(text, scratch);
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  absl::Status Normalize(std::string* text, Scratch*) const override {
    auto n = NormalizeUnicode(*text, form_);
    if (!n.ok()) return n.status();
    *text = std::move(*n);
    return absl::OkStatus();
  }

 private:
  NormalForm form_;
};

class PrependNormalizer : public Normalizer {
 public:
  std::string prepend;
  absl::Status Normalize(std::string* text, Scratch*) const override {
    if (!text->empty()) text->insert(0, prepend);
    return absl::OkStatus();
  }
};

class ReplaceNormalizer : public Normalizer {
 public:
  std::unique_ptr<Regex> pattern;
  std::string content;
  absl::Status Normalize(std::string* text, Scratch* scratch) const override {
    auto r = ReplaceMatches(*pattern, *text, content, scratch);
    if (!r.ok()) return r.status();
    *text = std::move(*r);
    return absl::OkStatus();
  }
};

// Strips White_Space characters (Rust's char::is_whitespace) from either end.
class StripNormalizer : public Normalizer {
 public:
  bool left = false, right = false;
  absl::Status Normalize(std::string* text, Scratch*) const override {
    size_t begin = 0, end = text->size();
    if (left) {
      while (begin < end) {
        size_t next = begin;
        if (!IsWhiteSpace(NextCodePoint(*text, &next))) break;
        begin = next;
      }
    }
    if (right) {
      while (end > begin) {
        size_t start;
        if (!IsWhiteSpace(PrevCodePoint(*text, end, &start))) break;
        end = start;
      }
    }
    *text = text->substr(begin, end - begin);
    return absl::OkStatus();
  }
};

constexpr char kSupportedNormalizers[] =
    "Sequence, NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip";

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& json,
                                                            const std::string& path) {
  auto type = GetType(json, path);
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    auto steps = ParseEach(json, "normalizers", path, ParseNormalizer);
    if (!steps.ok()) return steps.status();
    auto seq = std::make_unique<SequenceNormalizer>();
    seq->steps = std::move(*steps);
    return seq;
  }
  if (*type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfc);
  if (*type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfd);
  if (*type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkc);
  if (*type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkd);
  if (*type == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    auto s = GetString(json, "prepend", path);
    if (!s.ok()) return s.status();
    n->prepend = std::move(*s);
    return n;
  }
  if (*type == "Replace") {
    auto n = std::make_unique<ReplaceNormalizer>();
    auto pattern = ParsePattern(json, path);
    if (!pattern.ok()) return pattern.status();
    auto content = GetString(json, "content", path);
    if (!content.ok()) return content.status();
    n->pattern = std::move(*pattern);
    n->content = std::move(*content);
    return n;
  }
  if (*type == "Strip") {
    auto n = std::make_unique<StripNormalizer>();
    auto left = GetBool(json, "strip_left", path);
    if (!left.ok()) return left.status();
    auto right = GetBool(json, "strip_right", path);
    if (!right.ok()) return right.status();
    n->left = *left;
    n->right = *right;
    return n;
  }
  return Unsupported(path, "normalizer", *type, kSupportedNormalizers);
}

}  // namespace kiln::tok
