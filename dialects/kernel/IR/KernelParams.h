//===- KernelParams.h - What each kernel op computes, for code generation -===//
//
// The parameters of the program builders (kiln/Kernels/Kernels.h) that a
// kernel op's attributes and types imply. The dialect describes what a
// kernel computes; code generation (compiler/lib/Codegen/) builds programs
// from these.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_KERNEL_IR_KERNELPARAMS_H
#define KILN_KERNEL_IR_KERNELPARAMS_H

#include "kernel/IR/KernelDialect.h"
#include "kiln/Kernels/Kernels.h"

#include <optional>

namespace kiln::kernel {

/// Element types of the op's operands, then of its results.
llvm::SmallVector<mlir::Type> elemTypes(mlir::Operation *op);
/// Rows an rms_norm normalizes.
int64_t normRows(RMSNormOp op);
/// The elementwise `kind` attribute's value ("add", "mul", ...).
std::optional<kiln::kernels::ElementwiseKind>
parseElementwiseKind(llvm::StringRef kind);
kiln::kernels::RopeParams ropeParams(RopeOp op);
kiln::kernels::RopeParams latentRopeParams(LatentCacheWriteOp op);
kiln::kernels::AttentionParams attentionParams(AttentionOp op);
kiln::kernels::MLAParams mlaParams(MLAAttentionOp op);
kiln::kernels::MLAParams mlaNaiveParams(MLANaiveOp op);
kiln::kernels::MLAParams mlaQuantParams(MLAAttentionQuantOp op);
kiln::kernels::MoERouteParams routeParams(MoERouteOp op);

} // namespace kiln::kernel

#endif // KILN_KERNEL_IR_KERNELPARAMS_H
