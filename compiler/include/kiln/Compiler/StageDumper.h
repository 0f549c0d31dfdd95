//===- StageDumper.h - Numbered IR dumps per compilation stage --*- C++ -*-===//
#ifndef KILN_COMPILER_STAGEDUMPER_H
#define KILN_COMPILER_STAGEDUMPER_H

#include "mlir/IR/Operation.h"
#include "llvm/ADT/StringRef.h"

#include <string>

namespace kiln {

/// Writes "NN-stage.ext" files into a directory (--dump-ir-dir); a no-op
/// when no directory is set. IR is printed with locations so every op maps
/// back to the model.
class StageDumper {
public:
  explicit StageDumper(std::string dir = "") : dir(std::move(dir)) {}
  bool enabled() const { return !dir.empty(); }
  /// Dumps `op` as "NN-<stage>.mlir".
  mlir::LogicalResult dump(llvm::StringRef stage, mlir::Operation *op);
  /// Dumps raw text as "NN-<name>" (name carries its extension).
  mlir::LogicalResult dumpText(llvm::StringRef name, llvm::StringRef text);

private:
  std::string nextPath(llvm::StringRef name);
  std::string dir;
  unsigned counter = 0;
};

} // namespace kiln

#endif // KILN_COMPILER_STAGEDUMPER_H
