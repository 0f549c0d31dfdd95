// Post-processors and decoders of tokenizer.json.
#include <map>

#include "tokenizer_pipeline.h"
#include "tokenizer_unicode.h"

namespace kiln::tok {
namespace {

// Post-processors -----------------------------------------------------------------

class SequencePostProcessor : public PostProcessor {
 public:
  std::vector<std::unique_ptr<PostProcessor>> steps;
  void Process(std::vector<int32_t>* ids, bool add_special_tokens) const override {
    for (const auto& step : steps) step->Process(ids, add_special_tokens);
  }
};

// ByteLevel as a post-processor only trims offsets: the ids stay.
class ByteLevelPostProcessor : public PostProcessor {
 public:
  void Process(std::vector<int32_t>*, bool) const override {}
};

// TemplateProcessing's single-sequence template: the sequence and special
// tokens (the latter only with add_special_tokens).
class TemplatePostProcessor : public PostProcessor {
 public:
  struct Item {
    bool sequence = false;
    std::vector<int32_t> ids;  // of a special token
  };
  std::vector<Item> single;
  void Process(std::vector<int32_t>* ids, bool add_special_tokens) const override {
    std::vector<int32_t> out;
    out.reserve(ids->size() + 4);
    for (const Item& item : single) {
      if (item.sequence) {
        out.insert(out.end(), ids->begin(), ids->end());
      } else if (add_special_tokens) {
        out.insert(out.end(), item.ids.begin(), item.ids.end());
      }
    }
    *ids = std::move(out);
  }
};

absl::StatusOr<std::unique_ptr<PostProcessor>> ParseTemplate(const Json& json,
                                                            const std::string& path) {
  // special_tokens: {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}, ...}
  std::map<std::string, std::vector<int32_t>> specials;
  if (const Json* st = OptionalMember(json, "special_tokens")) {
    std::string spath = JoinPath(path, "special_tokens");
    if (!st->is_object()) return JsonError(spath, "expected an object");
    for (const auto& [name, token] : st->items()) {
      std::string tpath = JoinPath(spath, name.c_str());
      if (!token.is_object()) return JsonError(tpath, "expected an object");
      auto ids = Member(token, "ids", tpath);
      if (!ids.ok()) return ids.status();
      std::vector<int32_t>& list = specials[name];
      for (const Json& id : **ids) {
        if (!id.is_number_unsigned() || id.get<uint64_t>() > INT32_MAX)
          return JsonError(JoinPath(tpath, "ids"), absl::StrCat("bad id ", Describe(id)));
        list.push_back(id.get<int32_t>());
      }
    }
  }
  auto parse_template = [&](const char* key,
                            std::vector<TemplatePostProcessor::Item>* items) -> absl::Status {
    std::string tpath = JoinPath(path, key);
    const Json* pieces = OptionalMember(json, key);
    if (!pieces) return absl::OkStatus();
    if (!pieces->is_array()) return JsonError(tpath, "expected an array");
    for (size_t i = 0; i < pieces->size(); ++i) {
      const Json& piece = (*pieces)[i];
      std::string ppath = IndexPath(tpath, i);
      if (piece.is_object() && piece.contains("Sequence") && piece["Sequence"].is_object()) {
        auto id = GetString(piece["Sequence"], "id", JoinPath(ppath, "Sequence"));
        if (!id.ok()) return id.status();
        if (*id != "A" && *id != "B")
          return JsonError(JoinPath(ppath, "Sequence.id"), absl::StrCat("unknown sequence ", *id));
        if (items) {
          if (*id == "B")
            return JsonError(ppath, "the single-sequence template cannot use sequence B");
          items->push_back({true, {}});
        }
      } else if (piece.is_object() && piece.contains("SpecialToken") &&
                 piece["SpecialToken"].is_object()) {
        auto id = GetString(piece["SpecialToken"], "id", JoinPath(ppath, "SpecialToken"));
        if (!id.ok()) return id.status();
        auto it = specials.find(*id);
        if (it == specials.end()) {
          return JsonError(ppath, absl::StrCat("special token '", *id,
                                               "' is missing from special_tokens"));
        }
        if (items) items->push_back({false, it->second});
      } else {
        return JsonError(ppath, absl::StrCat("expected {\"Sequence\": ...} or "
                                             "{\"SpecialToken\": ...}, got ",
                                             Describe(piece)));
      }
    }
    return absl::OkStatus();
  };
  auto processor = std::make_unique<TemplatePostProcessor>();
  absl::Status st = parse_template("single", &processor->single);
  if (!st.ok()) return st;
  // Kiln encodes single sequences; the pair template is only checked.
  st = parse_template("pair", nullptr);
  if (!st.ok()) return st;
  return processor;
}

// Decoders --------------------------------------------------------------------------

class SequenceDecoder : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> steps;
  absl::Status DecodeChain(std::vector<std::string>* tokens, Scratch* scratch) const override {
    for (const auto& step : steps) {
      absl::Status st = step->DecodeChain(tokens, scratch);
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }
};

// ByteLevel: the bytes of every token's byte-level characters (a token with
// any other character contributes its own UTF-8), as one lossy UTF-8 string.
class ByteLevelDecoder : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens, Scratch*) const override {
    std::string bytes;
    for (const std::string& t : *tokens) {
      size_t mark = bytes.size();
      bool all = true;
      for (size_t i = 0; i < t.size();) {
        int b = CharToByte(NextCodePoint(t, &i));
        if (b < 0) {
          all = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!all) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens->assign(1, Utf8Lossy(bytes));
    return absl::OkStatus();
  }
};

// Metaspace: the replacement character becomes a space, and is dropped from
// the first token unless the prepend scheme is "never".
class MetaspaceDecoder : public Decoder {
 public:
  explicit MetaspaceDecoder(MetaspaceConfig c) : c_(std::move(c)) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens, Scratch*) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      const std::string& t = (*tokens)[i];
      std::string out;
      out.reserve(t.size());
      bool drop = i == 0 && c_.scheme != PrependScheme::kNever;
      for (size_t at = 0; at < t.size();) {
        if (t.compare(at, c_.replacement.size(), c_.replacement) == 0) {
          if (!drop) out += ' ';
          at += c_.replacement.size();
        } else {
          out += t[at++];
        }
      }
      (*tokens)[i] = std::move(out);
    }
    return absl::OkStatus();
  }

 private:
  MetaspaceConfig c_;
};

