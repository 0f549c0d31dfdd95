//===- Vector.cpp - SIMD building blocks of the CPU emitters --------------===//
#include "Vector.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cmath>
#include <cstring>
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

Value VectorBuilder::splatInt(VectorType type, int64_t v) {
  return arith::ConstantOp::create(
      b, loc,
      DenseElementsAttr::get(type,
                             b.getIntegerAttr(type.getElementType(), v)));
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
  Value raw = loadRaw(ptr, elemType, index, lanes, active);
  bool e4m3 = isa<Float8E4M3FNType>(elemType);
  if (elemType.isF32())
    return raw;
  if (e4m3)
    return decodeE4M3(raw);
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

Value VectorBuilder::loadRaw(Value ptr, Type elemType, Value index,
                             int64_t lanes, int64_t active) {
  bool masked = active >= 0 && active < lanes;
  bool e4m3 = isa<Float8E4M3FNType>(elemType);
  // 16-bit floats are read as i16 lanes (e4m3 as i8): masked loads of
  // them are plain AVX-512BW, and the widening below is explicit.
  Type storage = elemType.isF32() ? elemType
                 : e4m3           ? Type(b.getI8Type())
                                  : Type(b.getI16Type());
  auto vecTy = VectorType::get({lanes}, storage);
  unsigned align = elemType.isF32() ? 4 : e4m3 ? 1 : 2;
  Type gepType = e4m3 ? Type(b.getI8Type()) : elemType;
  Value addr = gep(ptr, gepType, index);
  Value raw;
  if (masked) {
    Attribute zeroAttr = elemType.isF32() ? Attribute(b.getF32FloatAttr(0))
                         : e4m3 ? Attribute(b.getI8IntegerAttr(0))
                                : Attribute(b.getI16IntegerAttr(0));
    Value zero = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(vecTy, zeroAttr));
    raw = LLVM::MaskedLoadOp::create(b, loc, vecTy, addr, mask(lanes, active),
                                     zero, b.getI32IntegerAttr(align),
                                     /*nontemporal=*/nullptr);
  } else {
    raw = LLVM::LoadOp::create(b, loc, vecTy, addr, align);
  }
  return raw;
}

Value VectorBuilder::decodeE4M3(Value bytes) {
  int64_t lanes = cast<VectorType>(bytes.getType()).getDimSize(0);
  auto i32Vec = VectorType::get({lanes}, b.getI32Type());
  auto ic = [&](int32_t v) { return splatInt(i32Vec, v); };
  Value u = arith::ExtUIOp::create(b, loc, i32Vec, bytes);
  Value low = arith::AndIOp::create(b, loc, u, ic(0x7F));
  // The 7 magnitude bits below f32's exponent field: exponent e and
  // mantissa m read as 2^(e - 127) (1 + m/8), or for e = 0 as the f32
  // subnormal m 2^-129; times 2^120 both are exactly e4m3's value.
  Value mag = arith::BitcastOp::create(
      b, loc, f32Vec(lanes), arith::ShLIOp::create(b, loc, low, ic(20)));
  Value value = mul(mag, splat(0x1p120f, lanes));
  Value sign = arith::ShLIOp::create(
      b, loc, arith::AndIOp::create(b, loc, u, ic(0x80)), ic(24));
  value = arith::BitcastOp::create(
      b, loc, f32Vec(lanes),
      arith::OrIOp::create(
          b, loc, arith::BitcastOp::create(b, loc, i32Vec, value), sign));
  // 0x7F and 0xFF are NaN (e4m3fn has no infinities).
  Value nan = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, low,
                                    ic(0x7F));
  return arith::SelectOp::create(
      b, loc, nan, splat(std::numeric_limits<float>::quiet_NaN(), lanes),
      value);
}

void VectorBuilder::store(Value v, Value ptr, Type elemType, Value index) {
  int64_t lanes = cast<VectorType>(v.getType()).getDimSize(0);
  if (!elemType.isF32())
    v = arith::TruncFOp::create(b, loc, VectorType::get({lanes}, elemType), v);
  unsigned align = elemType.isF32() ? 4 : 2;
  LLVM::StoreOp::create(b, loc, v, gep(ptr, elemType, index), align);
}

