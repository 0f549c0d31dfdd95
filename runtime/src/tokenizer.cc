// kiln::Tokenizer: tokenizer.json loading, the added vocabulary, and the
// encode/decode pipeline, in the order Hugging Face tokenizers runs it:
//
//   encode: added tokens that match the raw text (normalized: false) are cut
//           out; each remaining piece is normalized; added tokens that match
//           the normalized text are cut out; pre-tokenizers split the rest;
//           the BPE model turns each piece into ids; the post-processor adds
//           its template (BOS) when add_special_tokens.
//   decode: ids -> tokens (special ones dropped on request) -> decoder chain.
#include "kiln/tokenizer.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tokenizer_bpe.h"
#include "tokenizer_json.h"
#include "tokenizer_pipeline.h"
#include "tokenizer_unicode.h"

namespace kiln {
namespace {

using tok::Json;
using tok::Piece;
using tok::Pieces;
using tok::Scratch;

inline absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status Prefixed(const absl::Status& st, const std::string& what) {
  return absl::Status(st.code(), absl::StrCat(what, ": ", st.message()));
}

struct AddedToken {
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
  bool operator==(const AddedToken& o) const {
    return content == o.content && single_word == o.single_word && lstrip == o.lstrip &&
           rstrip == o.rstrip && normalized == o.normalized && special == o.special;
  }
};

// Added-token contents -> ids, matched leftmost-longest (Hugging Face's
// Aho-Corasick automaton): a byte trie tried at each position.
class AddedTrie {
 public:
  bool empty() const { return nodes_.size() == 1; }
  void Add(std::string_view pattern, int32_t id) {
    int32_t node = 0;
    for (char c : pattern) {
      int32_t next = Child(node, static_cast<unsigned char>(c));
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_[node].children.emplace_back(static_cast<unsigned char>(c), next);
        nodes_.emplace_back();
      }
      node = next;
    }
    nodes_[node].id = id;
    first_[static_cast<unsigned char>(pattern[0])] = true;
  }
  // The leftmost match starting at or after `from`, the longest there.
  bool Find(std::string_view text, size_t from, size_t* start, size_t* end, int32_t* id) const {
    for (size_t pos = from; pos < text.size(); ++pos) {
      if (!first_[static_cast<unsigned char>(text[pos])]) continue;
      int32_t node = 0;
      *id = -1;
      for (size_t i = pos; i < text.size(); ++i) {
        node = Child(node, static_cast<unsigned char>(text[i]));
        if (node < 0) break;
        if (nodes_[node].id >= 0) {
          *id = nodes_[node].id;
          *end = i + 1;
        }
      }
      if (*id >= 0) {
        *start = pos;
        return true;
      }
    }
    return false;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t id = -1;
  };
  int32_t Child(int32_t node, unsigned char c) const {
    for (const auto& [byte, next] : nodes_[node].children)
      if (byte == c) return next;
    return -1;
  }
  std::vector<Node> nodes_{1};
  bool first_[256] = {};
};

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  std::unique_ptr<tok::BpeModel> model;
  std::unique_ptr<tok::Normalizer> normalizer;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::PostProcessor> post_processor;
  std::unique_ptr<tok::Decoder> decoder;

  struct Added {
    AddedToken token;
    std::optional<std::string> normalized;  // the content as the normalizer makes it
  };
  absl::flat_hash_map<std::string, int32_t> added_ids;  // content -> id
  absl::flat_hash_map<int32_t, Added> added;
  absl::flat_hash_set<std::string> special;  // contents of special tokens
  AddedTrie raw_trie, normalized_trie;
  size_t vocab_size = 0;
  std::unique_ptr<tok::Regex> word_char;  // Rust regex's \w, for single_word

  absl::Status LoadAddedTokens(const Json& list);
  absl::Status SplitAdded(const std::string& text, bool at_origin, const AddedTrie& trie,
                          Scratch* scratch, Pieces* out) const;
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special) const;
  // The token of `id` as decoding sees it (an added token's normalized form).
  const std::string* Token(int32_t id) const {
    auto it = added.find(id);
    if (it != added.end()) return it->second.normalized ? &*it->second.normalized
                                                        : &it->second.token.content;
    return model->IdToToken(id);
  }
};

