//===- Vector.cpp - SIMD building blocks of the CPU emitters --------------===//
#include "Vector.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <limits>

using namespace mlir;

namespace kiln::cpu {

VectorType VectorBuilder::f32Vec(int64_t lanes) {
  return VectorType::get({lanes}, b.getF32Type());
}

Value VectorBuilder::splat(float v, int64_t lanes) {
  return arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(f32Vec(lanes), b.getF32FloatAttr(v)));
}

Value VectorBuilder::broadcast(Value scalar, int64_t lanes) {
  return vector::BroadcastOp::create(b, loc, f32Vec(lanes), scalar);
}

Value VectorBuilder::gep(Value ptr, Type elemType, Value index) {
  auto ptrTy = LLVM::LLVMPointerType::get(b.getContext());
  return LLVM::GEPOp::create(b, loc, ptrTy, elemType, ptr, ValueRange{index});
}

Value VectorBuilder::mask(int64_t lanes, int64_t active) {
  SmallVector<bool> bits(lanes, false);
  for (int64_t i = 0; i < active; ++i)
    bits[i] = true;
  auto type = VectorType::get({lanes}, b.getI1Type());
  return arith::ConstantOp::create(b, loc,
                                   DenseElementsAttr::get(type, bits));
}

Value VectorBuilder::load(Value ptr, Type elemType, Value index, int64_t lanes,
                          int64_t active) {
  bool masked = active >= 0 && active < lanes;
  // 16-bit floats are read as i16 lanes: masked loads of i16 are plain
  // AVX-512BW, and the widening below is explicit.
  Type storage = elemType.isF32() ? elemType : Type(b.getI16Type());
  auto vecTy = VectorType::get({lanes}, storage);
  unsigned align = elemType.isF32() ? 4 : 2;
  Value addr = gep(ptr, elemType, index);
  Value raw;
  if (masked) {
    Value zero = arith::ConstantOp::create(
        b, loc,
        DenseElementsAttr::get(vecTy, elemType.isF32()
                                          ? Attribute(b.getF32FloatAttr(0))
                                          : Attribute(b.getI16IntegerAttr(0))));
    raw = LLVM::MaskedLoadOp::create(b, loc, vecTy, addr, mask(lanes, active),
                                     zero, b.getI32IntegerAttr(align),
                                     /*nontemporal=*/nullptr);
  } else {
    raw = LLVM::LoadOp::create(b, loc, vecTy, addr, align);
  }
  if (elemType.isF32())
    return raw;
  if (elemType.isBF16()) {
    // bf16 is the top half of an f32: widen and shift.
    auto i32Vec = VectorType::get({lanes}, b.getI32Type());
    Value wide = arith::ExtUIOp::create(b, loc, i32Vec, raw);
    Value sixteen = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(i32Vec, b.getI32IntegerAttr(16)));
    return arith::BitcastOp::create(b, loc, f32Vec(lanes),
                                    arith::ShLIOp::create(b, loc, wide,
                                                          sixteen));
  }
  // f16: vcvtph2ps.
  Value half = LLVM::BitcastOp::create(
      b, loc, VectorType::get({lanes}, b.getF16Type()), raw);
  return arith::ExtFOp::create(b, loc, f32Vec(lanes), half);
}

void VectorBuilder::store(Value v, Value ptr, Type elemType, Value index) {
  int64_t lanes = cast<VectorType>(v.getType()).getDimSize(0);
  if (!elemType.isF32())
    v = arith::TruncFOp::create(b, loc, VectorType::get({lanes}, elemType), v);
  unsigned align = elemType.isF32() ? 4 : 2;
  LLVM::StoreOp::create(b, loc, v, gep(ptr, elemType, index), align);
}

void VectorBuilder::storeBits(Value v, Value ptr, Value byteOffset) {
  LLVM::StoreOp::create(b, loc, v, gep(ptr, b.getI8Type(), byteOffset), 64);
}

Value VectorBuilder::loadBits(Value ptr, Value byteOffset, VectorType type) {
  return LLVM::LoadOp::create(b, loc, type, gep(ptr, b.getI8Type(), byteOffset),
                              64);
}

Value VectorBuilder::fma(Value a, Value x, Value acc) {
  return vector::FMAOp::create(b, loc, a, x, acc);
}

Value VectorBuilder::add(Value a, Value c) {
  return arith::AddFOp::create(b, loc, a, c);
}

Value VectorBuilder::mul(Value a, Value c) {
  return arith::MulFOp::create(b, loc, a, c);
}

Value VectorBuilder::reduceAdd(Value v) {
  return vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD, v,
                                     Value(),
                                     arith::FastMathFlags::reassoc);
}

