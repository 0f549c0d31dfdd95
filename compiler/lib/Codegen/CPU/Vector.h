//===- Vector.h - SIMD building blocks of the CPU emitters ------*- C++ -*-===//
//
// Fixed-width vector code over raw buffer pointers (!llvm.ptr, element
// indices in i64), as the optimized CPU emitters write it: loads that widen
// the stored dtype to f32 (bf16 by a 16-bit shift, f16 by vcvtph2ps),
// stores that narrow it with round-to-nearest-even, masked tails, FMAs,
// reductions and a 16 x 16 transposition. Vector, arith and LLVM dialect
// ops only; convert-vector-to-llvm and convert-arith-to-llvm lower them.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_CODEGEN_CPU_VECTOR_H
#define KILN_CODEGEN_CPU_VECTOR_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"

namespace kiln::cpu {

class VectorBuilder {
public:
  VectorBuilder(mlir::OpBuilder &b, mlir::Location loc) : b(b), loc(loc) {}

  mlir::VectorType f32Vec(int64_t lanes);
  /// A constant vector<lanes x f32> of `v`.
  mlir::Value splat(float v, int64_t lanes);
  /// vector<lanes x f32> of a scalar f32 value.
  mlir::Value broadcast(mlir::Value scalar, int64_t lanes);

  /// e4m3 bytes (vector<lanes x i8>) -> vector<lanes x f32>, exactly as
  /// ProgramBuilder::decodeE4M3 (NaN at 0x7F / 0xFF).
  mlir::Value decodeE4M3(mlir::Value bytes);
  /// `lanes` elements of a buffer of `elemType` (f32, bf16, f16 or e4m3) from
  /// element `index` on, as vector<lanes x f32>. With `active` < lanes, only
  /// the first `active` are read (a masked load); the rest are 0.
  mlir::Value load(mlir::Value ptr, mlir::Type elemType, mlir::Value index,
                   int64_t lanes, int64_t active = -1);
  /// Stores a vector<lanes x f32> as `elemType` (rounded to nearest even)
  /// at element `index` on.
  void store(mlir::Value v, mlir::Value ptr, mlir::Type elemType,
             mlir::Value index);
  /// Stores raw vector bits (any element type) at byte offset `byteOffset`.
  void storeBits(mlir::Value v, mlir::Value ptr, mlir::Value byteOffset);
  /// `base` + `offset` bytes.
  mlir::Value byteAddr(mlir::Value base, mlir::Value offset);
  /// Loads vector<lanes x elem> raw from byte offset `byteOffset`.
  mlir::Value loadBits(mlir::Value ptr, mlir::Value byteOffset,
                       mlir::VectorType type);

  mlir::Value fma(mlir::Value a, mlir::Value x, mlir::Value acc);
  mlir::Value add(mlir::Value a, mlir::Value c);
  mlir::Value mul(mlir::Value a, mlir::Value c);
  /// Sum of the lanes (reassociable).
  mlir::Value reduceAdd(mlir::Value v);
  mlir::Value fromElements(mlir::ArrayRef<mlir::Value> scalars);
  /// The 2 x lanes-wide concatenation of two vectors.
  mlir::Value concat(mlir::Value lo, mlir::Value hi);
  /// f32 lanes -> bf16 (nearest even), bit-cast to half as many i32 lanes:
  /// lane i holds elements 2i (low half) and 2i + 1, AMX's VNNI pairs.
  mlir::Value toBF16Pairs(mlir::Value f32x32);
  /// 16 x 16 transposition of 16 vectors of 16 32-bit lanes (four
  /// butterfly stages of two-source shuffles: 64 shuffles).
  llvm::SmallVector<mlir::Value> transpose16(mlir::ArrayRef<mlir::Value> rows);
  /// exp(x) lane by lane, without libm: x = n ln2 + r (Cody-Waite), a
  /// degree-6 polynomial of r (Cephes' expf, about 1 ulp), scaled by 2^n
  /// through the exponent bits; +inf above 88.72, 0 below -103.97, the
  /// subnormals in between as expf. (LLVM scalarizes llvm.exp on vectors
  /// into libm calls.)
  mlir::Value exp(mlir::Value x);
  /// x * sigmoid(x) * u as the reference computes it, x * (1 / (1 +
  /// exp(0 - x))) * u, with exp() above for libm's expf.
  mlir::Value swiglu(mlir::Value x, mlir::Value u);

  //===------------------------------------------------------------------===//
  // AVX-512-BF16
  //===------------------------------------------------------------------===//

  /// vdpbf16ps's operand type: 16 pairs of bf16 (vector<32 x bf16>).
  mlir::VectorType bf16Pairs();
  /// vdpbf16ps: lane i of `acc` (vector<16 x f32>) plus x[2i + 1] y[2i + 1],
  /// then x[2i] y[2i] (products exact in fp32, fp32 sums).
  mlir::Value dpbf16(mlir::Value acc, mlir::Value x, mlir::Value y);
  /// The bf16 pair at byte `byte` of `buf` (2-byte aligned at least)
  /// broadcast into all 16 lanes (vdpbf16ps folds it into m32{1to16}).
  mlir::Value broadcastPair(mlir::Value buf, mlir::Value byte);