absl::Status Tokenizer::Impl::LoadAddedTokens(const Json& list) {
  const std::string path = "added_tokens";
  if (!list.is_array()) return tok::JsonError(path, "expected an array");
  // Ids as Hugging Face assigns them when it loads the file: a content that
  // the vocabulary (or an earlier added token) has keeps that id, the others
  // take the next ids after the model's vocabulary, in order. (The "id" fields
  // are not read: Hugging Face only warns when they differ.)
  int32_t next_id = static_cast<int32_t>(model->size());
  Scratch scratch;
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& item = list[i];
    std::string ipath = tok::IndexPath(path, i);
    if (!item.is_object()) return tok::JsonError(ipath, "expected an object");
    AddedToken t;
    auto content = tok::GetString(item, "content", ipath);
    if (!content.ok()) return content.status();
    t.content = std::move(*content);
    struct Flag {
      const char* key;
      bool* value;
    };
    for (const Flag& f : {Flag{"single_word", &t.single_word}, Flag{"lstrip", &t.lstrip},
                          Flag{"rstrip", &t.rstrip}, Flag{"normalized", &t.normalized},
                          Flag{"special", &t.special}}) {
      auto v = tok::GetBool(item, f.key, ipath, *f.value);
      if (!v.ok()) return v.status();
      *f.value = *v;
    }
    if (t.content.empty()) continue;
    auto known = added_ids.find(t.content);
    if (known != added_ids.end() && added.at(known->second).token == t) continue;
    int32_t id;
    if (known != added_ids.end()) {
      id = known->second;
    } else if (auto model_id = model->TokenToId(t.content)) {
      id = *model_id;
    } else {
      id = next_id++;
    }
    Added entry;
    if (t.normalized && normalizer) {
      std::string n = t.content;
      absl::Status st = normalizer->Normalize(&n, &scratch);
      if (!st.ok()) return tok::JsonError(ipath, std::string(st.message()));
      if (n != t.content) entry.normalized = std::move(n);
    }
    if (t.special) special.insert(t.content);
    added_ids[t.content] = id;
    entry.token = std::move(t);
    added[id] = std::move(entry);
  }
  size_t overlapping = 0;
  for (const auto& [content, id] : added_ids) overlapping += model->TokenToId(content).has_value();
  vocab_size = model->size() + added_ids.size() - overlapping;
  for (const auto& [id, a] : added) {
    if (!a.token.normalized) {
      raw_trie.Add(a.token.content, id);
    } else {
      const std::string& pattern = a.normalized ? *a.normalized : a.token.content;
      if (!pattern.empty()) normalized_trie.Add(pattern, id);
    }
  }
  return absl::OkStatus();
}

