//===- FuseGatedMLP.cpp - Gate and up GEMMs with SwiGLU in one launch -----===//
//
// swiglu(gemm(x, W_gate), gemm(x, W_up)), both GEMMs used only there, becomes
// one gemm_swiglu launch: x is read once, the gate and up activations never
// reach memory.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "Rebuild.h"

#include "kernel/IR/KernelDialect.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_KILNFUSEGATEDMLP
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;
namespace k = kiln::kernel;

namespace {

struct FuseSwiGLUIntoGemms : OpRewritePattern<k::ElementwiseOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(k::ElementwiseOp op,
                                PatternRewriter &rw) const override {
    if (op.getKind() != "swiglu")
      return failure();
    auto gate = op.getLhs().getDefiningOp<k::GemmOp>();
    auto up = op.getRhs().getDefiningOp<k::GemmOp>();
    if (!gate || !up || gate == up || !gate->hasOneUse() || !up->hasOneUse() ||
        gate.getInput() != up.getInput() || !gate.getAddends().empty() ||
        !up.getAddends().empty() || gate.getType() != up.getType() ||
        gate.getType() != op.getType() ||
        gate.getWeight().getType() != up.getWeight().getType())
      return failure();
    auto fusedOp = k::GemmSwiGLUOp::create(
        rw, rw.getFusedLoc({gate.getLoc(), up.getLoc(), op.getLoc()}),
        op.getType(), gate.getInput(), gate.getWeight(), up.getWeight(),
        gate.getTileNAttr(),
        kiln::concatFusedOps(
            rw, {gate.getFusedOps(), up.getFusedOps(), op.getFusedOps()}));
    rw.replaceOp(op, fusedOp.getResult());
    rw.eraseOp(gate);
    rw.eraseOp(up);
    return success();
  }
};

/// FP8: quantize(swiglu(gemm_fp8(xq, W_gate), gemm_fp8(xq, W_up))) becomes
/// one gemm_swiglu_fp8, which also quantizes its output for the down
/// projection.
struct FuseSwiGLUIntoFP8Gemms : OpRewritePattern<k::QuantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(k::QuantizeOp quant,
                                PatternRewriter &rw) const override {
    auto op = quant.getInput().getDefiningOp<k::ElementwiseOp>();
    if (quant.hasScaleFlags() || !op || op.getKind() != "swiglu" ||
        !op->hasOneUse())
      return failure();
    auto gate = op.getLhs().getDefiningOp<k::GemmFP8Op>();
    auto up = op.getRhs().getDefiningOp<k::GemmFP8Op>();
    if (!gate || !up || gate == up || !gate->hasOneUse() || !up->hasOneUse() ||
        gate.getInput() != up.getInput() ||
        gate.getInputScale() != up.getInputScale() ||
        !gate.getAddends().empty() || !up.getAddends().empty() ||
        gate.getType() != up.getType() || gate.getType() != op.getType() ||
        gate.getWeight().getType() != up.getWeight().getType() ||
        gate.getAct() != up.getAct() || gate.getAct() != quant.getAct() ||
        gate.getWeightBlockN() != up.getWeightBlockN())
      return failure();
    auto outTy = cast<RankedTensorType>(op.getType());
    int64_t n = outTy.getShape().back(), act = quant.getAct();
    rw.setInsertionPoint(quant);
    auto fusedOp = k::GemmSwiGLUFP8Op::create(
        rw,
        rw.getFusedLoc({gate.getLoc(), up.getLoc(), op.getLoc(),
                        quant.getLoc()}),
        TypeRange{quant.getResult().getType(), quant.getScale().getType(),
                  outTy},
        gate.getInput(), gate.getWeight(), up.getWeight(),
        gate.getInputScale(), gate.getWeightScale(), up.getWeightScale(),
        rw.getI64IntegerAttr(n > act ? act : n), gate.getActAttr(),
        gate.getWeightBlockNAttr(),
        kiln::concatFusedOps(rw, {gate.getFusedOps(), up.getFusedOps(),
                                  op.getFusedOps(), quant.getFusedOps()}));
    rw.replaceOp(quant, ValueRange{fusedOp.getResult(), fusedOp.getScale()});
    rw.eraseOp(op);
    rw.eraseOp(gate);
    rw.eraseOp(up);
    return success();
  }
};

struct KilnFuseGatedMLPPass
    : kiln::impl::KilnFuseGatedMLPBase<KilnFuseGatedMLPPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseSwiGLUIntoGemms, FuseSwiGLUIntoFP8Gemms>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
