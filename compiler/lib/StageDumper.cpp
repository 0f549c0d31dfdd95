//===- StageDumper.cpp - Numbered IR dumps --------------------------------===//
#include "kiln/Compiler/StageDumper.h"

#include "mlir/IR/OperationSupport.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;

namespace kiln {

std::string StageDumper::nextPath(llvm::StringRef name) {
  llvm::SmallString<256> p(dir);
  llvm::sys::path::append(p, llvm::formatv("{0:d2}-{1}", counter++, name).str());
  return p.str().str();
}

LogicalResult StageDumper::dump(llvm::StringRef stage, Operation *op) {
  if (!enabled())
    return success();
  std::string path = nextPath((stage + ".mlir").str());
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (ec)
    return op->emitError() << "cannot write IR dump " << path << ": "
                           << ec.message();
  op->print(os, OpPrintingFlags().enableDebugInfo(/*enable=*/true,
                                                  /*prettyForm=*/false));
  os << "\n";
  return success();
}

LogicalResult StageDumper::dumpText(llvm::StringRef name, llvm::StringRef text) {
  if (!enabled())
    return success();
  std::string path = nextPath(name);
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (ec) {
    llvm::errs() << "kiln-compile: error: cannot write " << path << ": "
                 << ec.message() << "\n";
    return failure();
  }
  os << text;
  return success();
}

} // namespace kiln
