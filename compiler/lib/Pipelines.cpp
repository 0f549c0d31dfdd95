//===- Pipelines.cpp - Kiln pass pipelines --------------------------------===//
//
// Pipelines are functions shared by kiln-compile and kiln-opt.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace kiln {

void buildKilnGraphPipeline(mlir::OpPassManager &pm,
                            const KilnPipelineOptions &) {
  pm.addPass(createKilnVerifyModel());
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
}

void buildKilnKernelPipeline(mlir::OpPassManager &pm,
                             const KilnPipelineOptions &options) {
  // Graph-level fusion first: it changes what the MoE lowering emits.
  if (options.fuse)
    pm.addPass(createKilnFoldSharedExperts());
  KilnLowerMoEOptions moe;
  moe.minGemmPrograms = options.minGemmPrograms;
  moe.blockM = options.moeBlockM;
  pm.addPass(createKilnLowerMoE(moe));
  KilnLowerMLAOptions mla;
  mla.minGemmPrograms = options.minGemmPrograms;
  mla.form = options.mlaForm;
  pm.addPass(createKilnLowerMLA(mla));
  KilnLowerToKernelsOptions lower;
  lower.minGemmPrograms = options.minGemmPrograms;
  pm.addPass(createKilnLowerToKernels(lower));
  pm.addPass(mlir::createCSEPass());
  if (!options.fuse)
    return;
  pm.addPass(createKilnFuseSlices());
  pm.addPass(createKilnFuseRope());
  pm.addPass(createKilnFuseGatedMLP());
  KilnMergeProjectionsOptions merge;
  merge.minGemmPrograms = options.minGemmPrograms;
  pm.addPass(createKilnMergeProjections(merge));
  pm.addPass(createKilnFuseQuantize());
  pm.addPass(createKilnFuseResidual());
  pm.addPass(createKilnFuseCacheWrites());
}

void registerKilnPassesAndPipelines() {
  registerKilnPasses();
  mlir::PassPipelineRegistration<>(
      "kiln-graph-pipeline", "Verify and clean up a kiln graph",
      [](mlir::OpPassManager &pm) {
        buildKilnGraphPipeline(pm, KilnPipelineOptions{});
      });
  mlir::PassPipelineRegistration<>(
      "kiln-kernel-pipeline", "Lower a kiln graph to kiln_kernel launches",
      [](mlir::OpPassManager &pm) {
        buildKilnKernelPipeline(pm, KilnPipelineOptions{});
      });
}

} // namespace kiln