Value VectorBuilder::byteAddr(Value base, Value offset) {
  return gep(base, b.getI8Type(), offset);
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
  auto ic = [&](int32_t v) { return splatInt(i32Vec, v); };
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

//===----------------------------------------------------------------------===//
// FP8 on AMX
//===----------------------------------------------------------------------===//

namespace {
/// The bf16 bits of the e4m3 magnitude `m` (0..127): the top half of its
/// f32 value, exact (3 mantissa bits); 0x7F is NaN.
uint16_t e4m3MagnitudeBF16(unsigned m) {
  if (m == 0x7F)
    return 0x7FC0;
  unsigned e = m >> 3, f = m & 7;
  float v = e == 0 ? std::ldexp(float(f), -9) : std::ldexp(1.0f + f / 8.0f, int(e) - 7);
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return uint16_t(bits >> 16);
}
} // namespace

Value VectorBuilder::e4m3ToBF16Bits(Value bytes) {
  assert(cast<VectorType>(bytes.getType()).getDimSize(0) == 32 && "32 bytes");
  auto i16x32 = VectorType::get({32}, b.getI16Type());
  auto ic = [&](int16_t v) { return splatInt(i16x32, v); };
  auto table = [&](unsigned first) {
    SmallVector<APInt> bits;
    for (unsigned m = first; m < first + 32; ++m)
      bits.push_back(APInt(16, e4m3MagnitudeBF16(m)));
    return arith::ConstantOp::create(b, loc,
                                     DenseElementsAttr::get(i16x32, bits));
  };
  Value w = arith::ExtUIOp::create(b, loc, i16x32, bytes);
  Value mag = arith::AndIOp::create(b, loc, w, ic(0x7F));
  // vpermi2w(a, idx, b): lane i = idx bit 5 ? b[idx & 31] : a[idx & 31].
  auto permute = [&](unsigned first) {
    return LLVM::CallIntrinsicOp::create(
               b, loc, i16x32,
               b.getStringAttr("llvm.x86.avx512.vpermi2var.hi.512"),
               ValueRange{table(first), mag, table(first + 32)})
        .getResult(0);
  };
  Value lo = permute(0), hi = permute(64);
  Value upper = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::uge, mag,
                                      ic(64));
  Value value = arith::SelectOp::create(b, loc, upper, hi, lo);
  Value sign = arith::ShLIOp::create(
      b, loc, arith::AndIOp::create(b, loc, w, ic(0x80)), ic(8));
  return arith::OrIOp::create(b, loc, value, sign);
}

std::pair<Value, Value> VectorBuilder::e4m3ToBF16Unpacked(Value bytes) {
  assert(cast<VectorType>(bytes.getType()).getDimSize(0) == 64 && "64 bytes");
  auto i8x64 = VectorType::get({64}, b.getI8Type());
  auto table = [&](bool high, unsigned first) {
    SmallVector<APInt> bits;
    for (unsigned m = first; m < first + 64; ++m) {
      uint16_t h = e4m3MagnitudeBF16(m);
      bits.push_back(APInt(8, high ? h >> 8 : h & 0xFF));
    }
    return arith::ConstantOp::create(b, loc,
                                     DenseElementsAttr::get(i8x64, bits));
  };
  // vpermi2b(a, idx, b): byte i = idx bit 6 ? b[idx & 63] : a[idx & 63];
  // bit 7 (the sign) is ignored.
  auto permute = [&](bool high) {
    return LLVM::CallIntrinsicOp::create(
               b, loc, i8x64,
               b.getStringAttr("llvm.x86.avx512.vpermi2var.qi.512"),
               ValueRange{table(high, 0), bytes, table(high, 64)})
        .getResult(0);
  };
  Value sign = arith::AndIOp::create(b, loc, bytes,
                                     splatInt(i8x64, static_cast<int8_t>(0x80)));
  Value hi = arith::OrIOp::create(b, loc, permute(true), sign);
  Value lo = permute(false);
  auto unpack = [&](int64_t half) {
    SmallVector<int64_t> mask;
    for (int64_t lane = 0; lane < 4; ++lane)
      for (int64_t i = 0; i < 8; ++i)
        mask.append({16 * lane + 8 * half + i, 64 + 16 * lane + 8 * half + i});
    Value words = vector::ShuffleOp::create(b, loc, lo, hi, mask);
    return vector::BitCastOp::create(
               b, loc, VectorType::get({32}, b.getI16Type()), words)
        .getResult();
  };
  return {unpack(0), unpack(1)};
}

std::pair<Value, Value> VectorBuilder::e4m3ToBF16Shifted(Value bytes) {
  assert(cast<VectorType>(bytes.getType()).getDimSize(0) == 64 && "64 bytes");
  auto i16x32 = VectorType::get({32}, b.getI16Type());
  auto ic = [&](int16_t v) { return splatInt(i16x32, v); };
  Value w = vector::BitCastOp::create(b, loc, i16x32, bytes);
  // A byte s eeee mmm in a word's high byte, shifted right arithmetically
  // by 4: s at bits 15..11, eeee at 10..7 (bf16's exponent field, low
  // bits), mmm at 6..4; the mask keeps bit 15 and 10..4.
  auto place = [&](Value high) {
    return arith::AndIOp::create(b, loc,
                                 arith::ShRSIOp::create(b, loc, high, ic(4)),
                                 ic(static_cast<int16_t>(0x87F0)))
        .getResult();
  };
  Value even = place(arith::ShLIOp::create(b, loc, w, ic(8)));
  return {even, place(w)};
}

