//===- Rebuild.h - Recreate a kernel op with changes ------------*- C++ -*-===//
//
// Fusion patterns often recreate an op with one operand or attribute
// changed, or as a sibling op with the same operands (mla_attention ->
// mla_attention_quant). Copying the attribute dictionary keeps every
// attribute (and operand segment sizes) that the pattern does not mean to
// change, including ones added to the op later.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_COMPILER_CONVERSION_REBUILD_H
#define KILN_COMPILER_CONVERSION_REBUILD_H

#include "mlir/IR/PatternMatch.h"

namespace kiln {

/// The `fused_ops` of a launch built from `parts` (their lists in order).
inline mlir::ArrayAttr concatFusedOps(mlir::Builder &b,
                                      llvm::ArrayRef<mlir::ArrayAttr> parts) {
  llvm::SmallVector<mlir::Attribute> all;
  for (mlir::ArrayAttr part : parts)
    all.append(part.begin(), part.end());
  return b.getArrayAttr(all);
}

/// Creates op `name` with `operands` and `results`, and `op`'s attributes
/// with `set` overriding (or adding) entries by name.
inline mlir::Operation *
rebuildOp(mlir::PatternRewriter &rw, mlir::Operation *op, mlir::Location loc,
          llvm::StringRef name, mlir::ValueRange operands,
          mlir::TypeRange results,
          llvm::ArrayRef<mlir::NamedAttribute> set = {}) {
  mlir::OperationState state(loc, name);
  state.addOperands(operands);
  state.addTypes(results);
  mlir::NamedAttrList attrs(op->getAttrDictionary());
  for (const mlir::NamedAttribute &a : set)
    attrs.set(a.getName(), a.getValue());
  state.addAttributes(attrs);
  return rw.create(state);
}

/// The same op with `operands` and `set` applied.
inline mlir::Operation *rebuildOp(mlir::PatternRewriter &rw,
                                  mlir::Operation *op, mlir::Location loc,
                                  mlir::ValueRange operands,
                                  llvm::ArrayRef<mlir::NamedAttribute> set) {
  return rebuildOp(rw, op, loc, op->getName().getStringRef(), operands,
                   op->getResultTypes(), set);
}

} // namespace kiln

#endif // KILN_COMPILER_CONVERSION_REBUILD_H
