//===- Program.h - Building blocks of generated kernel programs -*- C++ -*-===//
//
// A kernel is a grid of independent *programs* (Triton's term). A kernel
// builder emits the body of one program, given the program id, the buffer
// pointers and the run-time scalars. Codegen places the same body inside a
// CPU entry point (a loop over a range of program ids, run by the runtime's
// thread pool) and inside a GPU kernel (one program per thread). Bodies use
// only scf, arith, math and LLVM pointer ops, which lower on both targets.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_KERNELS_PROGRAM_H
#define KILN_KERNELS_PROGRAM_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/Location.h"
#include "mlir/IR/Value.h"
#include "llvm/ADT/SmallVector.h"

#include <functional>

namespace kiln::kernels {

/// The values a program body can use.
struct ProgramArgs {
  mlir::Location loc;
  llvm::SmallVector<mlir::Value> buffers; ///< !llvm.ptr, in binding order.
  llvm::SmallVector<mlir::Value> scalars; ///< i64 run-time scalars.
  mlir::Value pid;                        ///< i64 program id.
};

/// Small IR-building helpers shared by the kernel builders. All integer
/// arithmetic is i64; all floating-point compute is f32.
class ProgramBuilder {
public:
  ProgramBuilder(mlir::OpBuilder &b, mlir::Location loc) : b(b), loc(loc) {}

  mlir::OpBuilder &builder() { return b; }
  mlir::Location location() const { return loc; }

  mlir::Value i64(int64_t v);
  mlir::Value f32(float v);
  mlir::Value f64(double v);
  mlir::Value toF64(mlir::Value f32Value);
  mlir::Value toF32(mlir::Value f64Value);
  mlir::Value sitofp(mlir::Value i, mlir::Type floatType);
  mlir::Value cos(mlir::Value a);
  mlir::Value sin(mlir::Value a);
  mlir::Value fmin(mlir::Value a, mlir::Value c);
  mlir::Value fgt(mlir::Value a, mlir::Value c); ///< ordered a > c
  mlir::Value flt(mlir::Value a, mlir::Value c); ///< ordered a < c
  mlir::Value feq(mlir::Value a, mlir::Value c); ///< ordered a == c
  mlir::Value minI(mlir::Value a, mlir::Value c);
  mlir::Value andI(mlir::Value a, mlir::Value c);
  /// Loads entry `index` of a table of pointers (a weight_table binding).
  mlir::Value loadPtr(mlir::Value table, mlir::Value index);
  /// Dot product of `n` elements: a[aBase + i] * b[bBase + i], fp32
  /// accumulation, reassociable (vectorized on the CPU).
  mlir::Value dot(mlir::Value a, mlir::Type aType, mlir::Value aBase,
                  mlir::Value b, mlir::Type bType, mlir::Value bBase,
                  int64_t n);
  /// 1 / (1 + exp(-x)).
  mlir::Value sigmoid(mlir::Value x);
  mlir::Value fabs(mlir::Value x);

  /// f32 -> e4m3 (float8_e4m3fn) byte: round to nearest even, saturate at
  /// +-448, with integer arithmetic only (no runtime library): the same code
  /// on the CPU and the GPU.
  mlir::Value encodeE4M3(mlir::Value f32Value);
  /// e4m3 byte (i8) -> f32, exact.
  mlir::Value decodeE4M3(mlir::Value byte);
  /// The smallest power of two >= x, for a positive normal f32 x (the
  /// exponent field rounded up: UE8M0-style scales).
  mlir::Value roundUpPow2(mlir::Value x);
  mlir::Value add(mlir::Value a, mlir::Value c);
  mlir::Value mul(mlir::Value a, mlir::Value c);
  mlir::Value divs(mlir::Value a, mlir::Value c); ///< signed i64 division
  mlir::Value rems(mlir::Value a, mlir::Value c); ///< signed i64 remainder
  mlir::Value fadd(mlir::Value a, mlir::Value c, bool reassoc = false);
  mlir::Value fmul(mlir::Value a, mlir::Value c);
  mlir::Value fdiv(mlir::Value a, mlir::Value c);
  mlir::Value fsub(mlir::Value a, mlir::Value c);
  mlir::Value fmax(mlir::Value a, mlir::Value c);
  mlir::Value exp(mlir::Value a);
  mlir::Value sqrt(mlir::Value a);
  mlir::Value lt(mlir::Value a, mlir::Value c); ///< signed i64 a < c
  mlir::Value eq(mlir::Value a, mlir::Value c); ///< i64 a == c
  mlir::Value ceilDivI(mlir::Value a, int64_t c); ///< (a + c - 1) / c, a >= 0
  mlir::Value select(mlir::Value cond, mlir::Value a, mlir::Value c);

  /// Loads element `index` of a buffer of `elemType` and converts it to f32
  /// (floats, e4m3 included) or i64 (integers).
  mlir::Value load(mlir::Value ptr, mlir::Type elemType, mlir::Value index);
  /// Converts an f32 value to `elemType` and stores it at `index`.
  void store(mlir::Value value, mlir::Value ptr, mlir::Type elemType,
             mlir::Value index);

  /// Stores an i64 value into an integer buffer of `intType` (truncating).
  void storeInt(mlir::Value i64Value, mlir::Value ptr, mlir::Type intType,
                mlir::Value index);
  /// Atomically adds `delta` (i64, truncated to i32) to the i32 at `index`
  /// with acquire-release ordering; returns the old value as i64. Used for
  /// the "last program" pattern: a program's plain stores before it are
  /// visible to the program that sees the final count.
  mlir::Value atomicAddI32(mlir::Value ptr, mlir::Value index,
                           mlir::Value delta);

  /// Program `pid` of a grid of rows x ceil(n / tile) column tiles: its
  /// row and its columns [begin, end) (the last tile may be short).
  struct ColumnTile {
    mlir::Value row, begin, end;
  };
  ColumnTile columnTile(mlir::Value pid, int64_t n, int64_t tile);

  /// `for (i = lo; i < hi; i += step)` with f32 loop-carried values.
  llvm::SmallVector<mlir::Value>
  forLoop(mlir::Value lo, mlir::Value hi, mlir::Value step,
          mlir::ValueRange init,
          llvm::function_ref<llvm::SmallVector<mlir::Value>(
              mlir::Value iv, mlir::ValueRange iter)>
              body);
  void forLoop(mlir::Value lo, mlir::Value hi, mlir::Value step,
               llvm::function_ref<void(mlir::Value iv)> body);
  /// `if (cond) { then }`.
  void ifThen(mlir::Value cond, llvm::function_ref<void()> then);

private:
  mlir::OpBuilder &b;
  mlir::Location loc;
};

/// Emits a program body. Bound by a kernel op; called once per target.
using ProgramEmitter =
    std::function<void(mlir::OpBuilder &, const ProgramArgs &)>;

} // namespace kiln::kernels

#endif // KILN_KERNELS_PROGRAM_H
