// Pre-tokenizers of tokenizer.json.
#include "tokenizer_pipeline.h"
#include "tokenizer_unicode.h"

namespace kiln::tok {
namespace {

// Replaces each text piece with what `split(piece, &out)` appends (only
// non-empty pieces); added-token pieces stay as they are.
template <typename F>
absl::Status SplitEach(Pieces* pieces, F&& split) {
  Pieces out;
  out.reserve(pieces->size());
  for (Piece& p : *pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    absl::Status st = split(p, &out);
    if (!st.ok()) return st;
  }
  *pieces = std::move(out);
  return absl::OkStatus();
}

absl::Status SplitByRegex(const Regex& regex, bool invert, SplitBehavior behavior,
                          const Piece& piece, Scratch* scratch, Pieces* out) {
  std::vector<Span> spans;
  absl::Status st = regex.FindMatches(piece.text, &scratch->regex, &spans);
  if (!st.ok()) return st;
  if (invert) {
    for (Span& s : spans) s.match = !s.match;
  }
  SplitPiece(piece, spans, behavior, out);
  return absl::OkStatus();
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  absl::Status PreTokenize(Pieces* pieces, Scratch* scratch) const override {
    for (const auto& step : steps) {
      absl::Status st = step->PreTokenize(pieces, scratch);
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  std::unique_ptr<Regex> pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  absl::Status PreTokenize(Pieces* pieces, Scratch* scratch) const override {
    return SplitEach(pieces, [&](const Piece& p, Pieces* out) {
      return SplitByRegex(*pattern, invert, behavior, p, scratch, out);
    });
  }
};

// Digits: numbers (Rust's char::is_numeric, \p{N}) apart, one by one or in runs.
class DigitsPreTokenizer : public PreTokenizer {
 public:
  std::unique_ptr<Regex> numeric;
  bool individual = false;
  absl::Status PreTokenize(Pieces* pieces, Scratch* scratch) const override {
    SplitBehavior b = individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
    return SplitEach(pieces, [&](const Piece& p, Pieces* out) {
      return SplitByRegex(*numeric, false, b, p, scratch, out);
    });
  }
};

// ByteLevel: an optional leading space, the GPT-2 split (use_regex), then
// every byte of every text piece as its byte-level character.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  bool add_prefix_space = false;
  std::unique_ptr<Regex> gpt2;  // when use_regex
  absl::Status PreTokenize(Pieces* pieces, Scratch* scratch) const override {
    absl::Status st = SplitEach(pieces, [&](Piece& p, Pieces* out) {
      if (add_prefix_space && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      if (gpt2) return SplitByRegex(*gpt2, false, SplitBehavior::kIsolated, p, scratch, out);
      if (!p.text.empty()) out->push_back(std::move(p));
      return absl::OkStatus();
    });
    if (!st.ok()) return st;
    for (Piece& p : *pieces) {
      if (p.id >= 0) continue;
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (char c : p.text) mapped += ByteLevelUtf8(static_cast<unsigned char>(c));
      p.text = std::move(mapped);
    }
    return absl::OkStatus();
  }
};

// Metaspace: spaces become the replacement character (U+2581), which is
// prepended per the scheme; with `split`, each run of it starts a piece.
class MetaspacePreTokenizer : public PreTokenizer {
 public:
  explicit MetaspacePreTokenizer(MetaspaceConfig c) : c_(std::move(c)) {}
  absl::Status PreTokenize(Pieces* pieces, Scratch*) const override {
    return SplitEach(pieces, [&](Piece& p, Pieces* out) {
      std::string text;
      text.reserve(p.text.size() + c_.replacement.size());
      for (char c : p.text) {
        if (c == ' ') {
          text += c_.replacement;
        } else {
          text += c;
        }
      }
      bool starts = text.compare(0, c_.replacement.size(), c_.replacement) == 0;
      if (!text.empty() && !starts &&
          (c_.scheme == PrependScheme::kAlways ||
           (c_.scheme == PrependScheme::kFirst && p.at_origin))) {
        text.insert(0, c_.replacement);
      }
      p.text = std::move(text);
      if (!c_.split) {
        if (!p.text.empty()) out->push_back(std::move(p));
        return absl::OkStatus();
      }
      // The spans of a char pattern: each replacement character alone.
      std::vector<Span> spans;
      size_t last = 0;
      for (size_t at = p.text.find(c_.replacement); at != std::string::npos;
           at = p.text.find(c_.replacement, at + c_.replacement.size())) {
        if (last < at) spans.push_back({last, at, false});
        spans.push_back({at, at + c_.replacement.size(), true});
        last = at + c_.replacement.size();
      }
      if (last < p.text.size()) spans.push_back({last, p.text.size(), false});
      SplitPiece(p, spans, SplitBehavior::kMergedWithNext, out);
      return absl::OkStatus();
    });
  }

 private:
  MetaspaceConfig c_;
};

absl::StatusOr<SplitBehavior> ParseBehavior(const Json& json, const std::string& path) {
  auto b = GetString(json, "behavior", path);
  if (!b.ok()) return b.status();
  if (*b == "Removed") return SplitBehavior::kRemoved;
  if (*b == "Isolated") return SplitBehavior::kIsolated;
  if (*b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (*b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (*b == "Contiguous") return SplitBehavior::kContiguous;
  return JsonError(JoinPath(path, "behavior"),
                   absl::StrCat("unknown split behavior '", *b,
                                "' (Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                                "Contiguous)"));
}

constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr char kSupportedPreTokenizers[] = "Sequence, Split, ByteLevel, Metaspace, Digits";

}  // namespace

absl::StatusOr<MetaspaceConfig> ParseMetaspace(const Json& json, const std::string& path) {
  MetaspaceConfig ms;
  auto replacement = GetChar(json, "replacement", path);
  if (!replacement.ok()) return replacement.status();
  ms.replacement = std::move(*replacement);
  if (const Json* scheme = OptionalMember(json, "prepend_scheme")) {
    std::string s = scheme->is_string() ? scheme->get<std::string>() : "";
    if (s == "first") {
      ms.scheme = PrependScheme::kFirst;
    } else if (s == "never") {
      ms.scheme = PrependScheme::kNever;
    } else if (s == "always") {
      ms.scheme = PrependScheme::kAlways;
    } else {
      return JsonError(JoinPath(path, "prepend_scheme"),
                       absl::StrCat("expected \"first\", \"never\" or \"always\", got ",
                                    Describe(*scheme)));
    }
  }
  // The older field: false means "never" and must not contradict the scheme
  // (which is "always" when absent), as Hugging Face checks.
  auto legacy = GetBool(json, "add_prefix_space", path, true);
  if (!legacy.ok()) return legacy.status();
  if (!*legacy && ms.scheme != PrependScheme::kNever) {
    return JsonError(JoinPath(path, "add_prefix_space"),
                     "false does not match the declared prepend_scheme");
  }
  auto split = GetBool(json, "split", path, true);
  if (!split.ok()) return split.status();
  ms.split = *split;
  return ms;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& json,
                                                                const std::string& path) {
  auto type = GetType(json, path);
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    auto steps = ParseEach(json, "pretokenizers", path, ParsePreTokenizer);
    if (!steps.ok()) return steps.status();
    auto seq = std::make_unique<SequencePreTokenizer>();
    seq->steps = std::move(*steps);
    return seq;
  }
  if (*type == "Split") {
    auto split = std::make_unique<SplitPreTokenizer>();
    auto pattern = ParsePattern(json, path);
    if (!pattern.ok()) return pattern.status();
    auto behavior = ParseBehavior(json, path);
    if (!behavior.ok()) return behavior.status();
    auto invert = GetBool(json, "invert", path);
    if (!invert.ok()) return invert.status();
    split->pattern = std::move(*pattern);
    split->behavior = *behavior;
    split->invert = *invert;
    return split;
  }
  if (*type == "ByteLevel") {
    auto bl = std::make_unique<ByteLevelPreTokenizer>();
    auto prefix = GetBool(json, "add_prefix_space", path);
    if (!prefix.ok()) return prefix.status();
    auto use_regex = GetBool(json, "use_regex", path, true);
    if (!use_regex.ok()) return use_regex.status();
    bl->add_prefix_space = *prefix;
    if (*use_regex) {
      auto gpt2 = Regex::Compile(kGpt2Pattern, Regex::Syntax::kOniguruma);
      if (!gpt2.ok()) return gpt2.status();
      bl->gpt2 = std::move(*gpt2);
    }
    return bl;
  }
  if (*type == "Metaspace") {
    auto config = ParseMetaspace(json, path);
    if (!config.ok()) return config.status();
    return std::make_unique<MetaspacePreTokenizer>(std::move(*config));
  }
  if (*type == "Digits") {
    auto digits = std::make_unique<DigitsPreTokenizer>();
    auto individual = GetBool(json, "individual_digits", path);
    if (!individual.ok()) return individual.status();
    auto numeric = Regex::Compile("\\p{N}", Regex::Syntax::kOniguruma);
    if (!numeric.ok()) return numeric.status();
    digits->individual = *individual;
    digits->numeric = std::move(*numeric);
    return digits;
  }
  return Unsupported(path, "pre-tokenizer", *type, kSupportedPreTokenizers);
}

}  // namespace kiln::tok
