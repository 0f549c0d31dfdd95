//===- RMSNorm.cpp - RMSNorm kernel ---------------------------------------===//
#include "kiln/Kernels/Kernels.h"

using namespace mlir;

namespace kiln::kernels {

void emitRMSNormProgram(OpBuilder &b, const ProgramArgs &args, int64_t cols,
                        float eps, Type xType, Type wType, Type outType,
                        int64_t inputStride, int64_t inputOffset,
                        const CachePlacement &place) {
  ProgramBuilder p(b, args.loc);
  Value base = p.mul(args.pid, p.i64(cols));
  // Buffers: x, w, [cache, [start]], out (rms_norm_quant binds more after).
  unsigned outIdx =
      place.capacity > 0 ? (place.startBuffer >= 0 ? 4 : 3) : 2;
  Value out = args.buffers[outIdx];
  Value outBase = base;
  Value inCache;
  if (place.capacity > 0) {
    Value batch = p.divs(args.pid, p.i64(place.seq));
    Value s = p.rems(args.pid, p.i64(place.seq));
    Value start = place.startBuffer >= 0
                      ? p.load(args.buffers[place.startBuffer],
                               place.startType, batch)
                      : p.i64(0);
    Value row = p.add(start, s);
    inCache = p.lt(row, p.i64(place.capacity));
    outBase = p.mul(p.add(p.mul(batch, p.i64(place.capacity)), row),
                    p.i64(cols));
  }
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
  auto write = [&] {
    p.forLoop(c0, cN, c1, [&](Value c) {
      Value x = p.load(args.buffers[0], xType, p.add(inBase, c));
      Value w = p.load(args.buffers[1], wType, c);
      p.store(p.fmul(p.fmul(x, inv), w), out, outType, p.add(outBase, c));
    });
  };
  if (inCache)
    p.ifThen(inCache, write);
  else
    write();
}

} // namespace kiln::kernels
