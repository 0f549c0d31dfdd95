//===- KernelDialect.h - Kiln kernel dialect --------------------*- C++ -*-===//
#ifndef KILN_KERNEL_IR_KERNELDIALECT_H
#define KILN_KERNEL_IR_KERNELDIALECT_H

#include "kiln/Kernels/Kernels.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "kernel/IR/KernelInterfaces.h.inc"
#include "kernel/IR/KernelOpsDialect.h.inc"

#define GET_OP_CLASSES
#include "kernel/IR/KernelOps.h.inc"

#endif // KILN_KERNEL_IR_KERNELDIALECT_H
