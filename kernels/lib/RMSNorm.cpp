//===- RMSNorm.cpp - RMSNorm kernel ---------------------------------------===//
#include "kiln/Kernels/Kernels.h"

using namespace mlir;

namespace kiln::kernels {

void emitRMSNormProgram(OpBuilder &b, const ProgramArgs &args, int64_t cols,
                        float eps, Type xType, Type wType, Type outType,
                        int64_t inputStride, int64_t inputOffset) {
  ProgramBuilder p(b, args.loc);
  Value base = p.mul(args.pid, p.i64(cols));
  Value inBase = inputStride ? p.add(p.mul(args.pid, p.i64(inputStride)),
                                     p.i64(inputOffset))
                             : base;
  Value c0 = p.i64(0), cN = p.i64(cols), c1 = p.i64(1);
  Value sumSq = p.forLoop(c0, cN, c1, ValueRange{p.f32(0.0f)},
                          [&](Value c, ValueRange acc) {
                            Value x = p.load(args.buffers[0], xType,
                                             p.add(inBase, c));
                            return SmallVector<Value>{
                                p.fadd(acc[0], p.fmul(x, x), true)};
                          })[0];
  Value mean = p.fdiv(sumSq, p.f32(static_cast<float>(cols)));
  Value inv = p.fdiv(p.f32(1.0f), p.sqrt(p.fadd(mean, p.f32(eps))));
  p.forLoop(c0, cN, c1, [&](Value c) {
    Value x = p.load(args.buffers[0], xType, p.add(inBase, c));
    Value w = p.load(args.buffers[1], wType, c);
    p.store(p.fmul(p.fmul(x, inv), w), args.buffers[2], outType,
            p.add(base, c));
  });
}

} // namespace kiln::kernels
