//===- Kernels.h - Kernel builders per op family ----------------*- C++ -*-===//
//
// Each builder emits one program of its kernel. Shapes that vary between
// launches of the same kernel (the number of rows) are not baked in: they
// determine the grid, so one kernel serves every layer and batch size.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_KERNELS_KERNELS_H
#define KILN_KERNELS_KERNELS_H

#include "kiln/Kernels/Program.h"

#include "mlir/IR/Types.h"
#include "llvm/ADT/StringRef.h"

namespace kiln::kernels {

/// Element-wise binary ops over a flat range; each program handles
/// `block` consecutive elements. Scalars: [total elements].
enum class ElementwiseKind { Add, Mul, SwiGLU };
llvm::StringRef stringifyElementwiseKind(ElementwiseKind kind);
void emitElementwiseProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                            ElementwiseKind kind, int64_t block,
                            mlir::Type lhsType, mlir::Type rhsType,
                            mlir::Type outType);

/// out[row, :] = table[ids[row], :] (zeros when the id is out of range).
/// One program per row. Buffers: table, ids, out.
void emitGatherRowsProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                           int64_t vocab, int64_t cols, mlir::Type tableType,
                           mlir::Type idType, mlir::Type outType);

/// RMSNorm of one row: out = x * rsqrt(mean(x^2) + eps) * w.
/// One program per row. Buffers: x, w, out.
void emitRMSNormProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                        int64_t cols, float eps, mlir::Type xType,
                        mlir::Type wType, mlir::Type outType);

/// out[m, n] = sum_k x[m, k] * w[n, k]: one program per (row, tile of
/// `tileN` columns), fp32 accumulation. Buffers: x, w, out.
void emitGemmProgram(mlir::OpBuilder &b, const ProgramArgs &args, int64_t n,
                     int64_t k, int64_t tileN, mlir::Type xType,
                     mlir::Type wType, mlir::Type outType);

} // namespace kiln::kernels

#endif // KILN_KERNELS_KERNELS_H
