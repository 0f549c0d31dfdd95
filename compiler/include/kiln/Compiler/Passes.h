//===- Passes.h - Kiln compiler passes and pipelines ------------*- C++ -*-===//
#ifndef KILN_COMPILER_PASSES_H
#define KILN_COMPILER_PASSES_H

#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

#include <string>

namespace kiln {

#define GEN_PASS_DECL
#include "kiln/Compiler/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "kiln/Compiler/Passes.h.inc"

/// Options of the graph -> kernel pipeline.
struct KilnPipelineOptions {
  int64_t minGemmPrograms = 64;
  /// Run the kernel-level fusion passes (kiln-fuse-slices,
  /// kiln-fuse-quantize, kiln-fuse-residual); `kiln-compile --no-fuse` turns
  /// them off to check fused against unfused plans.
  bool fuse = true;
  /// kiln-lower-moe's block-m (0: the heuristic).
  int64_t moeBlockM = 0;
  /// kiln-lower-mla's form: "auto", "absorbed" or "naive".
  std::string mlaForm = "auto";
};

/// Graph-level cleanup and verification (stage "graph").
void buildKilnGraphPipeline(mlir::OpPassManager &pm,
                            const KilnPipelineOptions &options);
/// Graph -> kernel dialect (stage "kernel").
void buildKilnKernelPipeline(mlir::OpPassManager &pm,
                             const KilnPipelineOptions &options);

/// Registers Kiln's passes and the `kiln-graph-pipeline`,
/// `kiln-kernel-pipeline` pipelines with the global registry (kiln-opt).
void registerKilnPassesAndPipelines();

} // namespace kiln

#endif // KILN_COMPILER_PASSES_H
