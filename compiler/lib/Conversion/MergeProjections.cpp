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

#include "Rebuild.h"

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

/// The next GEMM of `first`'s kind after it in its block that reads the same
/// input (and, FP8, the same input scales), has no addends and whose
/// weights can be moved before `first`.
template <typename GemmT>
GemmT nextMergeable(GemmT first, function_ref<SmallVector<Value>(GemmT)> weights,
                    function_ref<bool(GemmT, GemmT)> compatible) {
  GemmT second;
  for (Operation *user : first.getInput().getUsers()) {
    auto g = dyn_cast<GemmT>(user);
    if (!g || g == first || !g.getAddends().empty() ||
        g->getBlock() != first->getBlock() || !first->isBeforeInBlock(g) ||
        g.getInput() != first.getInput() || !compatible(first, g))
      continue;
    if (!llvm::all_of(weights(g),
                      [&](Value w) { return movableBefore(w, first); }))
      continue;
    if (!second || g->isBeforeInBlock(second))
      second = g;
  }
  return second;
}

/// Moves the definitions of `values` (weights) before `op` where needed.
void hoistBefore(PatternRewriter &rw, ArrayRef<Value> values, Operation *op) {
  for (Value v : values)
    if (Operation *def = v.getDefiningOp())
      if (!def->isBeforeInBlock(op))
        rw.moveOpBefore(def, op);
}

/// The combined tile and fused-op list of a merged pair.
template <typename GemmT>
std::pair<int64_t, ArrayAttr> mergedConfig(PatternRewriter &rw, GemmT first,
                                           GemmT second, int64_t minPrograms) {
  auto t1 = cast<RankedTensorType>(first.getResult().getType());
  auto t2 = cast<RankedTensorType>(second.getResult().getType());
  int64_t kdim =
      cast<RankedTensorType>(first.getInput().getType()).getShape().back();
  int64_t m = t1.getNumElements() / t1.getShape().back();
  int64_t n = t1.getShape().back() + t2.getShape().back();
  int64_t tileN = kiln::kernels::chooseGemmTileN(m, n, kdim, minPrograms);
  return {tileN,
          kiln::concatFusedOps(rw, {first.getFusedOps(), second.getFusedOps()})};
}

struct MergeGemmPair : OpRewritePattern<k::GemmOp> {
  MergeGemmPair(MLIRContext *ctx, int64_t minPrograms)
      : OpRewritePattern(ctx), minPrograms(minPrograms) {}
  LogicalResult matchAndRewrite(k::GemmOp first,
                                PatternRewriter &rw) const override {
    if (!first.getAddends().empty())
      return failure();
    auto weights = [](k::GemmOp g) {
      return SmallVector<Value>{g.getWeight()};
    };
    k::GemmOp second = nextMergeable<k::GemmOp>(
        first, weights, [](k::GemmOp, k::GemmOp) { return true; });
    if (!second)
      return failure();
    hoistBefore(rw, weights(second), first);
    auto [tileN, fused] = mergedConfig(rw, first, second, minPrograms);
    rw.setInsertionPoint(first);
    auto dual = k::GemmDualOp::create(
        rw, rw.getFusedLoc({first.getLoc(), second.getLoc()}),
        TypeRange{first.getType(), second.getType()}, first.getInput(),
        first.getWeight(), second.getWeight(), rw.getI64IntegerAttr(tileN),
        fused);
    rw.replaceOp(second, dual.getResult2());
    rw.replaceOp(first, dual.getResult1());
    return success();
  }
  int64_t minPrograms;
};

/// The FP8 form: two block-scaled GEMMs of the same quantized input.
struct MergeFP8GemmPair : OpRewritePattern<k::GemmFP8Op> {
  MergeFP8GemmPair(MLIRContext *ctx, int64_t minPrograms)
      : OpRewritePattern(ctx), minPrograms(minPrograms) {}
  LogicalResult matchAndRewrite(k::GemmFP8Op first,
                                PatternRewriter &rw) const override {
    if (!first.getAddends().empty())
      return failure();
    auto weights = [](k::GemmFP8Op g) {
      return SmallVector<Value>{g.getWeight(), g.getWeightScale()};
    };
    k::GemmFP8Op second = nextMergeable<k::GemmFP8Op>(
        first, weights, [](k::GemmFP8Op a, k::GemmFP8Op b) {
          return a.getInputScale() == b.getInputScale() &&
                 a.getAct() == b.getAct() &&
                 a.getWeightBlockN() == b.getWeightBlockN();
        });
    if (!second)
      return failure();
    hoistBefore(rw, weights(second), first);
    auto [tileN, fused] = mergedConfig(rw, first, second, minPrograms);
    rw.setInsertionPoint(first);
    auto dual = k::GemmDualFP8Op::create(
        rw, rw.getFusedLoc({first.getLoc(), second.getLoc()}),
        TypeRange{first.getType(), second.getType()}, first.getInput(),
        first.getWeight(), second.getWeight(), first.getInputScale(),
        first.getWeightScale(), second.getWeightScale(),
        rw.getI64IntegerAttr(tileN), first.getActAttr(),
        first.getWeightBlockNAttr(), fused);
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
    patterns.add<MergeGemmPair, MergeFP8GemmPair>(&getContext(),
                                                   minGemmPrograms);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
