//===- GenerationAssets.h - Tokenizer and generation defaults ---*- C++ -*-===//
//
// What a Hugging Face checkpoint directory gives for generation besides the
// model: tokenizer.json (carried into the plan, embedded) and the generation
// defaults (end-of-sequence and beginning-of-sequence ids, sampling) as
// transformers reads them. See docs/plan-format.md, "Generation assets".
//
//===----------------------------------------------------------------------===//
#ifndef KILN_COMPILER_GENERATIONASSETS_H
#define KILN_COMPILER_GENERATIONASSETS_H

#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kiln {

struct GenerationAssets {
  /// tokenizer.json's bytes, when the directory has one that the runtime's
  /// tokenizer loads.
  std::optional<std::string> tokenizerJson;
  std::string tokenizerSource;
  /// Why a tokenizer.json present in the directory is not carried (the
  /// runtime tokenizer's error); empty otherwise.
  std::string tokenizerSkipped;

  std::vector<int32_t> eosTokenIds;
  std::string eosSource;
  int32_t bosTokenId = -1;
  std::string bosSource;
  bool doSample = false;
  float temperature = 1.0f;
  int32_t topK = 50;
  float topP = 1.0f;
};

/// Reads `dir`'s tokenizer.json, generation_config.json, config.json and
/// tokenizer_config.json. Missing files are not errors; malformed ones, and
/// values out of range (an eos id outside the model's vocabulary, a negative
/// temperature), are, naming the file and the field.
llvm::Expected<GenerationAssets> readGenerationAssets(const std::string &dir);

} // namespace kiln

#endif // KILN_COMPILER_GENERATIONASSETS_H
