//===- Program.cpp - Building blocks of generated kernel programs ---------===//
#include "kiln/Kernels/Program.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;

namespace kiln::kernels {

Value ProgramBuilder::i64(int64_t v) {
  return arith::ConstantIntOp::create(b, loc, b.getI64Type(), v);
}
Value ProgramBuilder::f32(float v) {
  return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                        llvm::APFloat(v));
}
Value ProgramBuilder::f64(double v) {
  return arith::ConstantFloatOp::create(b, loc, b.getF64Type(),
                                        llvm::APFloat(v));
}
Value ProgramBuilder::toF64(Value v) {
  return arith::ExtFOp::create(b, loc, b.getF64Type(), v);
}
Value ProgramBuilder::toF32(Value v) {
  return arith::TruncFOp::create(b, loc, b.getF32Type(), v);
}
Value ProgramBuilder::sitofp(Value i, Type t) {
  return arith::SIToFPOp::create(b, loc, t, i);
}
Value ProgramBuilder::cos(Value a) { return math::CosOp::create(b, loc, a); }
Value ProgramBuilder::sin(Value a) { return math::SinOp::create(b, loc, a); }
Value ProgramBuilder::fmin(Value a, Value c) {
  return arith::MinimumFOp::create(b, loc, a, c);
}
Value ProgramBuilder::fgt(Value a, Value c) {
  return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, a, c);
}
Value ProgramBuilder::flt(Value a, Value c) {
  return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, a, c);
}
Value ProgramBuilder::feq(Value a, Value c) {
  return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, a, c);
}
Value ProgramBuilder::minI(Value a, Value c) {
  return arith::MinSIOp::create(b, loc, a, c);
}
Value ProgramBuilder::andI(Value a, Value c) {
  return arith::AndIOp::create(b, loc, a, c);
}
Value ProgramBuilder::loadPtr(Value table, Value index) {
  auto ptrTy = LLVM::LLVMPointerType::get(b.getContext());
  Value slot = LLVM::GEPOp::create(b, loc, ptrTy, ptrTy, table,
                                   ValueRange{index});
  return LLVM::LoadOp::create(b, loc, ptrTy, slot);
}
Value ProgramBuilder::dot(Value a, Type aType, Value aBase, Value bb,
                          Type bType, Value bBase, int64_t n) {
  return forLoop(i64(0), i64(n), i64(1), ValueRange{f32(0.0f)},
                 [&](Value i, ValueRange acc) {
                   Value x = load(a, aType, add(aBase, i));
                   Value y = load(bb, bType, add(bBase, i));
                   return SmallVector<Value>{fadd(acc[0], fmul(x, y), true)};
                 })[0];
}
Value ProgramBuilder::sigmoid(Value x) {
  return fdiv(f32(1.0f), fadd(f32(1.0f), exp(fsub(f32(0.0f), x))));
}

Value ProgramBuilder::add(Value a, Value c) {
  return arith::AddIOp::create(b, loc, a, c);
}
Value ProgramBuilder::mul(Value a, Value c) {
  return arith::MulIOp::create(b, loc, a, c);
}
Value ProgramBuilder::divs(Value a, Value c) {
  return arith::DivSIOp::create(b, loc, a, c);
}
Value ProgramBuilder::rems(Value a, Value c) {
  return arith::RemSIOp::create(b, loc, a, c);
}
Value ProgramBuilder::fadd(Value a, Value c, bool reassoc) {
  auto fm = reassoc ? arith::FastMathFlags::reassoc | arith::FastMathFlags::contract
                    : arith::FastMathFlags::none;
  return arith::AddFOp::create(b, loc, a, c, fm);
}
Value ProgramBuilder::fmul(Value a, Value c) {
  return arith::MulFOp::create(b, loc, a, c);
}
Value ProgramBuilder::fdiv(Value a, Value c) {
  return arith::DivFOp::create(b, loc, a, c);
}
Value ProgramBuilder::fsub(Value a, Value c) {
  return arith::SubFOp::create(b, loc, a, c);
}
Value ProgramBuilder::fmax(Value a, Value c) {
  return arith::MaximumFOp::create(b, loc, a, c);
}
Value ProgramBuilder::exp(Value a) { return math::ExpOp::create(b, loc, a); }
Value ProgramBuilder::sqrt(Value a) { return math::SqrtOp::create(b, loc, a); }
Value ProgramBuilder::lt(Value a, Value c) {
  return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, a, c);
}
Value ProgramBuilder::select(Value cond, Value a, Value c) {
  return arith::SelectOp::create(b, loc, cond, a, c);
}

Value ProgramBuilder::load(Value ptr, Type elemType, Value index) {
  auto ptrTy = LLVM::LLVMPointerType::get(b.getContext());
  Value addr = LLVM::GEPOp::create(b, loc, ptrTy, elemType, ptr,
                                   ValueRange{index});
  Value v = LLVM::LoadOp::create(b, loc, elemType, addr);
  if (isa<FloatType>(elemType) && !elemType.isF32())
    return arith::ExtFOp::create(b, loc, b.getF32Type(), v);
  if (auto it = dyn_cast<IntegerType>(elemType); it && it.getWidth() < 64)
    return arith::ExtSIOp::create(b, loc, b.getI64Type(), v);
  return v;
}

void ProgramBuilder::store(Value value, Value ptr, Type elemType, Value index) {
  auto ptrTy = LLVM::LLVMPointerType::get(b.getContext());
  if (isa<FloatType>(elemType) && value.getType() != elemType)
    value = arith::TruncFOp::create(b, loc, elemType, value);
  Value addr = LLVM::GEPOp::create(b, loc, ptrTy, elemType, ptr,
                                   ValueRange{index});
  LLVM::StoreOp::create(b, loc, value, addr);
}

SmallVector<Value> ProgramBuilder::forLoop(
    Value lo, Value hi, Value step, ValueRange init,
    function_ref<SmallVector<Value>(Value, ValueRange)> body) {
  auto loop = scf::ForOp::create(b, loc, lo, hi, step, init);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(loop.getBody());
  SmallVector<Value> yielded =
      body(loop.getInductionVar(), loop.getRegionIterArgs());
  // scf.for's builder adds an empty yield when there are no iter args.
  if (!init.empty())
    scf::YieldOp::create(b, loc, yielded);
  return SmallVector<Value>(loop.getResults());
}

void ProgramBuilder::forLoop(Value lo, Value hi, Value step,
                             function_ref<void(Value)> body) {
  auto loop = scf::ForOp::create(b, loc, lo, hi, step);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPoint(loop.getBody()->getTerminator());
  body(loop.getInductionVar());
}

void ProgramBuilder::ifThen(Value cond, function_ref<void()> then) {
  auto ifOp = scf::IfOp::create(b, loc, cond, /*withElseRegion=*/false);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
  then();
}

} // namespace kiln::kernels
