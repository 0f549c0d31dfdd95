//===- Lowering.h - Pieces shared by the graph -> kernel lowerings -*- C++ -*-===//
//
// kiln-lower-to-kernels lowers every graph op; the MoE and MLA lowerings,
// which make the biggest choices (the experts' layout, the MLA form), are
// also passes of their own with options (kiln-lower-moe, kiln-lower-mla) so
// that a pipeline or a user can steer them. Their patterns live in their
// own files and are shared through these populate functions.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_COMPILER_CONVERSION_LOWERING_H
#define KILN_COMPILER_CONVERSION_LOWERING_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/PatternMatch.h"

namespace kiln {

/// The `fused_ops` attribute of a launch: the graph ops it computes.
inline mlir::ArrayAttr fusedOps(mlir::Builder &b,
                                llvm::ArrayRef<llvm::StringRef> names) {
  llvm::SmallVector<mlir::Attribute> attrs;
  for (llvm::StringRef n : names)
    attrs.push_back(b.getStringAttr(n));
  return b.getArrayAttr(attrs);
}

/// kiln.moe -> moe_route (with the permutation), grouped moe_up/moe_down,
/// moe_combine. `blockM` 0: chooseMoEBlockM.
void populateLowerMoEPatterns(mlir::RewritePatternSet &patterns,
                              int64_t minGemmPrograms, int64_t blockM);

/// Which MLA form kiln.mla_attention lowers to.
enum class MLAForm { Auto, Absorbed, Naive };
/// Parses "auto", "absorbed" or "naive".
std::optional<MLAForm> parseMLAForm(llvm::StringRef s);
/// kiln.mla_attention -> mla_attention (absorbed) or gemm + mla_naive.
/// Auto: preferNaiveMLA (with a block-quantized kv_b the naive form quantizes
/// the latent for gemm_fp8).
void populateLowerMLAPatterns(mlir::RewritePatternSet &patterns,
                              int64_t minGemmPrograms, MLAForm form);

} // namespace kiln

#endif // KILN_COMPILER_CONVERSION_LOWERING_H
