#include "tokenizer_bpe.h"

#include <algorithm>
#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tokenizer_unicode.h"

namespace kiln::tok {
namespace {

inline absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Ids beyond this are refused (the id -> token table is dense).
constexpr int64_t kMaxId = (1 << 24) - 1;

// An optional string member that Kiln supports only when absent or empty.
absl::Status CheckAbsent(const Json& model, const char* key, const std::string& path) {
  const Json* v = OptionalMember(model, key);
  if (!v || (v->is_string() && v->get_ref<const std::string&>().empty())) return absl::OkStatus();
  return JsonError(JoinPath(path, key), absl::StrCat(Describe(*v), " is not supported "
                                                     "(byte-level and SentencePiece-style BPE "
                                                     "have none)"));
}

absl::StatusOr<bool> OptionalBool(const Json& model, const char* key, const std::string& path) {
  return GetBool(model, key, path, false);
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Parse(const Json& model,
                                                         const std::string& path,
                                                         BpeTables tables) {
  std::unique_ptr<BpeModel> bpe(new BpeModel);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    absl::Status st = CheckAbsent(model, key, path);
    if (!st.ok()) return st;
  }
  if (const Json* dropout = OptionalMember(model, "dropout")) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      return JsonError(JoinPath(path, "dropout"),
                       absl::StrCat(Describe(*dropout), " is not supported (BPE dropout "
                                                        "samples merges at random)"));
    }
  }
  auto fuse = OptionalBool(model, "fuse_unk", path);
  auto fallback = OptionalBool(model, "byte_fallback", path);
  auto ignore = OptionalBool(model, "ignore_merges", path);
  for (const auto* s : {&fuse, &fallback, &ignore})
    if (!s->ok()) return s->status();
  bpe->fuse_unk_ = *fuse;
  bpe->byte_fallback_ = *fallback;
  bpe->ignore_merges_ = *ignore;
  if (const Json* unk = OptionalMember(model, "unk_token")) {
    if (!unk->is_string())
      return JsonError(JoinPath(path, "unk_token"), absl::StrCat("expected a string, got ",
                                                                 Describe(*unk)));
    bpe->unk_token_ = unk->get<std::string>();
  }

  // Vocabulary.
  std::string vpath = JoinPath(path, "vocab");
  if (!tables.has_vocab) return JsonError(vpath, "missing (an object of token: id)");
  bpe->vocab_.reserve(tables.vocab.size());
  int64_t max_id = -1;
  for (auto& [token, id] : tables.vocab) {
    if (id > static_cast<uint64_t>(kMaxId)) {
      return JsonError(JoinPath(vpath, token.c_str()),
                       absl::StrCat("id ", id, " is beyond Kiln's limit of ", kMaxId));
    }
    max_id = std::max<int64_t>(max_id, static_cast<int64_t>(id));
    // A repeated token keeps its last id, as in Hugging Face's map.
    bpe->vocab_[std::move(token)] = static_cast<int32_t>(id);
  }
  tables.vocab = {};
  bpe->by_id_.assign(static_cast<size_t>(max_id + 1), nullptr);
  for (const auto& [token, id] : bpe->vocab_) {
    if (const std::string* other = bpe->by_id_[id]) {
      return JsonError(vpath, absl::StrCat("tokens '", *other, "' and '", token,
                                           "' have the same id ", id));
    }
    bpe->by_id_[id] = &token;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = bpe->vocab_.find(absl::StrFormat("<0x%02X>", b));
    bpe->byte_ids_[b] = it == bpe->vocab_.end() ? -1 : it->second;
  }

