//===- Program.cpp - Building blocks of generated kernel programs ---------===//
#include "kiln/Kernels/Program.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <limits>

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

Value ProgramBuilder::fabs(Value x) { return math::AbsFOp::create(b, loc, x); }

Value ProgramBuilder::encodeE4M3(Value v) {
  // |v| saturated at 448 (NaN is not expected: callers divide by s > 0).
  auto i32 = b.getI32Type();
  auto cst = [&](int64_t c) {
    return arith::ConstantIntOp::create(b, loc, i32, c).getResult();
  };
  Value a = fmin(fabs(v), f32(448.0f));
  Value bits = arith::BitcastOp::create(b, loc, i32, v);
  Value sign = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, bits, cst(24)), cst(0x80));
  Value abits = arith::BitcastOp::create(b, loc, i32, a);
  // Normal range (a >= 2^-6): round the f32 mantissa to 3 bits, ties to
  // even, on the bit pattern; a carry propagates into the exponent. Then
  // rebias the exponent from 127 to 7: byte = (bits >> 20) - (120 << 3).
  Value lsb = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, abits, cst(20)), cst(1));
  Value rounded = arith::AddIOp::create(
      b, loc, abits, arith::AddIOp::create(b, loc, cst(0x7FFFF), lsb));
  Value normal = arith::SubIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, rounded, cst(20)), cst(960));
  normal = arith::MinSIOp::create(b, loc, normal, cst(0x7E));
  // Subnormals (a < 2^-6): k = round_even(a * 2^9) via the 2^23 trick.
  Value scaled = arith::AddFOp::create(
      b, loc, arith::MulFOp::create(b, loc, a, f32(512.0f)), f32(8388608.0f));
  Value sub = arith::SubIOp::create(
      b, loc, arith::BitcastOp::create(b, loc, i32, scaled), cst(0x4B000000));
  Value isNormal = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGE,
                                         a, f32(0.015625f));
  Value mag = arith::SelectOp::create(b, loc, isNormal, normal, sub);
  Value byte = arith::OrIOp::create(b, loc, mag, sign);
  return arith::TruncIOp::create(b, loc, b.getI8Type(), byte);
}

Value ProgramBuilder::roundUpPow2(Value x) {
  auto i32 = b.getI32Type();
  auto cst = [&](int64_t c) {
    return arith::ConstantIntOp::create(b, loc, i32, c).getResult();
  };
  // A nonzero mantissa carries into the exponent; the mantissa is cleared.
  Value bits = arith::BitcastOp::create(b, loc, i32, x);
  bits = arith::AndIOp::create(
      b, loc, arith::AddIOp::create(b, loc, bits, cst(0x007FFFFF)),
      cst(static_cast<int32_t>(0xFF800000u)));
  return arith::BitcastOp::create(b, loc, b.getF32Type(), bits);
}

Value ProgramBuilder::decodeE4M3(Value byte) {
  auto i32 = b.getI32Type();
  auto cst = [&](int64_t c) {
    return arith::ConstantIntOp::create(b, loc, i32, c).getResult();
  };
  Value u = arith::ExtUIOp::create(b, loc, i32, byte);
  Value sign = arith::ShLIOp::create(
      b, loc, arith::AndIOp::create(b, loc, u, cst(0x80)), cst(24));
  Value e = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, u, cst(3)), cst(15));
  Value m = arith::AndIOp::create(b, loc, u, cst(7));
  // Normal: exponent e - 7 + 127, mantissa m in the top 3 bits.
  Value normalBits = arith::OrIOp::create(
      b, loc,
      arith::ShLIOp::create(b, loc, arith::AddIOp::create(b, loc, e, cst(120)),
                            cst(23)),
      arith::ShLIOp::create(b, loc, m, cst(20)));
  Value normal = arith::BitcastOp::create(b, loc, b.getF32Type(), normalBits);
  // Subnormal: m * 2^-9.
  Value sub = arith::MulFOp::create(
      b, loc, arith::SIToFPOp::create(b, loc, b.getF32Type(), m),
      f32(0.001953125f));
  Value isSub = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, e,
                                      cst(0));
  Value mag = arith::SelectOp::create(b, loc, isSub, sub, normal);
  Value magBits = arith::BitcastOp::create(b, loc, i32, mag);
  Value value = arith::BitcastOp::create(
      b, loc, b.getF32Type(), arith::OrIOp::create(b, loc, magBits, sign));
  // 0x7F and 0xFF are NaN (e4m3fn has no infinities).
  Value isNaN = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::eq,
      arith::AndIOp::create(b, loc, u, cst(0x7F)), cst(0x7F));
  return arith::SelectOp::create(
      b, loc, isNaN, f32(std::numeric_limits<float>::quiet_NaN()), value);
}

