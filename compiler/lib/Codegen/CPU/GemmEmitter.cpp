//===- GemmEmitter.cpp - Blocked AVX-512 and AMX-BF16 GEMM entry points ---===//
//
// The optimized CPU emitter of the GEMM family (gemm with its epilogue
// addends, gemm_swiglu, gemm_dual): out[m, n] = epilogue(sum_k x[m, k] *
// w[n, k]), weights [N, K] and activations [M, K], both K-contiguous.
//
// The entry keeps the reference's ABI and program space (pid = row *
// col_tiles + tile) and computes its whole range [begin, end) at once: the
// range is split into at most three row blocks -- a partial first row (its
// column tiles from begin's on), the full rows, a partial last row -- and
// each block (rows [r0, r1) x columns [c0, c1)) goes to the blocked kernels
// of GemmKernels.h (AVX-512 fp32, or AMX-BF16 for >= 16 rows with
// --cpu-gemm-precision=bf16) through NAME.range.
//
//===----------------------------------------------------------------------===//
#include "Emitter.h"
#include "GemmKernels.h"

#include "kernel/IR/KernelDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

using namespace mlir;

namespace kiln::cpu {

namespace {

Type elemOf(Value v) { return cast<ShapedType>(v.getType()).getElementType(); }

/// The spec of a supported kernel, or failure with `why`.
FailureOr<GemmSpec> specOf(Operation *op, std::string &why) {
  GemmSpec s;
  auto shape = [](Value v) { return cast<ShapedType>(v.getType()).getShape(); };
  if (auto g = dyn_cast<kernel::GemmOp>(op)) {
    Projection p;
    p.weights = {1};
    p.wType = elemOf(g.getWeight());
    p.n = shape(g.getWeight())[0];
    for (unsigned i = 0; i < g.getAddends().size(); ++i)
      p.addends.push_back(2 + i);
    p.out = 2 + g.getAddends().size();
    p.outType = elemOf(g.getResult());
    s.k = shape(g.getWeight())[1];
    s.tileN = g.getTileN();
    s.xType = elemOf(g.getInput());
    s.projections.push_back(p);
  } else if (auto g = dyn_cast<kernel::GemmSwiGLUOp>(op)) {
    Projection p;
    p.weights = {1, 2};
    p.wType = elemOf(g.getWGate());
    if (elemOf(g.getWUp()) != p.wType) {
      why = "gate and up weights of different dtypes";
      return failure();
    }
    p.n = shape(g.getWGate())[0];
    p.out = 3;
    p.outType = elemOf(g.getResult());
    s.k = shape(g.getWGate())[1];
    s.tileN = g.getTileN();
    s.xType = elemOf(g.getInput());
    s.swiglu = true;
    s.projections.push_back(p);
  } else if (auto g = dyn_cast<kernel::GemmDualOp>(op)) {
    Projection p1, p2;
    p1.weights = {1};
    p1.wType = elemOf(g.getW1());
    p1.n = shape(g.getW1())[0];
    p1.out = 3;
    p1.outType = elemOf(g.getResult1());
    p2.weights = {2};
    p2.wType = elemOf(g.getW2());
    p2.n = shape(g.getW2())[0];
    p2.offset = p1.n;
    p2.out = 4;
    p2.outType = elemOf(g.getResult2());
    s.k = shape(g.getW1())[1];
    s.tileN = g.getTileN();
    s.xType = elemOf(g.getInput());
    s.projections = {p1, p2};
  } else if (auto g = dyn_cast<kernel::GemmFP8Op>(op)) {
    // xq, w, xs, ws, addends..., out
    Projection p;
    p.weights = {1};
    p.wScales = {3};
    p.wType = elemOf(g.getWeight());
    p.n = shape(g.getWeight())[0];
    for (unsigned i = 0; i < g.getAddends().size(); ++i)
      p.addends.push_back(4 + i);
    p.out = 4 + g.getAddends().size();
    p.outType = elemOf(g.getResult());
    s.k = shape(g.getWeight())[1];
    s.tileN = g.getTileN();
    s.xType = elemOf(g.getInput());
    s.fp8 = true;
    s.xScale = 2;
    s.act = g.getAct();
    s.wbN = g.getWeightBlockN();
    s.projections.push_back(p);
  } else if (auto g = dyn_cast<kernel::GemmDualFP8Op>(op)) {
    // xq, w1, w2, xs, ws1, ws2, out1, out2
    Projection p1, p2;
    p1.weights = {1};
    p1.wScales = {4};
    p1.wType = elemOf(g.getW1());
    p1.n = shape(g.getW1())[0];
    p1.out = 6;
    p1.outType = elemOf(g.getResult1());
    p2.weights = {2};
    p2.wScales = {5};
    p2.wType = elemOf(g.getW2());
    p2.n = shape(g.getW2())[0];
    p2.offset = p1.n;
    p2.out = 7;
    p2.outType = elemOf(g.getResult2());
    s.k = shape(g.getW1())[1];
    s.tileN = g.getTileN();
    s.xType = elemOf(g.getInput());
    s.fp8 = true;
    s.xScale = 3;
    s.act = g.getAct();
    s.wbN = g.getWeightBlockN();
    s.projections = {p1, p2};
  } else if (auto g = dyn_cast<kernel::GemmSwiGLUFP8Op>(op)) {
    // xq, w_gate, w_up, xs, w_gate_scale, w_up_scale -> q, s, workspace
    Projection p;
    p.weights = {1, 2};
    p.wScales = {4, 5};
    p.wType = elemOf(g.getWGate());
    if (elemOf(g.getWUp()) != p.wType) {
      why = "gate and up weights of different dtypes";
      return failure();
    }
    p.n = shape(g.getWGate())[0];
    p.out = 8;
    p.outType = elemOf(g.getWorkspace());
    s.k = shape(g.getWGate())[1];
    s.tileN = g.getTileN();
    s.xType = elemOf(g.getInput());
    s.swiglu = true;
    s.fp8 = true;
    s.xScale = 3;
    s.act = g.getAct();
    s.wbN = g.getWeightBlockN();
    s.quantQ = 6;
    s.quantS = 7;
    s.quantType = elemOf(g.getResult());
    s.projections.push_back(p);
  } else {
    why = "not a GEMM";
    return failure();
  }
  for (const Projection &p : s.projections)
    s.combinedN += p.n;
  if (failed(checkOperandTypes(s, why)))
    return failure();
  return s;
}

class GemmEmitter : public CpuEmitter {
public:
  explicit GemmEmitter(GemmSpec spec) : s(std::move(spec)) {}