class ReplaceDecoder : public Decoder {
 public:
  std::unique_ptr<Regex> pattern;
  std::string content;
  absl::Status DecodeChain(std::vector<std::string>* tokens, Scratch* scratch) const override {
    for (std::string& t : *tokens) {
      auto r = ReplaceMatches(*pattern, t, content, scratch);
      if (!r.ok()) return r.status();
      t = std::move(*r);
    }
    return absl::OkStatus();
  }
};

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of a "<0xHH>" token (Rust's u8::from_str_radix on "HH", which
// also takes "+H"), or -1.
int FallbackByte(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  int hi = HexDigit(t[3]), lo = HexDigit(t[4]);
  if (t[3] == '+') return lo;
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// ByteFallback: runs of <0xHH> tokens become their UTF-8 text, or one U+FFFD
// per byte when the run is not valid UTF-8.
class ByteFallbackDecoder : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens, Scratch*) const override {
    std::vector<std::string> out;
    out.reserve(tokens->size());
    std::string bytes;
    auto flush = [&] {
      if (bytes.empty()) return;
      if (IsValidUtf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t i = 0; i < bytes.size(); ++i) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
    };
    for (std::string& t : *tokens) {
      int b = FallbackByte(t);
      if (b >= 0) {
        bytes.push_back(static_cast<char>(b));
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    *tokens = std::move(out);
    return absl::OkStatus();
  }
};

class FuseDecoder : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens, Scratch*) const override {
    std::string all;
    for (const std::string& t : *tokens) all += t;
    tokens->assign(1, std::move(all));
    return absl::OkStatus();
  }
};

