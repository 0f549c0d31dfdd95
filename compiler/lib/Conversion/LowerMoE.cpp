//===- LowerMoE.cpp - kiln.moe -> routing, grouped experts, combine -------===//
//
// The MoE lowering (also run by kiln-lower-to-kernels): routing with the
// token permutation into the experts' contiguous layout, the grouped gate+up
// and down GEMMs over it, and the combine. `block-m` overrides the layout's
// block (chooseMoEBlockM otherwise).
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "Lowering.h"
#include "kernel/IR/KernelDialect.h"
#include "kiln/IR/KilnDialect.h"
#include "kiln/Kernels/Heuristics.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_KILNLOWERMOE
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;
namespace g = kiln::graph;
namespace k = kiln::kernel;

namespace {

/// kiln.moe -> routing with the token permutation, the grouped gate+up
/// GEMM (SwiGLU, and quantization in FP8), the grouped down GEMM and the
/// combine: 4 launches, whatever the number of experts.
struct LowerMoE : OpRewritePattern<g::MoEOp> {
  LowerMoE(MLIRContext *ctx, int64_t minPrograms, int64_t blockM)
      : OpRewritePattern(ctx), minPrograms(minPrograms), blockM(blockM) {}
  LogicalResult matchAndRewrite(g::MoEOp op,
                                PatternRewriter &rw) const override {
    auto xTy = cast<RankedTensorType>(op.getInput().getType());
    int64_t d = xTy.getShape().back();
    int64_t tokens = xTy.getNumElements() / d;
    auto wg = cast<RankedTensorType>(op.getWGate().getType());
    int64_t e = cast<RankedTensorType>(op.getRouter().getType()).getDimSize(0);
    int64_t f = wg.getDimSize(1);
    int64_t topK = op.getTopK(), shared = op.getSharedExperts();
    Location loc = op.getLoc();
    ArrayAttr fused = kiln::fusedOps(rw, {g::MoEOp::getOperationName()});
    Type i32 = rw.getI32Type(), f32 = rw.getF32Type();
    auto tensor = [](ArrayRef<int64_t> shape, Type t) {
      return RankedTensorType::get(shape, t);
    };
    // Flatten tokens: [tokens, d].
    Value x = op.getInput();
    if (xTy.getRank() != 2)
      x = k::ViewOp::create(rw, loc, tensor({tokens, d}, xTy.getElementType()),
                            x);
    kiln::kernels::MoELayout layout{
        tokens, topK + shared, e + shared,
        blockM > 0 ? blockM
                   : kiln::kernels::chooseMoEBlockM(tokens * (topK + shared),
                                                    e + shared)};
    int64_t rows = layout.rows();
    // The routing's self-resetting counter lives in (zeroed) state memory;
    // launches run one after another, so every MoE layer shares one.
    Value sync = g::StateOp::create(rw, loc, tensor({1}, i32),
                                    rw.getStringAttr("kiln.moe_route.sync"));
    auto route = k::MoERouteOp::create(
        rw, loc,
        TypeRange{tensor({tokens, topK}, i32), tensor({tokens, topK}, f32),
                  tensor({tokens * (2 * e + op.getNGroup()) + layout.experts},
                         f32),
                  tensor({rows}, i32), tensor({layout.blocks()}, i32),
                  tensor({tokens, layout.slots}, i32)},
        x, op.getRouter(), op.getCorrectionBias(), sync, op.getTopKAttr(),
        op.getScoringAttr(), op.getNGroupAttr(), op.getTopkGroupAttr(),
        op.getGroupScoreAttr(), op.getNormTopkProbAttr(),
        op.getRoutedScalingFactorAttr(),
        rw.getI64IntegerAttr(layout.blockM), rw.getI64IntegerAttr(shared),
        xTy.getRank() >= 3 ? rw.getI64IntegerAttr(xTy.getDimSize(1))
                           : IntegerAttr(),
        fused);
    Value sorted = route.getSortedToken(), blocks = route.getBlockExpert();
    // With shared experts folded in (kiln-fold-shared-experts), the grouped
    // GEMMs and the combine also compute the shared MLP's ops.
    StringRef moeName = g::MoEOp::getOperationName();
    StringRef lin = g::LinearOp::getOperationName();
    ArrayAttr upFused = shared ? kiln::fusedOps(rw, {moeName, lin, lin,
                                              g::SwiGLUOp::getOperationName()})
                               : fused;
    ArrayAttr downFused = shared ? kiln::fusedOps(rw, {moeName, lin}) : fused;
    ArrayAttr combineFused =
        shared ? kiln::fusedOps(rw, {moeName, g::AddOp::getOperationName()}) : fused;
    IntegerAttr blockM = rw.getI64IntegerAttr(layout.blockM);
    int64_t tileD =
        kiln::kernels::chooseGemmTileN(layout.blocks(), d, f, minPrograms);
    Value expertRows;
    if (auto q = op.getQuantAttr()) {
      int64_t a = q.getActBlock();
      int64_t tileF = f > a ? a : f;
      Value xq = op.getInputQ(), xs = op.getInputScale();
      auto xqTy = cast<RankedTensorType>(xq.getType());
      auto xsTy = cast<RankedTensorType>(xs.getType());
      if (xqTy.getRank() != 2) {
        xq = k::ViewOp::create(rw, loc,
                               tensor({tokens, d}, xqTy.getElementType()), xq);
        xs = k::ViewOp::create(
            rw, loc,
            tensor({tokens, xsTy.getShape().back()}, xsTy.getElementType()),
            xs);
      }
      auto up = k::MoEUpFP8Op::create(
          rw, loc,
          TypeRange{tensor({rows, f}, q.getElementType()),
                    tensor({rows, (f + a - 1) / a}, f32),
                    tensor({rows, f}, f32)},
          xq, xs, sorted, blocks, op.getWGate(), op.getWUp(),
          op.getWGateScale(), op.getWUpScale(), blockM,
          rw.getI64IntegerAttr(tileF), rw.getI64IntegerAttr(a), upFused);
      expertRows = k::MoEDownFP8Op::create(
          rw, loc, tensor({rows, d}, f32), up.getResult(), up.getScale(),
          sorted, blocks, op.getWDown(), op.getWDownScale(), blockM,
          rw.getI64IntegerAttr(tileD), rw.getI64IntegerAttr(a), downFused);
    } else {
      int64_t tileF =
          kiln::kernels::chooseGemmTileN(layout.blocks(), f, d, minPrograms);
      Value act = k::MoEUpOp::create(rw, loc, tensor({rows, f}, f32), x,
                                     sorted, blocks, op.getWGate(),
                                     op.getWUp(), blockM,
                                     rw.getI64IntegerAttr(tileF), upFused);
      expertRows = k::MoEDownOp::create(rw, loc, tensor({rows, d}, f32), act,
                                        sorted, blocks, op.getWDown(), blockM,
                                        rw.getI64IntegerAttr(tileD), downFused);
    }
    int64_t tileC = kiln::kernels::chooseGemmTileN(tokens, d, 1, minPrograms);
    Value y = k::MoECombineOp::create(
        rw, loc, tensor({tokens, d}, xTy.getElementType()), expertRows,
        route.getSlotRow(), route.getWeights(), ValueRange{},
        rw.getI64IntegerAttr(tileC), combineFused);
    if (xTy.getRank() != 2)
      y = k::ViewOp::create(rw, loc, xTy, y);
    rw.replaceOp(op, y);
    return success();
  }
  int64_t minPrograms, blockM;
};

struct KilnLowerMoEPass : kiln::impl::KilnLowerMoEBase<KilnLowerMoEPass> {
  using Base::Base;
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    kiln::populateLowerMoEPatterns(patterns, minGemmPrograms, blockM);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void kiln::populateLowerMoEPatterns(RewritePatternSet &patterns,
                                    int64_t minGemmPrograms, int64_t blockM) {
  patterns.add<LowerMoE>(patterns.getContext(), minGemmPrograms, blockM);
}