Value ProgramBuilder::load(Value ptr, Type elemType, Value index) {
  auto ptrTy = LLVM::LLVMPointerType::get(b.getContext());
  if (isa<Float8E4M3FNType>(elemType)) {
    Value addr = LLVM::GEPOp::create(b, loc, ptrTy, b.getI8Type(), ptr,
                                     ValueRange{index});
    return decodeE4M3(LLVM::LoadOp::create(b, loc, b.getI8Type(), addr));
  }
  Value addr = LLVM::GEPOp::create(b, loc, ptrTy, elemType, ptr,
                                   ValueRange{index});
  Value v = LLVM::LoadOp::create(b, loc, elemType, addr);
  if (isa<FloatType>(elemType) && !elemType.isF32())
    return arith::ExtFOp::create(b, loc, b.getF32Type(), v);
  if (auto it = dyn_cast<IntegerType>(elemType); it && it.getWidth() < 64)
    return arith::ExtSIOp::create(b, loc, b.getI64Type(), v);
  return v;
}

Value ProgramBuilder::eq(Value a, Value c) {
  return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, a, c);
}
Value ProgramBuilder::ceilDivI(Value a, int64_t c) {
  return divs(add(a, i64(c - 1)), i64(c));
}

void ProgramBuilder::storeInt(Value value, Value ptr, Type intType,
                              Value index) {
  if (value.getType() != intType)
    value = arith::TruncIOp::create(b, loc, intType, value);
  store(value, ptr, intType, index);
}

ProgramBuilder::ColumnTile ProgramBuilder::columnTile(Value pid, int64_t n,
                                                      int64_t tile) {
  int64_t tiles = (n + tile - 1) / tile;
  Value begin = mul(rems(pid, i64(tiles)), i64(tile));
  return {divs(pid, i64(tiles)), begin, minI(add(begin, i64(tile)), i64(n))};
}

Value ProgramBuilder::atomicAddI32(Value ptr, Value index, Value delta) {
  auto ptrTy = LLVM::LLVMPointerType::get(b.getContext());
  Type i32 = b.getI32Type();
  Value addr = LLVM::GEPOp::create(b, loc, ptrTy, i32, ptr, ValueRange{index});
  Value d = arith::TruncIOp::create(b, loc, i32, delta);
  // Explicit fences around the atomic: NVPTX emits a relaxed `atom` for an
  // acq_rel atomicrmw, but lowers fences to `fence.acq_rel`.
  LLVM::FenceOp::create(b, loc, LLVM::AtomicOrdering::acq_rel);
  Value old = LLVM::AtomicRMWOp::create(b, loc, LLVM::AtomicBinOp::add, addr,
                                        d, LLVM::AtomicOrdering::acq_rel);
  LLVM::FenceOp::create(b, loc, LLVM::AtomicOrdering::acq_rel);
  return arith::ExtSIOp::create(b, loc, b.getI64Type(), old);
}

void ProgramBuilder::store(Value value, Value ptr, Type elemType, Value index) {
  auto ptrTy = LLVM::LLVMPointerType::get(b.getContext());
  if (isa<Float8E4M3FNType>(elemType)) {
    Value addr = LLVM::GEPOp::create(b, loc, ptrTy, b.getI8Type(), ptr,
                                     ValueRange{index});
    LLVM::StoreOp::create(b, loc, encodeE4M3(value), addr);
    return;
  }
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