// Hugging Face's AddedVocabulary::find_matches + split_with_indices: cuts the
// added tokens of `trie` out of `text`, honouring single_word (no word
// character next to the token), lstrip and rstrip (the token takes the
// whitespace on that side).
absl::Status Tokenizer::Impl::SplitAdded(const std::string& text, bool at_origin,
                                         const AddedTrie& trie, Scratch* scratch,
                                         Pieces* out) const {
  auto push_text = [&](size_t start, size_t end) {
    if (start >= end) return;
    Piece p;
    p.text = text.substr(start, end - start);
    p.at_origin = at_origin && start == 0;
    out->push_back(std::move(p));
  };
  if (trie.empty()) {
    push_text(0, text.size());
    return absl::OkStatus();
  }
  auto is_word_char = [&](std::string_view c) -> absl::StatusOr<bool> {
    return word_char->MatchesAtStart(c, &scratch->regex);
  };
  size_t start_offset = 0, search = 0, match_start = 0, match_end = 0;
  int32_t id;
  while (trie.Find(text, search, &match_start, &match_end, &id)) {
    search = match_end;
    const AddedToken& t = added.at(id).token;
    size_t start = match_start, stop = match_end;
    if (t.single_word) {
      bool word_before = false, word_after = false;
      if (start > 0) {
        size_t cs;
        tok::PrevCodePoint(text, start, &cs);
        auto w = is_word_char(std::string_view(text).substr(cs, start - cs));
        if (!w.ok()) return w.status();
        word_before = *w;
      }
      if (stop < text.size()) {
        auto w = is_word_char(std::string_view(text).substr(stop));
        if (!w.ok()) return w.status();
        word_after = *w;
      }
      if (word_before || word_after) continue;
    }
    if (t.lstrip) {
      size_t s = start;
      while (s > 0) {
        size_t cs;
        if (!tok::IsWhiteSpace(tok::PrevCodePoint(text, s, &cs))) break;
        s = cs;
      }
      start = std::max(s, start_offset);  // spaces a previous token took stay there
    }
    if (t.rstrip) {
      while (stop < text.size()) {
        size_t next = stop;
        if (!tok::IsWhiteSpace(tok::NextCodePoint(text, &next))) break;
        stop = next;
      }
    }
    push_text(start_offset, start);
    Piece p;
    p.text = text.substr(start, stop - start);
    p.id = id;
    out->push_back(std::move(p));
    start_offset = stop;
  }
  push_text(start_offset, text.size());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Impl::Encode(std::string_view text,
                                                             bool add_special) const {
  Scratch scratch;
  Pieces raw, pieces;
  absl::Status st = SplitAdded(std::string(text), true, raw_trie, &scratch, &raw);
  if (!st.ok()) return st;
  for (Piece& p : raw) {
    if (p.id >= 0) {
      pieces.push_back(std::move(p));
      continue;
    }
    if (normalizer) {
      st = normalizer->Normalize(&p.text, &scratch);
      if (!st.ok()) return st;
    }
    st = SplitAdded(p.text, p.at_origin, normalized_trie, &scratch, &pieces);
    if (!st.ok()) return st;
  }
  if (pre_tokenizer) {
    st = pre_tokenizer->PreTokenize(&pieces, &scratch);
    if (!st.ok()) return st;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  for (const Piece& p : pieces) {
    if (p.id >= 0) {
      ids.push_back(p.id);
      continue;
    }
    st = model->Tokenize(p.text, &ids);
    if (!st.ok()) return st;
  }
  if (post_processor) post_processor->Process(&ids, add_special);
  return ids;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open tokenizer '", path, "': ",
                                            std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read tokenizer '", path, "'"));
  return FromJson(text.str(), path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json,
                                                               std::string what) {
  auto fail = [&](const absl::Status& st) { return Prefixed(st, what); };
  Json root;
  tok::BpeTables tables;
  absl::Status parsed = tok::ParseTokenizerJson(json, &root, &tables);
  if (!parsed.ok()) return fail(parsed);
  auto impl = std::make_unique<Impl>();
  impl->path = what;
  if (!root.is_object()) return fail(tok::JsonError("(root)", "expected an object"));
  if (const Json* version = tok::OptionalMember(root, "version")) {
    if (!version->is_string() || *version != "1.0")
      return fail(tok::JsonError("version", absl::StrCat("unknown version ",
                                                         tok::Describe(*version),
                                                         " (Kiln reads \"1.0\")")));
  }
  for (const char* key : {"truncation", "padding"}) {
    if (const Json* v = tok::OptionalMember(root, key)) {
      return fail(tok::JsonError(key, absl::StrCat(tok::Describe(*v), " is not supported (Kiln "
                                                   "encodes whole texts; it must be null)")));
    }
  }
  auto model = tok::Member(root, "model", "");
  if (!model.ok()) return fail(model.status());
  auto type = tok::GetType(**model, "model");
  if (!type.ok()) return fail(type.status());
  if (*type != "BPE") return fail(tok::Unsupported("model", "model", *type, "BPE"));
  auto bpe = tok::BpeModel::Parse(**model, "model", std::move(tables));
  if (!bpe.ok()) return fail(bpe.status());
  impl->model = std::move(*bpe);

  if (const Json* n = tok::OptionalMember(root, "normalizer")) {
    auto parsed = tok::ParseNormalizer(*n, "normalizer");
    if (!parsed.ok()) return fail(parsed.status());
    impl->normalizer = std::move(*parsed);
  }
  if (const Json* p = tok::OptionalMember(root, "pre_tokenizer")) {
    auto parsed = tok::ParsePreTokenizer(*p, "pre_tokenizer");
    if (!parsed.ok()) return fail(parsed.status());
    impl->pre_tokenizer = std::move(*parsed);
  }
  if (const Json* p = tok::OptionalMember(root, "post_processor")) {
    auto parsed = tok::ParsePostProcessor(*p, "post_processor");
    if (!parsed.ok()) return fail(parsed.status());
    impl->post_processor = std::move(*parsed);
  }
  if (const Json* d = tok::OptionalMember(root, "decoder")) {
    auto parsed = tok::ParseDecoder(*d, "decoder");
    if (!parsed.ok()) return fail(parsed.status());
    impl->decoder = std::move(*parsed);
  }
  // Rust regex's \w; in Oniguruma syntax for the newer Unicode assignments.
  auto word_char = tok::Regex::Compile(
      "[\\p{Alphabetic}\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]",
      tok::Regex::Syntax::kOniguruma);
  if (!word_char.ok()) return fail(word_char.status());
  impl->word_char = std::move(*word_char);
  static const Json kNoTokens = Json::array();
  const Json* added = tok::OptionalMember(root, "added_tokens");
  absl::Status st = impl->LoadAddedTokens(added ? *added : kNoTokens);
  if (!st.ok()) return fail(st);
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       const EncodeOptions& options) const {
  size_t bad = 0;
  if (!tok::IsValidUtf8(text, &bad)) {
    return absl::InvalidArgumentError(
        absl::StrCat("text to encode is not valid UTF-8 (byte ", bad, ")"));
  }
  return impl_->Encode(text, options.add_special_tokens);
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int32_t>& ids,
                                              const DecodeOptions& options) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* t = impl_->Token(id);
    if (!t) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", id, " is not in the vocabulary of ", impl_->path));
    }
    if (options.skip_special_tokens && impl_->special.contains(*t)) continue;
    tokens.push_back(*t);
  }
  if (!impl_->decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) absl::StrAppend(&out, i ? " " : "", tokens[i]);
    return out;
  }
  Scratch scratch;
  absl::Status st = impl_->decoder->DecodeChain(&tokens, &scratch);
  if (!st.ok()) return st;
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  auto it = impl_->added_ids.find(AV(token));
  if (it != impl_->added_ids.end()) return it->second;
  return impl_->model->TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  const std::string* t = impl_->Token(id);
  if (!t) return std::nullopt;
  return *t;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  auto it = impl_->added.find(id);
  return it != impl_->added.end() && it->second.token.special;
}

