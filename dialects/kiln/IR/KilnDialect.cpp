//===- KilnDialect.cpp - Kiln graph dialect registration ------------------===//
#include "kiln/IR/KilnDialect.h"

using namespace mlir;
using namespace kiln::graph;

#include "kiln/IR/KilnOpsDialect.cpp.inc"

void KilnDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "kiln/IR/KilnOps.cpp.inc"
      >();
}
