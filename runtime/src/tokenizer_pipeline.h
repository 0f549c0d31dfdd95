// The stages of a tokenizer.json around its model (internal): normalizers,
// pre-tokenizers, post-processors and decoders, each parsed from its JSON and
// applied as Hugging Face tokenizers applies it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tokenizer_json.h"
#include "tokenizer_regex.h"

namespace kiln::tok {

// One piece of the text being encoded (Hugging Face's Split of a
// PreTokenizedString).
struct Piece {
  std::string text;
  int32_t id = -1;         // an added token's id; -1: text for the model
  bool at_origin = false;  // starts at offset 0 of the input (Metaspace "first")
};
using Pieces = std::vector<Piece>;

// Scratch state of one Encode or Decode call.
struct Scratch {
  RegexScratch regex;
};

// Hugging Face's SplitDelimiterBehavior.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Appends the non-empty pieces that `spans` (covering piece.text) and
// `behavior` make of `piece`.
void SplitPiece(const Piece& piece, const std::vector<Span>& spans, SplitBehavior behavior,
                Pieces* out);
// The text with every match of `regex` replaced by `content`.
absl::StatusOr<std::string> ReplaceMatches(const Regex& regex, const std::string& text,
                                           const std::string& content, Scratch* scratch);

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual absl::Status Normalize(std::string* text, Scratch* scratch) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits and rewrites the pieces that are still text (id < 0).
  virtual absl::Status PreTokenize(Pieces* pieces, Scratch* scratch) const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // The final ids of one sequence.
  virtual void Process(std::vector<int32_t>* ids, bool add_special_tokens) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Hugging Face's decode_chain: tokens in, tokens out (joined by the caller).
  virtual absl::Status DecodeChain(std::vector<std::string>* tokens, Scratch* scratch) const = 0;
};

// Each parses the component object at `path` (never null).
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& json,
                                                            const std::string& path);
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& json,
                                                                const std::string& path);
absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(const Json& json,
                                                                  const std::string& path);
absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const Json& json, const std::string& path);

// The fields that Metaspace has as a pre-tokenizer and as a decoder.
enum class PrependScheme { kFirst, kNever, kAlways };
struct MetaspaceConfig {
  std::string replacement = "\xE2\x96\x81";  // one character, U+2581 by default
  PrependScheme scheme = PrependScheme::kAlways;
  bool split = true;
};
absl::StatusOr<MetaspaceConfig> ParseMetaspace(const Json& json, const std::string& path);

// A Split/Replace "pattern" object: {"String": s} or {"Regex": r}.
absl::StatusOr<std::unique_ptr<Regex>> ParsePattern(const Json& obj, const std::string& path);

}  // namespace kiln::tok