  //===------------------------------------------------------------------===//
  // AMX tiles (16 rows x 64 bytes; LLVM's AMX passes insert ldtilecfg)
  //===------------------------------------------------------------------===//

  mlir::Value tileZero();
  /// 16 rows of 64 bytes, row i at byte `addr` + i * stride.
  mlir::Value tileLoad(mlir::Value addr, mlir::Value stride);
  /// tdpbf16ps: acc (16 x 16 f32) += a (16 rows x 16 bf16 pairs) . bt (16
  /// rows of pairs: VNNI).
  mlir::Value tileDot(mlir::Value acc, mlir::Value a, mlir::Value bt);
  void tileStore(mlir::Value addr, mlir::Value stride, mlir::Value tile);
  /// 16 vectors of 16 32-bit lanes stored transposed as one tile in memory
  /// (16 rows of 64 bytes from byte `byteOffset` of `ptr`): row i holds lane
  /// i of every vector, so vector j becomes column j (a VNNI B tile when the
  /// lanes are bf16 pairs of K, an A tile's row pairs when they are rows).
  void storeTransposedTile(llvm::ArrayRef<mlir::Value> columns, mlir::Value ptr,
                           mlir::Value byteOffset);

  //===------------------------------------------------------------------===//
  // FP8 on AMX (GemmKernels.cpp's e4m3 tiles)
  //===------------------------------------------------------------------===//

  /// `lanes` raw elements of a buffer of `elemType` from element `index`
  /// on, as the integers (or f32) it stores: vector<lanes x i8> for e4m3,
  /// i16 for bf16/f16. With `active` < lanes a masked load; the rest are 0.
  mlir::Value loadRaw(mlir::Value ptr, mlir::Type elemType, mlir::Value index,
                      int64_t lanes, int64_t active = -1);
  /// e4m3 bytes (vector<32 x i8>) -> their bf16 bit patterns (vector<32 x
  /// i16>), exactly: every e4m3 value, subnormals included, is a normal
  /// bf16 (3 of its 7 mantissa bits). A 128-entry table of the magnitudes
  /// (two vpermi2w over 64 entries each, NaN at 0x7F), the sign or'ed in.
  mlir::Value e4m3ToBF16Bits(mlir::Value bytes);
  /// 64 e4m3 bytes (vector<64xi8>) as two vector<32xi16> of bf16 bits,
  /// exactly (the values of e4m3ToBF16Bits), in the order of a byte
  /// unpack: the first holds bytes 0-7 of each 16-byte lane, the second
  /// bytes 8-15. Two vpermi2b (the high and low bytes of the 128
  /// magnitudes' bf16 bits), the sign or'ed into the high bytes, two
  /// unpacks: half the shuffle-port work per value of e4m3ToBF16Bits'
  /// word permutes. Any two vectors converted by it pair up element for
  /// element, which is all a dot product needs (AVX512-VBMI).
  std::pair<mlir::Value, mlir::Value> e4m3ToBF16Unpacked(mlir::Value bytes);
  /// 64 e4m3 bytes (vector<64xi8>) read as 32 16-bit words -> two
  /// vector<32xi16> of bf16 bits: the first holds the even bytes (word i:
  /// byte 2i), the second the odd ones, each placed with e4m3's sign,
  /// exponent field and mantissa in bf16's (two or three shifts and a mask,
  /// no shuffles): the values times 2^-120, e4m3's subnormals bf16
  /// denormals, which vdpbf16ps reads as zero.
  std::pair<mlir::Value, mlir::Value> e4m3ToBF16Shifted(mlir::Value bytes);
  /// e4m3 bytes (vector<32 x i8>) -> two vector<16 x f32> (bytes 0-15,
  /// 16-31) of their values times 2^-8: each byte placed as an f16 whose
  /// exponent field is e4m3's (two shifts and a mask; subnormals stay
  /// subnormal, exactly), widened by vcvtph2ps. Fewer and cheaper
  /// instructions than e4m3ToBF16Bits' permutes; the NaN codes 0x7F / 0xFF
  /// read as +-480 x 2^-8 (e4m3NaN finds them).
  std::pair<mlir::Value, mlir::Value> e4m3ToF32Scaled(mlir::Value bytes);
  /// e4m3 bytes (vector<N x i8>) -> vector<N x f16>, the values x 2^-8 (as
  /// e4m3ToF32Scaled, before the widening).
  mlir::Value e4m3ToF16Scaled(mlir::Value bytes);
  /// Lanes of e4m3 bytes that are NaN (0x7F, 0xFF): vector<N x i1>.
  mlir::Value e4m3NaN(mlir::Value bytes);
  /// A constant integer vector of `type` with every lane `v`.
  mlir::Value splatInt(mlir::VectorType type, int64_t v);

private:
  mlir::Value gep(mlir::Value ptr, mlir::Type elemType, mlir::Value index);
  mlir::Value mask(int64_t lanes, int64_t active);

  mlir::OpBuilder &b;
  mlir::Location loc;
};

} // namespace kiln::cpu

#endif // KILN_CODEGEN_CPU_VECTOR_H