  std::string describe() const override { return describeBlocking(s); }

  void emitEntry(OpBuilder &b, ModuleOp module, const KernelRecord &kernel,
                 const EntryArgs &args) override {
    unsigned nb = args.buffers.size();
    func::FuncOp range = emitRangeHelper(module, args.loc, kernel.name, s, nb);
    // [begin, end) of pid = row * tiles + tile as at most three row blocks.
    int64_t tiles = (s.combinedN + s.tileN - 1) / s.tileN;
    forEachRowBlock(b, args.loc, args.begin, args.end, tiles, s.tileN,
                    s.combinedN, [&](Value r0, Value r1, Value c0, Value c1) {
                      callHelper(b, args.loc, range, args.buffers, r0, r1, c0,
                                 c1);
                    });
  }

private:
  GemmSpec s;
};

} // namespace

std::unique_ptr<CpuEmitter>
makeGemmEmitter(const KernelRecord &kernel, const CpuCodegenOptions &options,
                const CpuTarget &target, std::string &why) {
  if (!target.avx512 && !target.avx2fma) {
    why = "neither AVX-512 nor AVX2 + FMA on the target CPU";
    return nullptr;
  }
  FailureOr<GemmSpec> spec = specOf(kernel.representative, why);
  if (failed(spec))
    return nullptr;
  chooseBlocking(*spec, options, target);
  return std::make_unique<GemmEmitter>(std::move(*spec));
}

} // namespace kiln::cpu