Value VectorBuilder::fromElements(ArrayRef<Value> scalars) {
  auto type = VectorType::get({int64_t(scalars.size())},
                              scalars.front().getType());
  return vector::FromElementsOp::create(b, loc, type, scalars);
}

Value VectorBuilder::concat(Value lo, Value hi) {
  int64_t n = cast<VectorType>(lo.getType()).getDimSize(0);
  SmallVector<int64_t> m;
  for (int64_t i = 0; i < 2 * n; ++i)
    m.push_back(i);
  return vector::ShuffleOp::create(b, loc, lo, hi, m);
}

Value VectorBuilder::toBF16Pairs(Value v) {
  int64_t n = cast<VectorType>(v.getType()).getDimSize(0);
  Value bf = arith::TruncFOp::create(
      b, loc, VectorType::get({n}, b.getBF16Type()), v);
  return vector::BitCastOp::create(
      b, loc, VectorType::get({n / 2}, b.getI32Type()), bf);
}

SmallVector<Value> VectorBuilder::transpose16(ArrayRef<Value> in) {
  SmallVector<Value> rows(in.begin(), in.end());
  assert(rows.size() == 16 && "16 rows");
  // Stage h swaps the off-diagonal h x h blocks of every 2h x 2h block.
  for (int64_t h : {8, 4, 2, 1}) {
    SmallVector<Value> next(rows);
    SmallVector<int64_t> lo, hi;
    for (int64_t c = 0; c < 16; ++c) {
      lo.push_back((c & h) == 0 ? c : 16 + c - h);
      hi.push_back((c & h) == 0 ? c + h : 16 + c);
    }
    for (int64_t i = 0; i < 16; ++i) {
      if (i & h)
        continue;
      next[i] = vector::ShuffleOp::create(b, loc, rows[i], rows[i + h], lo);
      next[i + h] = vector::ShuffleOp::create(b, loc, rows[i], rows[i + h], hi);
    }
    rows = std::move(next);
  }
  return rows;
}

Value VectorBuilder::exp(Value x) {
  int64_t lanes = cast<VectorType>(x.getType()).getDimSize(0);
  auto c = [&](float f) { return splat(f, lanes); };
  auto i32Vec = VectorType::get({lanes}, b.getI32Type());
  auto ic = [&](int32_t v) {
    return arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(i32Vec, b.getI32IntegerAttr(v)));
  };
  constexpr float kHi = 88.72283f, kLo = -103.97208f; // expf's range
  Value xc = arith::MinimumFOp::create(
      b, loc, arith::MaximumFOp::create(b, loc, x, c(kLo)), c(kHi));
  // n = round(x / ln 2), r = x - n ln 2 in two parts (Cody-Waite).
  Value n = math::RoundEvenOp::create(b, loc, mul(xc, c(1.44269504088896341f)));
  Value r = arith::SubFOp::create(b, loc, xc, mul(n, c(0.693359375f)));
  r = arith::SubFOp::create(b, loc, r, mul(n, c(-2.12194440e-4f)));
  Value p = c(1.9875691500e-4f);
  for (float k : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f,
                  1.6666665459e-1f, 5.0000001201e-1f})
    p = fma(p, r, c(k));
  Value y = add(fma(p, mul(r, r), r), c(1.0f));
  // y * 2^n as y * 2^h * 2^(n - h), h = floor(n / 2): both factors are
  // normal floats for n in [-150, 128], so the product rounds once, into
  // the subnormals where expf's result is subnormal.
  Value e = arith::FPToSIOp::create(b, loc, i32Vec, n);
  Value h = arith::ShRSIOp::create(b, loc, e, ic(1));
  auto pow2 = [&](Value k) {
    return arith::BitcastOp::create(
        b, loc, f32Vec(lanes),
        arith::ShLIOp::create(b, loc, arith::AddIOp::create(b, loc, k, ic(127)),
                              ic(23)));
  };
  y = mul(mul(y, pow2(h)), pow2(arith::SubIOp::create(b, loc, e, h)));
  Value over = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, x,
                                     c(kHi));
  Value under = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, x,
                                      c(kLo));
  y = arith::SelectOp::create(b, loc, over,
                              c(std::numeric_limits<float>::infinity()), y);
  return arith::SelectOp::create(b, loc, under, c(0.0f), y);
}

Value VectorBuilder::swiglu(Value x, Value u) {
  int64_t lanes = cast<VectorType>(x.getType()).getDimSize(0);
  Value one = splat(1.0f, lanes);
  Value neg = arith::SubFOp::create(b, loc, splat(0.0f, lanes), x);
  Value sig = arith::DivFOp::create(b, loc, one,
                                    arith::AddFOp::create(b, loc, one, exp(neg)));
  return mul(mul(x, sig), u);
}

} // namespace kiln::cpu
