//===- FuseResidual.cpp - Fold adds into GEMM and expert epilogues --------===//
//
// `add(producer, other)` where the producer is a GEMM (plain or FP8) or the
// MoE combine, used only by the add, becomes the producer with `other` as an
// epilogue addend: residual connections (and a shared expert that was not
// folded into the grouped experts) cost no launch and no extra pass over
// memory. A producer takes up to two
// addends; `other` must already be computed where the producer runs.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "Rebuild.h"

#include "kernel/IR/KernelDialect.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_KILNFUSERESIDUAL
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;
namespace k = kiln::kernel;

namespace {

constexpr unsigned kMaxAddends = 2;

/// The producer of `v`, looking through one single-use view.
Operation *producerOf(Value v, k::ViewOp &view) {
  view = v.getDefiningOp<k::ViewOp>();
  if (view) {
    if (!view->hasOneUse())
      return nullptr;
    v = view.getInput();
  }
  Operation *op = v.getDefiningOp();
  if (!op || !op->hasOneUse())
    return nullptr;
  if (!isa<k::GemmOp, k::GemmFP8Op, k::MoECombineOp>(op))
    return nullptr;
  return op;
}

/// True when `v` is available at `op` (defined before it in its block).
bool availableAt(Value v, Operation *op) {
  if (auto arg = dyn_cast<BlockArgument>(v))
    return arg.getOwner() == op->getBlock();
  Operation *def = v.getDefiningOp();
  return def->getBlock() == op->getBlock() && def->isBeforeInBlock(op);
}

struct FoldAddIntoEpilogue : OpRewritePattern<k::ElementwiseOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(k::ElementwiseOp add,
                                PatternRewriter &rw) const override {
    if (add.getKind() != "add" || add.getLhs().getType() != add.getType() ||
        add.getRhs().getType() != add.getType())
      return failure();
    Value operands[2] = {add.getLhs(), add.getRhs()};
    for (unsigned i = 0; i < 2; ++i) {
      k::ViewOp view;
      Operation *prod = producerOf(operands[i], view);
      Value other = operands[1 - i];
      if (!prod || !availableAt(other, prod))
        continue;
      unsigned nAdd = 0;
      if (auto g = dyn_cast<k::GemmOp>(prod))
        nAdd = g.getAddends().size();
      else if (auto g = dyn_cast<k::GemmFP8Op>(prod))
        nAdd = g.getAddends().size();
      else if (auto m = dyn_cast<k::MoECombineOp>(prod))
        nAdd = m.getAddends().size();
      if (nAdd >= kMaxAddends)
        continue;
      Type prodType = prod->getResult(0).getType();
      rw.setInsertionPoint(prod);
      Value addend = other;
      if (addend.getType() != prodType)
        addend = k::ViewOp::create(rw, add.getLoc(), prodType, other);
      // Rebuild the producer with one more addend (operands are
      // inputs..., addends...; the new addend goes last).
      SmallVector<Value> newOperands(prod->getOperands());
      newOperands.push_back(addend);
      auto prodFused = cast<ArrayAttr>(prod->getAttr("fused_ops"));
      Operation *fused = kiln::rebuildOp(
          rw, prod, rw.getFusedLoc({prod->getLoc(), add.getLoc()}),
          newOperands,
          {rw.getNamedAttr("fused_ops", kiln::concatFusedOps(
                                            rw, {prodFused, add.getFusedOps()}))});
      Value result = fused->getResult(0);
      rw.replaceOp(prod, fused->getResults());
      rw.setInsertionPoint(add);
      if (result.getType() != add.getType())
        result = k::ViewOp::create(rw, add.getLoc(), add.getType(), result);
      rw.replaceOp(add, result);
      if (view && view->use_empty())
        rw.eraseOp(view);
      return success();
    }
    return failure();
  }
};

struct KilnFuseResidualPass
    : kiln::impl::KilnFuseResidualBase<KilnFuseResidualPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FoldAddIntoEpilogue>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
