//===- HuggingFace.h - Hugging Face checkpoints -> kiln graph ---*- C++ -*-===//
//
// Builds the kiln graph of a model from its config.json. Supported
// model_type values: deepseek_v3, deepseek_v2, llama, mixtral. Weight names
// are those of the published checkpoints; the compiler resolves them.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_MODELS_HUGGINGFACE_H
#define KILN_MODELS_HUGGINGFACE_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <cstdint>
#include <string>

namespace kiln::models {

/// --max-seq when not given: the config's max_position_embeddings, capped
/// here (a plan's memory grows with it; a request of fewer tokens costs
/// what it needs, so the cap is about memory, not speed).
inline constexpr int64_t kDefaultMaxSeq = 4096;

/// --prefill-chunk when not given: min(--max-seq, this). A plan whose
/// context is longer prefills in chunks (@forward for the first, @extend
/// for the rest), so its activations are sized by the chunk, not by the
/// context (docs/generation.md, "Chunked prefill").
inline constexpr int64_t kDefaultPrefillChunk = 4096;

struct ImportOptions {
  int64_t batch = 1; ///< --max-batch
  int64_t seq = 0;   ///< --max-seq; 0: min(max_position_embeddings, kDefaultMaxSeq)
  /// --prefill-chunk: tokens per row @forward and @extend take; 0:
  /// min(seq, kDefaultPrefillChunk). @extend exists when it is < seq.
  int64_t prefillChunk = 0;
  /// Element type of weights when there is no checkpoint (--no-weights):
  /// from config.json's torch_dtype.
  bool noWeights = false;
  /// --quantize=fp8-block: quantize the projections DeepSeek-V3 quantizes
  /// (attention, dense MLP, experts) to e4m3 128x128 blocks at compile time.
  /// FP8 checkpoints (quantization_config) are quantized as published.
  bool quantizeFP8 = false;
  /// --fp8-lm-head: in an FP8 model, the LM head too (DeepSeek's checkpoints
  /// keep it bf16): its weight quantized to e4m3 blocks at compile time, the
  /// final norm's output per 1x128 tile, as the other projections.
  bool fp8LmHead = false;
  /// --kv-cache-dtype: element type of the KV caches (the latent cache for
  /// MLA): bf16 (the default, half of f32's memory; values are rounded to
  /// nearest even when written), f32, or fp8 (MLA only: the latent as e4m3
  /// in 1 x 128 tiles with power-of-two f32 scales in a second cache, the
  /// rope key bf16; 656 bytes per token and layer at DeepSeek-V3's shape).
  enum class CacheType { BF16, F32, FP8 } cacheType = CacheType::BF16;
  /// --logits: `last` (the default) returns each batch row's logits at its
  /// last given position, [batch, vocab], and computes the last layer's MLP
  /// and the LM head for that position only; `all` returns [batch, seq,
  /// vocab] (decode: [batch, 1, vocab]).
  bool allLogits = false;
};

/// Parses `configPath` (config.json) and builds the model's @forward:
/// tokens (i32 [batch, chunk]) -> logits (f32 [batch, vocab], or [batch,
/// chunk, vocab] with allLogits), from position 0; @extend (when the chunk
/// is shorter than the context): the same at `position` ([batch] i32),
/// appending to the cache; and @decode (one token per row at `position`).
/// `weightDType` maps a weight name to its checkpoint dtype ("BF16", ...);
/// it returns "" for a missing tensor (reported by the compiler with the
/// name). Errors name the config field.
mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>>
importHuggingFace(mlir::MLIRContext &ctx, const std::string &configPath,
                  const ImportOptions &options,
                  const std::function<std::string(llvm::StringRef)> &weightDType);

} // namespace kiln::models

#endif // KILN_MODELS_HUGGINGFACE_H
