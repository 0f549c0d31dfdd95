//===- KernelOps.cpp - Kernel ops: verifiers and KernelOpInterface --------===//
//
// Each launch op binds its static shape parameters to a kernel builder in
// kernels/. Dimensions that vary between launches (rows) only set the grid,
// so the kernel name -- and the code -- is shared across layers.
//
//===----------------------------------------------------------------------===//
#include "kernel/IR/KernelDialect.h"

#include "kiln/Kernels/Kernels.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/Support/FormatVariadic.h"

#include <cctype>

using namespace mlir;
using namespace kiln::kernel;
namespace kk = kiln::kernels;

namespace {

RankedTensorType ranked(Value v) {
  return cast<RankedTensorType>(v.getType());
}
Type elem(Value v) { return ranked(v).getElementType(); }
int64_t numel(Value v) { return ranked(v).getNumElements(); }
int64_t lastDim(Value v) { return ranked(v).getShape().back(); }

std::string typeName(Type t) {
  std::string s;
  llvm::raw_string_ostream os(s);
  t.print(os);
  return s;
}

std::string typeSig(Operation *op) {
  std::string s;
  for (Value v : op->getOperands())
    s += "_" + typeName(elem(v));
  for (Value v : op->getResults())
    s += "_" + typeName(elem(v));
  return s;
}

/// Kernel names are symbols on both targets: [A-Za-z0-9_] only.
std::string symbolSafe(std::string s) {
  std::string out;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_')
      out += c;
    else if (c == '.')
      out += 'p';
    else if (c == '-')
      out += 'm';
  }
  return out;
}

LogicalResult verifyStatic(Operation *op) {
  for (Value v : op->getOperands())
    if (!ranked(v).hasStaticShape())
      return op->emitOpError("operands must be statically shaped");
  for (Value v : op->getResults())
    if (!ranked(v).hasStaticShape())
      return op->emitOpError("results must be statically shaped");
  return success();
}

} // namespace

//===----------------------------------------------------------------------===//
// gather_rows
//===----------------------------------------------------------------------===//

LogicalResult GatherRowsOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (ranked(getTable()).getRank() != 2)
    return emitOpError("table must be 2-D");
  if (!isa<IntegerType>(elem(getIds())))
    return emitOpError("ids must be integers");
  if (numel(getResult()) != numel(getIds()) * lastDim(getTable()))
    return emitOpError("result must hold one table row per id");
  return success();
}
std::string GatherRowsOp::getKernelName() {
  return llvm::formatv("gather_rows_v{0}_c{1}{2}",
                       ranked(getTable()).getDimSize(0), lastDim(getTable()),
                       typeSig(*this));
}
std::string GatherRowsOp::getTileConfig() { return "program=row"; }
int64_t GatherRowsOp::getNumPrograms() { return numel(getIds()); }
SmallVector<int64_t> GatherRowsOp::getLaunchScalars() { return {}; }
unsigned GatherRowsOp::getNumKernelScalars() { return 0; }
void GatherRowsOp::emitProgram(OpBuilder &b, const kk::ProgramArgs &args) {
  kk::emitGatherRowsProgram(b, args, ranked(getTable()).getDimSize(0),
                            lastDim(getTable()), elem(getTable()),
                            elem(getIds()), elem(getResult()));
}

//===----------------------------------------------------------------------===//
// rms_norm
//===----------------------------------------------------------------------===//

LogicalResult RMSNormOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (ranked(getWeight()).getRank() != 1 ||
      lastDim(getWeight()) != lastDim(getInput()))
    return emitOpError("weight must be 1-D with the input's row width");
  if (ranked(getResult()).getShape() != ranked(getInput()).getShape())
    return emitOpError("result must have the input's shape");
  return success();
}
std::string RMSNormOp::getKernelName() {
  std::string eps = llvm::formatv("{0:e}", getEpsilon().convertToFloat());
  return llvm::formatv("rms_norm_c{0}_eps{1}{2}", lastDim(getInput()),
                       symbolSafe(eps), typeSig(*this));
}
std::string RMSNormOp::getTileConfig() { return "program=row"; }
int64_t RMSNormOp::getNumPrograms() {
  return numel(getInput()) / lastDim(getInput());
}
SmallVector<int64_t> RMSNormOp::getLaunchScalars() { return {}; }
unsigned RMSNormOp::getNumKernelScalars() { return 0; }
void RMSNormOp::emitProgram(OpBuilder &b, const kk::ProgramArgs &args) {
  kk::emitRMSNormProgram(b, args, lastDim(getInput()),
                         getEpsilon().convertToFloat(), elem(getInput()),
                         elem(getWeight()), elem(getResult()));
}