  // Merges, ranked by position: [["a", "b"], ...] or the older ["a b", ...]
  // (where lines starting with "#version" do not count).
  std::string mpath = JoinPath(path, "merges");
  if (!tables.has_merges) return JsonError(mpath, "missing (an array of merges)");
  for (size_t i = 0; i < tables.merge_lines.size(); ++i) {
    const std::string& line = tables.merge_lines[i];
    if (line.compare(0, 8, "#version") == 0) continue;
    size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      return JsonError(IndexPath(mpath, i), absl::StrCat("expected \"A B\", got \"", line, "\""));
    tables.merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  bpe->merges_.reserve(tables.merges.size());
  std::string merged;
  for (size_t i = 0; i < tables.merges.size(); ++i) {
    const auto& [a, b] = tables.merges[i];
    merged.assign(a);
    merged.append(b);
    int32_t ids[3];
    const std::string* parts[3] = {&a, &b, &merged};
    for (int k = 0; k < 3; ++k) {
      auto it = bpe->vocab_.find(*parts[k]);
      if (it == bpe->vocab_.end()) {
        return JsonError(IndexPath(mpath, i),
                         absl::StrCat("token '", *parts[k], "' of merge [\"", a, "\", \"", b,
                                      "\"] is not in the vocabulary"));
      }
      ids[k] = it->second;
    }
    // A repeated pair takes its last rank, as in Hugging Face's merge map.
    bpe->merges_[PairKey(ids[0], ids[1])] = Merge{static_cast<int32_t>(i), ids[2]};
  }
  return bpe;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(AV(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= by_id_.size()) return nullptr;
  return by_id_[id];
}

absl::Status BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return absl::OkStatus();
  if (ignore_merges_) {
    auto it = vocab_.find(AV(word));
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return absl::OkStatus();
    }
  }
  bool cacheable = word.size() < kMaxCached;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(AV(word));
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return absl::OkStatus();
    }
  }
  std::vector<int32_t> word_ids;
  absl::Status st = MergeWord(word, &word_ids);
  if (!st.ok()) return st;
  ids->insert(ids->end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(word_ids));
  }
  return absl::OkStatus();
}

absl::Status BpeModel::MergeWord(std::string_view word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id, prev, next, len;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id, int32_t len) {
    int32_t n = static_cast<int32_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, len});
  };

  // One symbol per character: its token, else its bytes' <0xHH> tokens
  // (byte_fallback), else unk_token (one per run with fuse_unk), else nothing.
  int32_t unk_id = -1, unk_len = 0;  // a pending unk_token and its length
  for (size_t i = 0; i < word.size();) {
    int32_t len = static_cast<int32_t>(Utf8Length(static_cast<unsigned char>(word[i])));
    std::string_view c = word.substr(i, len);
    i += len;
    auto it = vocab_.find(AV(c));
    if (it != vocab_.end()) {
      if (unk_id >= 0) add(unk_id, unk_len);
      unk_id = -1;
      add(it->second, len);
      continue;
    }
    if (byte_fallback_ &&
        std::all_of(c.begin(), c.end(), [&](char b) { return byte_ids_[(unsigned char)b] >= 0; })) {
      // As in Hugging Face, a pending unk stays pending across these.
      for (char b : c) add(byte_ids_[static_cast<unsigned char>(b)], 1);
      continue;
    }
    if (!unk_token_) continue;
    if (unk_id >= 0 && fuse_unk_) {
      unk_len += len;
      continue;
    }
    auto unk_it = vocab_.find(*unk_token_);
    if (unk_it == vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model.unk_token '", *unk_token_,
                                                     "' is not in the vocabulary, and '", AV(c),
                                                     "' needs it"));
    }
    if (unk_id >= 0) add(unk_id, unk_len);
    unk_id = unk_it->second;
    unk_len = len;
  }
  if (unk_id >= 0) add(unk_id, unk_len);

  // Merges, lowest rank first and leftmost among equal ranks.
  struct Candidate {
    int32_t pos, rank, new_id;
  };
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
  const int32_t n = static_cast<int32_t>(symbols.size());
  auto push = [&](int32_t pos, int32_t left, int32_t right) {
    auto it = merges_.find(PairKey(left, right));
    if (it != merges_.end()) queue.push({pos, it->second.rank, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i, symbols[i].id, symbols[i + 1].id);
  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    Symbol right = symbols[cur.next];
    auto it = merges_.find(PairKey(cur.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // stale
    symbols[cur.next].len = 0;
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0) push(cur.prev, symbols[cur.prev].id, cur.id);
    if (cur.next >= 0) push(top.pos, cur.id, symbols[cur.next].id);
  }
  for (const Symbol& s : symbols)
    if (s.len != 0) ids->push_back(s.id);
  return absl::OkStatus();
}

}  // namespace kiln::tok
