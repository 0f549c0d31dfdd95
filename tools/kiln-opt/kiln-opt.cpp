//===- kiln-opt.cpp - Kiln's mlir-opt -------------------------------------===//
//
// Registers Kiln's dialects and passes plus the upstream dialects and passes
// that Kiln's pipelines use, so that every --dump-ir-dir stage can be parsed
// and re-run pass by pass.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Compiler.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  kiln::registerCompilerPasses();
  mlir::DialectRegistry registry;
  kiln::registerCompilerDialects(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "Kiln optimizer driver\n", registry));
}
