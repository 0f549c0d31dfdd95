//===- KernelDialect.h - Kiln kernel dialect --------------------*- C++ -*-===//
#ifndef KILN_KERNEL_IR_KERNELDIALECT_H
#define KILN_KERNEL_IR_KERNELDIALECT_H

#include "kiln/Kernels/Kernels.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <cstdint>
#include <string>

namespace kiln::kernel {

/// What a kernel needs of the values of one of its operands
/// (KernelOpInterface::getOperandValueRange).
struct OperandValueRange {
  enum class Kind {
    Any,     ///< any value is safe: read as data, or not at all
    Range,   ///< memory is indexed with it: values in [min, max]
    Unknown, ///< memory may be indexed with it; the op does not say how
  };
  Kind kind = Kind::Any;
  int64_t min = 0, max = 0;
  /// Why the range is what it is, for the runtime's errors: "the KV cache
  /// holds 16 positions", "it indexes a table of 256 rows".
  std::string note;
  /// `max` comes from a cache's capacity (which a larger compile-time
  /// sequence length raises).
  bool capacity = false;
  /// For a start position (`capacity`): the positions one call covers
  /// from it, max = capacity - span. A token-major launch whose request
  /// gives fewer positions covers only those, so max grows by the shortfall.
  int64_t span = 0;
};

} // namespace kiln::kernel

#include "kernel/IR/KernelInterfaces.h.inc"
#include "kernel/IR/KernelOpsDialect.h.inc"

#define GET_OP_CLASSES
#include "kernel/IR/KernelOps.h.inc"

#endif // KILN_KERNEL_IR_KERNELDIALECT_H