Value VectorBuilder::e4m3ToF16Scaled(Value bytes) {
  int64_t n = cast<VectorType>(bytes.getType()).getDimSize(0);
  auto i16x32 = VectorType::get({n}, b.getI16Type());
  auto ic = [&](int16_t v) { return splatInt(i16x32, v); };
  // s eeee mmm in the high byte, then one arithmetic shift right: s at bit
  // 15 (and a copy at 14, cleared), eeee at 13..10, mmm at 9..7: the f16
  // 2^(e - 15) (1 + m/8), or for e = 0 the subnormal m 2^-17, which is the
  // e4m3 value times 2^-8.
  Value w = arith::ExtUIOp::create(b, loc, i16x32, bytes);
  Value h = arith::ShLIOp::create(b, loc, w, ic(8));
  Value half =
      arith::AndIOp::create(b, loc, arith::ShRSIOp::create(b, loc, h, ic(1)),
                            ic(static_cast<int16_t>(0xBFFF)));
  return arith::BitcastOp::create(b, loc, VectorType::get({n}, b.getF16Type()),
                                  half);
}

std::pair<Value, Value> VectorBuilder::e4m3ToF32Scaled(Value bytes) {
  assert(cast<VectorType>(bytes.getType()).getDimSize(0) == 32 && "32 bytes");
  Value f16s = e4m3ToF16Scaled(bytes);
  auto widen = [&](int64_t first) {
    Value part = vector::ExtractStridedSliceOp::create(
        b, loc, f16s, ArrayRef<int64_t>{first}, ArrayRef<int64_t>{16},
        ArrayRef<int64_t>{1});
    return arith::ExtFOp::create(b, loc, f32Vec(16), part).getResult();
  };
  return {widen(0), widen(16)};
}

Value VectorBuilder::e4m3NaN(Value bytes) {
  auto vt = cast<VectorType>(bytes.getType());
  auto c = [&](int8_t v) { return splatInt(vt, v); };
  return arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::eq,
      arith::OrIOp::create(b, loc, bytes, c(static_cast<int8_t>(0x80))),
      c(static_cast<int8_t>(0xFF)));
}

//===----------------------------------------------------------------------===//
// AMX tiles
//===----------------------------------------------------------------------===//

// The llvm.x86.*.internal intrinsics, called through llvm.call_intrinsic:
// the amx dialect's ops take memrefs, and the emitters address raw
// !llvm.ptr buffers.
namespace {
Value i16Const(OpBuilder &b, Location loc, int64_t c) {
  return arith::ConstantIntOp::create(b, loc, b.getI16Type(), c);
}
Type amxType(OpBuilder &b) { return LLVM::LLVMX86AMXType::get(b.getContext()); }
} // namespace

VectorType VectorBuilder::bf16Pairs() {
  return VectorType::get({32}, b.getBF16Type());
}

Value VectorBuilder::dpbf16(Value acc, Value x, Value y) {
  return LLVM::CallIntrinsicOp::create(
             b, loc, f32Vec(16),
             b.getStringAttr("llvm.x86.avx512bf16.dpbf16ps.512"),
             ValueRange{acc, x, y})
      .getResult(0);
}

Value VectorBuilder::broadcastPair(Value buf, Value byte) {
  auto i32 = b.getI32Type();
  Value pair = LLVM::LoadOp::create(b, loc, i32, byteAddr(buf, byte), 2);
  return vector::BitCastOp::create(
      b, loc, bf16Pairs(),
      vector::BroadcastOp::create(b, loc, VectorType::get({16}, i32), pair));
}

Value VectorBuilder::tileZero() {
  return LLVM::CallIntrinsicOp::create(
             b, loc, amxType(b), b.getStringAttr("llvm.x86.tilezero.internal"),
             ValueRange{i16Const(b, loc, 16), i16Const(b, loc, 64)})
      .getResult(0);
}

Value VectorBuilder::tileLoad(Value addr, Value stride) {
  return LLVM::CallIntrinsicOp::create(
             b, loc, amxType(b),
             b.getStringAttr("llvm.x86.tileloadd64.internal"),
             ValueRange{i16Const(b, loc, 16), i16Const(b, loc, 64), addr,
                        stride})
      .getResult(0);
}

Value VectorBuilder::tileDot(Value acc, Value a, Value bt) {
  return LLVM::CallIntrinsicOp::create(
             b, loc, amxType(b), b.getStringAttr("llvm.x86.tdpbf16ps.internal"),
             ValueRange{i16Const(b, loc, 16), i16Const(b, loc, 64),
                        i16Const(b, loc, 64), acc, a, bt})
      .getResult(0);
}

void VectorBuilder::tileStore(Value addr, Value stride, Value tile) {
  LLVM::CallIntrinsicOp::create(
      b, loc, b.getStringAttr("llvm.x86.tilestored64.internal"),
      ValueRange{i16Const(b, loc, 16), i16Const(b, loc, 64), addr, stride,
                 tile});
}

void VectorBuilder::storeTransposedTile(ArrayRef<Value> columns, Value ptr,
                                        Value byteOffset) {
  SmallVector<Value> rows = transpose16(columns);
  for (int64_t i = 0; i < 16; ++i)
    storeBits(rows[i], ptr,
              arith::AddIOp::create(b, loc, byteOffset,
                                    arith::ConstantIntOp::create(
                                        b, loc, b.getI64Type(), i * 64)));
}

} // namespace kiln::cpu