//===----------------------------------------------------------------------===//
// gemm
//===----------------------------------------------------------------------===//

LogicalResult GemmOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto w = ranked(getWeight());
  if (w.getRank() != 2 || w.getDimSize(1) != lastDim(getInput()))
    return emitOpError("weight must be [N, K] with K the input's row width");
  if (lastDim(getResult()) != w.getDimSize(0) ||
      numel(getResult()) / w.getDimSize(0) !=
          numel(getInput()) / lastDim(getInput()))
    return emitOpError("result must be [M, N]");
  return success();
}
std::string GemmOp::getKernelName() {
  auto w = ranked(getWeight());
  return llvm::formatv("gemm_n{0}_k{1}_tn{2}{3}", w.getDimSize(0),
                       w.getDimSize(1), getTileN(), typeSig(*this));
}
std::string GemmOp::getTileConfig() {
  return llvm::formatv("program=row x {0} cols; tile_n={0}", getTileN());
}
int64_t GemmOp::getNumPrograms() {
  int64_t n = ranked(getWeight()).getDimSize(0);
  int64_t m = numel(getInput()) / lastDim(getInput());
  return m * ((n + getTileN() - 1) / getTileN());
}
SmallVector<int64_t> GemmOp::getLaunchScalars() { return {}; }
unsigned GemmOp::getNumKernelScalars() { return 0; }
void GemmOp::emitProgram(OpBuilder &b, const kk::ProgramArgs &args) {
  auto w = ranked(getWeight());
  kk::emitGemmProgram(b, args, w.getDimSize(0), w.getDimSize(1), getTileN(),
                      elem(getInput()), elem(getWeight()), elem(getResult()));
}

//===----------------------------------------------------------------------===//
// elementwise
//===----------------------------------------------------------------------===//

static std::optional<kk::ElementwiseKind> parseKind(StringRef s) {
  if (s == "add")
    return kk::ElementwiseKind::Add;
  if (s == "mul")
    return kk::ElementwiseKind::Mul;
  if (s == "swiglu")
    return kk::ElementwiseKind::SwiGLU;
  return std::nullopt;
}

LogicalResult ElementwiseOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (!parseKind(getKind()))
    return emitOpError() << "unknown kind \"" << getKind()
                         << "\" (expected add, mul or swiglu)";
  if (numel(getLhs()) != numel(getRhs()) ||
      numel(getLhs()) != numel(getResult()))
    return emitOpError("operands and result must have the same size");
  return success();
}
std::string ElementwiseOp::getKernelName() {
  return llvm::formatv("ew_{0}_b{1}{2}", getKind(), getBlock(),
                       typeSig(*this));
}
std::string ElementwiseOp::getTileConfig() {
  return llvm::formatv("program={0} elements", getBlock());
}
int64_t ElementwiseOp::getNumPrograms() {
  return (numel(getResult()) + getBlock() - 1) / getBlock();
}
SmallVector<int64_t> ElementwiseOp::getLaunchScalars() {
  return {numel(getResult())};
}
unsigned ElementwiseOp::getNumKernelScalars() { return 1; }
void ElementwiseOp::emitProgram(OpBuilder &b, const kk::ProgramArgs &args) {
  kk::emitElementwiseProgram(b, args, *parseKind(getKind()), getBlock(),
                             elem(getLhs()), elem(getRhs()), elem(getResult()));
}

//===----------------------------------------------------------------------===//
// view
//===----------------------------------------------------------------------===//

LogicalResult ViewOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (numel(getInput()) != numel(getResult()) ||
      elem(getInput()) != elem(getResult()))
    return emitOpError("a view keeps the element type and the element count");
  return success();
}

#define GET_OP_CLASSES
#include "kernel/IR/KernelOps.cpp.inc"
