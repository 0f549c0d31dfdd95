//===- KernelDialect.cpp - Kiln kernel dialect registration ---------------===//
#include "kernel/IR/KernelDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace kiln::kernel;

#include "kernel/IR/KernelInterfaces.cpp.inc"
#include "kernel/IR/KernelOpsDialect.cpp.inc"

void KilnKernelDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "kernel/IR/KernelOps.cpp.inc"
      >();
}
