// The BPE model of tokenizer.json (internal): vocabulary, merge ranks, and
// Hugging Face's merge order (lowest rank first, leftmost on ties), with
// byte_fallback, unk_token / fuse_unk and ignore_merges, and a cache of the
// ids of frequent pre-tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tokenizer_json.h"

namespace kiln::tok {

class BpeModel {
 public:
  // Parses the "model" object at `path`, whose vocab and merges are in `tables`.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Parse(const Json& model,
                                                         const std::string& path,
                                                         BpeTables tables);

  // Appends the ids of one pre-token.
  absl::Status Tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // nullptr when no token has `id`.
  const std::string* IdToToken(int32_t id) const;
  // The number of entries of the vocabulary.
  size_t size() const { return vocab_.size(); }

 private:
  BpeModel() = default;
  // Hugging Face's merge_word + merge_all.
  absl::Status MergeWord(std::string_view word, std::vector<int32_t>* ids) const;

  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<const std::string*> by_id_;  // into vocab_'s keys (stable once built)
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::optional<std::string> unk_token_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];  // the ids of "<0xHH>", or -1

  // Pre-token -> ids, for pre-tokens shorter than kMaxCached bytes, up to
  // kCacheCapacity entries (as Hugging Face's BPE cache).
  static constexpr size_t kMaxCached = 256;
  static constexpr size_t kCacheCapacity = 1 << 16;
  mutable std::mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace kiln::tok
