//===- Elementwise.cpp - Element-wise binary kernels ----------------------===//
#include "kiln/Kernels/Kernels.h"

using namespace mlir;

namespace kiln::kernels {

StringRef stringifyElementwiseKind(ElementwiseKind kind) {
  switch (kind) {
  case ElementwiseKind::Add:
    return "add";
  case ElementwiseKind::Mul:
    return "mul";
  case ElementwiseKind::SwiGLU:
    return "swiglu";
  case ElementwiseKind::BiasAdd:
    return "bias_add";
  }
  return "unknown";
}

void emitElementwiseProgram(OpBuilder &b, const ProgramArgs &args,
                            ElementwiseKind kind, int64_t block, Type lhsType,
                            Type rhsType, Type outType, int64_t biasSize) {
  ProgramBuilder p(b, args.loc);
  Value total = args.scalars[0];
  Value begin = p.mul(args.pid, p.i64(block));
  Value end = p.add(begin, p.i64(block));
  end = p.select(p.lt(end, total), end, total);
  p.forLoop(begin, end, p.i64(1), [&](Value i) {
    Value a = p.load(args.buffers[0], lhsType, i);
    Value c = p.load(args.buffers[1], rhsType,
                     kind == ElementwiseKind::BiasAdd ? p.rems(i, p.i64(biasSize))
                                                      : i);
    Value r;
    switch (kind) {
    case ElementwiseKind::Add:
    case ElementwiseKind::BiasAdd:
      r = p.fadd(a, c);
      break;
    case ElementwiseKind::Mul:
      r = p.fmul(a, c);
      break;
    case ElementwiseKind::SwiGLU: {
      // silu(a) * c = a / (1 + exp(-a)) * c
      Value negA = p.fsub(p.f32(0.0f), a);
      Value sig = p.fdiv(p.f32(1.0f), p.fadd(p.f32(1.0f), p.exp(negA)));
      r = p.fmul(p.fmul(a, sig), c);
      break;
    }
    }
    p.store(r, args.buffers[2], outType, i);
  });
}

} // namespace kiln::kernels