// Strip: up to `start` leading and `stop` trailing `content` characters of
// each token.
class StripDecoder : public Decoder {
 public:
  char32_t content = ' ';
  size_t start = 0, stop = 0;
  absl::Status DecodeChain(std::vector<std::string>* tokens, Scratch*) const override {
    for (std::string& t : *tokens) {
      std::vector<size_t> offsets;  // of each character, then the end
      std::vector<char32_t> chars;
      for (size_t i = 0; i < t.size();) {
        offsets.push_back(i);
        chars.push_back(NextCodePoint(t, &i));
      }
      offsets.push_back(t.size());
      size_t n = chars.size(), start_cut = 0, stop_cut = n;
      for (size_t i = 0; i < std::min(start, n) && chars[i] == content; ++i) start_cut = i + 1;
      for (size_t i = 0; i < std::min(stop, n) && chars[n - i - 1] == content; ++i)
        stop_cut = n - i - 1;
      if (stop_cut < start_cut) stop_cut = start_cut;
      t = t.substr(offsets[start_cut], offsets[stop_cut] - offsets[start_cut]);
    }
    return absl::OkStatus();
  }
};

constexpr char kSupportedPostProcessors[] = "TemplateProcessing, ByteLevel, Sequence";
constexpr char kSupportedDecoders[] =
    "Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip";

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(const Json& json,
                                                                  const std::string& path) {
  auto type = GetType(json, path);
  if (!type.ok()) return type.status();
  if (*type == "TemplateProcessing") return ParseTemplate(json, path);
  if (*type == "ByteLevel") return std::make_unique<ByteLevelPostProcessor>();
  if (*type == "Sequence") {
    auto steps = ParseEach(json, "processors", path, ParsePostProcessor);
    if (!steps.ok()) return steps.status();
    auto seq = std::make_unique<SequencePostProcessor>();
    seq->steps = std::move(*steps);
    return seq;
  }
  return Unsupported(path, "post-processor", *type, kSupportedPostProcessors);
}

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const Json& json, const std::string& path) {
  auto type = GetType(json, path);
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    auto steps = ParseEach(json, "decoders", path, ParseDecoder);
    if (!steps.ok()) return steps.status();
    auto seq = std::make_unique<SequenceDecoder>();
    seq->steps = std::move(*steps);
    return seq;
  }
  if (*type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (*type == "Metaspace") {
    auto config = ParseMetaspace(json, path);
    if (!config.ok()) return config.status();
    return std::make_unique<MetaspaceDecoder>(std::move(*config));
  }
  if (*type == "Replace") {
    auto d = std::make_unique<ReplaceDecoder>();
    auto pattern = ParsePattern(json, path);
    if (!pattern.ok()) return pattern.status();
    auto content = GetString(json, "content", path);
    if (!content.ok()) return content.status();
    d->pattern = std::move(*pattern);
    d->content = std::move(*content);
    return d;
  }
  if (*type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (*type == "Fuse") return std::make_unique<FuseDecoder>();
  if (*type == "Strip") {
    auto d = std::make_unique<StripDecoder>();
    auto content = GetChar(json, "content", path);
    if (!content.ok()) return content.status();
    size_t i = 0;
    d->content = NextCodePoint(*content, &i);
    auto start = GetCount(json, "start", path, INT32_MAX);
    if (!start.ok()) return start.status();
    auto stop = GetCount(json, "stop", path, INT32_MAX);
    if (!stop.ok()) return stop.status();
    d->start = static_cast<size_t>(*start);
    d->stop = static_cast<size_t>(*stop);
    return d;
  }
  return Unsupported(path, "decoder", *type, kSupportedDecoders);
}

}  // namespace kiln::tok
