//===- GEMM.cpp - Row-tile GEMM kernel ------------------------------------===//
//
// out[m, n] = sum_k x[m, k] * w[n, k] with fp32 accumulation. Both operands
// are read along K contiguously (w has the [out, in] layout), so each output
// is a dot product of two contiguous rows; the reduction is marked
// reassociable so LLVM vectorizes it on the CPU.
//
//===----------------------------------------------------------------------===//
#include "kiln/Kernels/Kernels.h"

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
  int64_t tilesPerRow = (n + tileN - 1) / tileN;
  Value row = p.divs(args.pid, p.i64(tilesPerRow));
  Value tile = p.rems(args.pid, p.i64(tilesPerRow));
  Value n0 = p.mul(tile, p.i64(tileN));
  Value nEnd = p.add(n0, p.i64(tileN));
  nEnd = p.select(p.lt(nEnd, p.i64(n)), nEnd, p.i64(n));
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

} // namespace kiln::kernels
