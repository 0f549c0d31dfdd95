//===- Gather.cpp - Row gather (embedding lookup) kernel ------------------===//
#include "kiln/Kernels/Kernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

using namespace mlir;

namespace kiln::kernels {

void emitGatherRowsProgram(OpBuilder &b, const ProgramArgs &args, int64_t vocab,
                           int64_t cols, Type tableType, Type idType,
                           Type outType) {
  ProgramBuilder p(b, args.loc);
  Value id = p.load(args.buffers[1], idType, args.pid);
  Value zero = p.i64(0);
  // In range: 0 <= id < vocab. Out-of-range ids give zero rows, never an
  // out-of-bounds read.
  Value inRange = arith::AndIOp::create(
      b, args.loc, p.lt(id, p.i64(vocab)),
      arith::CmpIOp::create(b, args.loc, arith::CmpIPredicate::sge, id, zero));
  Value safeId = p.select(inRange, id, zero);
  Value src = p.mul(safeId, p.i64(cols));
  Value dst = p.mul(args.pid, p.i64(cols));
  p.forLoop(p.i64(0), p.i64(cols), p.i64(1), [&](Value c) {
    Value v = p.load(args.buffers[0], tableType, p.add(src, c));
    v = p.select(inRange, v, p.f32(0.0f));
    p.store(v, args.buffers[2], outType, p.add(dst, c));
  });
}

} // namespace kiln::kernels

namespace kiln::kernels {

void emitSliceProgram(OpBuilder &b, const ProgramArgs &args, int64_t inCols,
                      int64_t offset, int64_t outCols, Type inType,
                      Type outType) {
  ProgramBuilder p(b, args.loc);
  Value src = p.add(p.mul(args.pid, p.i64(inCols)), p.i64(offset));
  Value dst = p.mul(args.pid, p.i64(outCols));
  p.forLoop(p.i64(0), p.i64(outCols), p.i64(1), [&](Value c) {
    Value v = p.load(args.buffers[0], inType, p.add(src, c));
    p.store(v, args.buffers[1], outType, p.add(dst, c));
  });
}

} // namespace kiln::kernels

namespace kiln::kernels {

void emitLastTokenProgram(OpBuilder &b, const ProgramArgs &args, int64_t seq,
                          int64_t cols, Type inType, Type outType) {
  // pid = row * seq + s; scalar 0: the positions given per row (1..seq).
  ProgramBuilder p(b, args.loc);
  Value row = p.divs(args.pid, p.i64(seq));
  Value s = p.rems(args.pid, p.i64(seq));
  Value last = p.add(args.scalars[0], p.i64(-1));
  p.ifThen(arith::CmpIOp::create(b, args.loc, arith::CmpIPredicate::eq, s,
                                 last),
           [&] {
             Value src = p.mul(args.pid, p.i64(cols));
             Value dst = p.mul(row, p.i64(cols));
             p.forLoop(p.i64(0), p.i64(cols), p.i64(1), [&](Value c) {
               Value v = p.load(args.buffers[0], inType, p.add(src, c));
               p.store(v, args.buffers[1], outType, p.add(dst, c));
             });
           });
}

void emitCacheWriteProgram(OpBuilder &b, const ProgramArgs &args,
                           int64_t capacity, int64_t seq, int64_t width,
                           bool hasStart, ArrayRef<Type> types) {
  // types: cache, values, [start], result
  ProgramBuilder p(b, args.loc);
  Value batch = p.divs(args.pid, p.i64(seq));
  Value s = p.rems(args.pid, p.i64(seq));
  Value start =
      hasStart ? p.load(args.buffers[2], types[2], batch) : p.i64(0);
  Value row = p.add(start, s);
  unsigned out = hasStart ? 3 : 2;
  Value inRange = p.andI(p.lt(row, p.i64(capacity)),
                         arith::CmpIOp::create(b, args.loc,
                                               arith::CmpIPredicate::sge, row,
                                               p.i64(0)));
  p.ifThen(inRange, [&] {
    Value dst = p.mul(p.add(p.mul(batch, p.i64(capacity)), row),
                      p.i64(width));
    Value src = p.mul(args.pid, p.i64(width));
    p.forLoop(p.i64(0), p.i64(width), p.i64(1), [&](Value c) {
      Value v = p.load(args.buffers[1], types[1], p.add(src, c));
      p.store(v, args.buffers[out], types[out], p.add(dst, c));
    });
  });
}

} // namespace kiln::kernels
