//===- HFConfig.h - config.json -> validated model description --*- C++ -*-===//
//
// Reads a Hugging Face config.json the way the transformers configuration
// class of its model_type does (LlamaConfig, MixtralConfig, DeepseekV2Config,
// DeepseekV3Config): both the transformers-5 form (`rope_parameters`) and the
// legacy top-level fields (`rope_theta`, `rope_scaling`), and the class's
// default for every absent field. Every value is validated before the graph
// is built: sizes are positive and within Kiln's limits, the architecture's
// divisibilities and orderings hold, every derived shape is computed with
// overflow-checked arithmetic, and the model's parameter count fits the
// documented cap. A field whose value Kiln does not implement is an error
// naming the field and its value. docs/config.md lists every field.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_MODELS_HFCONFIG_H
#define KILN_MODELS_HFCONFIG_H

#include "kiln/Models/HuggingFace.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Support/LLVM.h"
#include "llvm/Support/JSON.h"

#include <cstdint>
#include <string>

namespace kiln::models {

/// Kiln's limits on a model (docs/config.md, "Limits"). They bound what one
/// plan can describe and what a compile allocates, and are checked before
/// anything of the model's size is built.
struct ModelLimits {
  /// Any one size field (hidden_size, vocab_size, head dims, ranks, ...).
  static constexpr int64_t kMaxDim = int64_t(1) << 24;
  static constexpr int64_t kMaxLayers = 1024;
  /// Routed experts per MoE layer.
  static constexpr int64_t kMaxExperts = 4096;
  /// Routed expert instances over all layers (each is three weights).
  static constexpr int64_t kMaxExpertInstances = int64_t(1) << 17;
  /// Elements of any one tensor (weight, activation or cache).
  static constexpr int64_t kMaxTensorElements = int64_t(1) << 40;
  /// Parameters of the whole model (~2.2e12: DeepSeek-V3 has 6.7e11).
  static constexpr int64_t kMaxParameters = int64_t(1) << 41;
};

enum class Family { Llama, Mixtral, DeepseekV2, DeepseekV3 };

/// Rotary embedding, resolved to what the rope kernel computes.
struct RopeSpec {
  std::string type = "default"; ///< default, linear, dynamic or yarn
  double theta = 10000.0;
  int64_t dim = 0;         ///< rotary dims (head_dim or qk_rope_head_dim)
  bool interleaved = false;
  double linearFactor = 1.0; ///< linear: inv_freq / factor
  double yarnFactor = 1.0, yarnLow = 0.0, yarnHigh = 0.0;
  double attentionFactor = 1.0; ///< scales cos and sin
  /// DeepSeek: softmax scale multiplier (yarn_get_mscale(factor,
  /// mscale_all_dim)^2 for scaled ropes with mscale_all_dim, else 1).
  double softmaxMscale = 1.0;
};

struct MoESpec {
  int64_t experts = 0, topK = 0, ffn = 0, groups = 1, topkGroup = 1;
  std::string scoring = "softmax", groupScore = "top2_sum";
  bool norm = true;
  double scaling = 1.0;
  bool correctionBias = false;
  int64_t sharedExperts = 0; ///< DeepSeek shared experts (ffn each)
};

/// Everything the graph builder needs, validated: every size is positive
/// and every derived size below fits the limits.
struct ModelSpec {
  Family family;
  std::string modelType;
  int64_t vocab = 0, hidden = 0, layers = 0, heads = 0;
  double eps = 1e-6;
  bool tieEmbeddings = false;
  int64_t maxPositions = 0;
  std::string dtype = "bfloat16"; ///< default weight dtype (no checkpoint)
  bool attentionBias = false, mlpBias = false;
  int64_t intermediate = 0; ///< dense MLP width
  RopeSpec rope;
  // GQA (Llama, Mixtral).
  int64_t kvHeads = 0, headDim = 0;
  // MLA (DeepSeek).
  int64_t qLoraRank = 0; ///< 0: no query LoRA (q_proj)
  int64_t kvLoraRank = 0, qkNope = 0, qkRope = 0, vHead = 0;
  double softmaxScale = 1.0;
  // MoE: Mixtral on every layer; DeepSeek on layers >= firstDense.
  bool hasMoE = false;
  int64_t firstDense = 0;
  MoESpec moe;

  bool isDeepseek() const {
    return family == Family::DeepseekV2 || family == Family::DeepseekV3;
  }
  bool isMoELayer(int64_t i) const {
    return hasMoE && (family == Family::Mixtral || i >= firstDense);
  }
};

/// Parses and validates config.json (`root`, read from `path`) for a plan of
/// `options.batch` x `options.seq`. Errors are emitted at the config file's
/// location and name the field and its value.
mlir::FailureOr<ModelSpec> readModelSpec(mlir::MLIRContext &ctx,
                                         const llvm::json::Object &root,
                                         const std::string &path,
                                         const ImportOptions &options);

} // namespace kiln::models

#endif // KILN_MODELS_HFCONFIG_H
