// Kiln tokenizers: a checkpoint's tokenizer.json, encoded and decoded exactly
// as the Hugging Face `tokenizers` library does.
//
//   auto tok = kiln::Tokenizer::Load("ckpt/tokenizer.json");     // absl::StatusOr
//   auto ids = (*tok)->Encode("Hello, world");                    // BOS added as the
//                                                                 // post-processor says
//   kiln::DecodeOptions skip;
//   skip.skip_special_tokens = true;
//   auto text = (*tok)->Decode(*ids, skip);
//
//   kiln::StreamDecoder stream(**tok);                            // generation
//   for (int32_t id : generated) std::cout << *stream.Step(id);   // whole UTF-8 only
//
// Supported (see docs/tokenizer.md): the BPE model (byte-level as DeepSeek,
// Llama 3, Qwen 2 ship it; SentencePiece-style with byte_fallback / fuse_unk as
// Llama 2, Mistral, Mixtral do); normalizers Sequence, NFC, NFD, NFKC, NFKD,
// Prepend, Replace, Strip; pre-tokenizers Sequence, Split, ByteLevel, Metaspace,
// Digits; post-processors TemplateProcessing, ByteLevel, Sequence; decoders
// Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip; added
// tokens with their special / normalized / lstrip / rstrip / single_word flags.
// Anything else in a tokenizer.json (another model type, an unknown component
// type, truncation or padding) is an error naming its JSON path and value.
//
// A Tokenizer is immutable after Load and thread-safe: share it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln {

struct EncodeOptions {
  // Applies the post-processor's template (e.g. DeepSeek's and Llama's BOS),
  // as `add_special_tokens=True` does in Hugging Face tokenizers.
  bool add_special_tokens = true;
};

struct DecodeOptions {
  // Drops the tokens marked "special" in added_tokens.
  bool skip_special_tokens = false;
};

class Tokenizer {
 public:
  // Reads and checks a tokenizer.json file.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);
  // The same from JSON text in memory; `what` names it in errors.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json,
                                                              std::string what = "<memory>");
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text` (UTF-8; invalid UTF-8 is an InvalidArgument error).
  // Added tokens in the text are recognized as Hugging Face does.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              const EncodeOptions& options = {}) const;
  // The text of `ids` through the decoder chain. An id that names no token is
  // an InvalidArgument error (Hugging Face skips it silently).
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids,
                                     const DecodeOptions& options = {}) const;

  // The id of a token (added tokens first, then the model's vocabulary), in
  // the model's alphabet: byte-level tokens spell a space as "Ġ".
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token of an id, as Hugging Face's id_to_token gives it.
  std::optional<std::string> IdToToken(int32_t id) const;
  // Whether `id` is an added token marked special (skipped by
  // skip_special_tokens).
  bool IsSpecial(int32_t id) const;
  // The number of distinct tokens, added ones included (Hugging Face's
  // get_vocab_size(with_added_tokens=True), `len(tokenizer)`).
  size_t VocabSize() const;
  // The file (or `what`) the tokenizer came from.
  const std::string& path() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Incremental decoding for streaming generation: each Step(id) returns the
// text that the ids so far add to what earlier steps returned, and only once
// it is complete UTF-8 (a multi-byte character split over byte-fallback or
// byte-level tokens is held back until its last byte arrives). The chunks
// concatenate to Decode(all ids) up to the held-back tail, and match Hugging
// Face's `DecodeStream` step by step. The Tokenizer must outlive it.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, DecodeOptions options = {});
  // The new text; empty when the ids so far end inside a character or add
  // nothing visible.
  absl::StatusOr<std::string> Step(int32_t id);
  // Forgets all ids (a new sequence).
  void Reset();

 private:
  const Tokenizer* tokenizer_;
  DecodeOptions options_;
  std::vector<int32_t> ids_;   // the ids still needed to decode what follows
  std::string prefix_;         // Decode(ids_[0, prefix_index_)), already returned
  size_t prefix_index_ = 0;
};

}  // namespace kiln
