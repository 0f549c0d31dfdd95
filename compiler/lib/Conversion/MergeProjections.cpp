//===- MergeProjections.cpp - Projections sharing an input, one launch ----===//
//
// Two plain GEMMs of the same input (DeepSeek's q_a_proj and
// kv_a_proj_with_mqa; Llama's q and k projections) become one gemm_dual
// launch that reads the input once. The second weight's kiln.weight (no
// operands) is moved up so that the merged launch can take the first GEMM's
// place.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "kernel/IR/KernelDialect.h"
#include "kiln/IR/KilnDialect.h"
#include "kiln/Kernels/Heuristics.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_KILNMERGEPROJECTIONS
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;
namespace k = kiln::kernel;

namespace {

bool movableBefore(Value w, Operation *op) {
  if (auto arg = dyn_cast<BlockArgument>(w))
    return arg.getOwner() == op->getBlock();
  Operation *def = w.getDefiningOp();
  if (def->getBlock() != op->getBlock())
    return false;
  return def->isBeforeInBlock(op) ||
         (def->getNumOperands() == 0 &&
          isa<kiln::graph::WeightOp, kiln::graph::WeightStackOp>(def));
}

struct MergeGemmPair : OpRewritePattern<k::GemmOp> {
  MergeGemmPair(MLIRContext *ctx, int64_t minPrograms)
      : OpRewritePattern(ctx), minPrograms(minPrograms) {}
  LogicalResult matchAndRewrite(k::GemmOp first,
                                PatternRewriter &rw) const override {
    if (!first.getAddends().empty())
      return failure();
    // The next plain GEMM of the same input after `first`.
    k::GemmOp second;
    for (Operation *user : first.getInput().getUsers()) {
      auto g = dyn_cast<k::GemmOp>(user);
      if (!g || g == first || !g.getAddends().empty() ||
          g->getBlock() != first->getBlock() || !first->isBeforeInBlock(g))
        continue;
      if (g.getInput() != first.getInput() ||
          !movableBefore(g.getWeight(), first))
        continue;
      if (!second || g->isBeforeInBlock(second))
        second = g;
    }
    if (!second)
      return failure();
    if (Operation *def = second.getWeight().getDefiningOp())
      if (!def->isBeforeInBlock(first))
        rw.moveOpBefore(def, first);
    auto t1 = cast<RankedTensorType>(first.getType());
    auto t2 = cast<RankedTensorType>(second.getType());
    int64_t kdim =
        cast<RankedTensorType>(first.getInput().getType()).getShape().back();
    int64_t m = t1.getNumElements() / t1.getShape().back();
    int64_t n = t1.getShape().back() + t2.getShape().back();
    int64_t tileN = kiln::kernels::chooseGemmTileN(m, n, kdim, minPrograms);
    SmallVector<Attribute> fused(first.getFusedOps().begin(),
                                 first.getFusedOps().end());
    fused.append(second.getFusedOps().begin(), second.getFusedOps().end());
    rw.setInsertionPoint(first);
    auto dual = k::GemmDualOp::create(
        rw, rw.getFusedLoc({first.getLoc(), second.getLoc()}),
        TypeRange{t1, t2}, first.getInput(), first.getWeight(),
        second.getWeight(), rw.getI64IntegerAttr(tileN),
        rw.getArrayAttr(fused));
    rw.replaceOp(second, dual.getResult2());
    rw.replaceOp(first, dual.getResult1());
    return success();
  }
  int64_t minPrograms;
};

struct KilnMergeProjectionsPass
    : kiln::impl::KilnMergeProjectionsBase<KilnMergeProjectionsPass> {
  using Base::Base;
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<MergeGemmPair>(&getContext(), minGemmPrograms);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