size_t Tokenizer::VocabSize() const { return impl_->vocab_size; }
const std::string& Tokenizer::path() const { return impl_->path; }

// StreamDecoder: Hugging Face's step_decode_stream.
StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, DecodeOptions options)
    : tokenizer_(&tokenizer), options_(options) {}

void StreamDecoder::Reset() {
  ids_.clear();
  prefix_.clear();
  prefix_index_ = 0;
}

absl::StatusOr<std::string> StreamDecoder::Step(int32_t id) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  auto ends_incomplete = [&](const std::string& s) {
    return absl::EndsWith(s, AV(kReplacement));
  };
  if (prefix_.empty() && !ids_.empty()) {
    auto prefix = tokenizer_->Decode(ids_, options_);
    if (!prefix.ok()) return prefix.status();
    if (!ends_incomplete(*prefix)) {
      prefix_ = std::move(*prefix);
      prefix_index_ = ids_.size();
    }
  }
  ids_.push_back(id);
  auto text = tokenizer_->Decode(ids_, options_);
  if (!text.ok()) {
    ids_.pop_back();
    return text.status();
  }
  if (text->size() <= prefix_.size() || ends_incomplete(*text)) return std::string();
  if (!absl::StartsWith(*text, prefix_)) {
    return absl::InternalError(absl::StrCat("stream decoding: '", *text,
                                            "' does not continue the text so far '", prefix_,
                                            "'"));
  }
  std::string chunk = text->substr(prefix_.size());
  size_t new_prefix_index = ids_.size() - prefix_index_;
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_index_));
  auto prefix = tokenizer_->Decode(ids_, options_);
  if (!prefix.ok()) return prefix.status();
  prefix_ = std::move(*prefix);
  prefix_index_ = new_prefix_index;
  return chunk;
}

}  // namespace kiln
