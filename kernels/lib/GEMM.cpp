//===- GEMM.cpp - Row-tile GEMM kernel ------------------------------------===//
//
// out[m, n] = sum_k x[m, k] * w[n, k] with fp32 accumulation. Both operands
// are read along K contiguously (w has the [out, in] layout), so each output
// is a dot product of two contiguous rows; the reduction is marked
// reassociable so LLVM vectorizes it on the CPU.
//
//===----------------------------------------------------------------------===//
#include "kiln/Kernels/Kernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

using namespace mlir;

namespace kiln::kernels {

Value addAddends(ProgramBuilder &p, const ProgramArgs &args, unsigned first,
                 unsigned n, Type type, Value acc, Value index) {
  for (unsigned i = 0; i < n; ++i)
    acc = p.fadd(acc, p.load(args.buffers[first + i], type, index));
  return acc;
}

void emitGemmProgram(OpBuilder &b, const ProgramArgs &args, int64_t n,
                     int64_t k, int64_t tileN, Type xType, Type wType,
                     Type outType, unsigned numAddends) {
  ProgramBuilder p(b, args.loc);
  ProgramBuilder::ColumnTile ct = p.columnTile(args.pid, n, tileN);
  Value row = ct.row, n0 = ct.begin, nEnd = ct.end;
  Value xBase = p.mul(row, p.i64(k));
  Value outBase = p.mul(row, p.i64(n));
  Value c0 = p.i64(0), c1 = p.i64(1), cK = p.i64(k);
  p.forLoop(n0, nEnd, c1, [&](Value col) {
    Value wBase = p.mul(col, cK);
    Value acc = p.forLoop(c0, cK, c1, ValueRange{p.f32(0.0f)},
                          [&](Value kk, ValueRange it) {
                            Value x = p.load(args.buffers[0], xType,
                                             p.add(xBase, kk));
                            Value w = p.load(args.buffers[1], wType,
                                             p.add(wBase, kk));
                            return SmallVector<Value>{
                                p.fadd(it[0], p.fmul(x, w), true)};
                          })[0];
    Value idx = p.add(outBase, col);
    acc = addAddends(p, args, 2, numAddends, outType, acc, idx);
    p.store(acc, args.buffers[2 + numAddends], outType, idx);
  });
}

void emitGemmSwiGLUProgram(OpBuilder &b, const ProgramArgs &args, int64_t n,
                           int64_t k, int64_t tileN, ArrayRef<Type> types) {
  ProgramBuilder p(b, args.loc);
  ProgramBuilder::ColumnTile ct = p.columnTile(args.pid, n, tileN);
  Value row = ct.row, n0 = ct.begin, n1 = ct.end;
  Value xBase = p.mul(row, p.i64(k));
  p.forLoop(n0, n1, p.i64(1), [&](Value col) {
    Value wBase = p.mul(col, p.i64(k));
    Value g = p.dot(args.buffers[0], types[0], xBase, args.buffers[1],
                    types[1], wBase, k);
    Value u = p.dot(args.buffers[0], types[0], xBase, args.buffers[2],
                    types[2], wBase, k);
    p.store(p.fmul(p.fmul(g, p.sigmoid(g)), u), args.buffers[3], types[3],
            p.add(p.mul(row, p.i64(n)), col));
  });
}

void emitGemmDualSkeleton(ProgramBuilder &p, const ProgramArgs &args,
                          int64_t n1, int64_t n2, int64_t tileN, unsigned out1,
                          ArrayRef<Type> types,
                          function_ref<Value(unsigned, Value, Value)> dot) {
  int64_t n = n1 + n2;
  ProgramBuilder::ColumnTile ct = p.columnTile(args.pid, n, tileN);
  Value row = ct.row, c0 = ct.begin, c1 = ct.end;
  // Columns of the first projection, then of the second; two loops so each
  // reads one weight and writes one output.
  Value split = p.i64(n1);
  Value aEnd = p.minI(c1, split);
  p.forLoop(c0, aEnd, p.i64(1), [&](Value col) {
    p.store(dot(0, row, col), args.buffers[out1], types[out1],
            p.add(p.mul(row, p.i64(n1)), col));
  });
  OpBuilder &b = p.builder();
  Value bStart = arith::MaxSIOp::create(b, args.loc, c0, split);
  p.forLoop(bStart, c1, p.i64(1), [&](Value col) {
    Value local = arith::SubIOp::create(b, args.loc, col, split);
    p.store(dot(1, row, local), args.buffers[out1 + 1], types[out1 + 1],
            p.add(p.mul(row, p.i64(n2)), local));
  });
}

void emitGemmDualProgram(OpBuilder &b, const ProgramArgs &args, int64_t n1,
                         int64_t n2, int64_t k, int64_t tileN,
                         ArrayRef<Type> types) {
  // types: x, w1, w2, out1, out2
  ProgramBuilder p(b, args.loc);
  emitGemmDualSkeleton(p, args, n1, n2, tileN, 3, types,
                       [&](unsigned which, Value row, Value col) {
                         return p.dot(args.buffers[0], types[0],
                                      p.mul(row, p.i64(k)),
                                      args.buffers[1 + which], types[1 + which],
                                      p.mul(col, p.i64(k)), k);
                       });
}

} // namespace kiln::kernels
