//===- FuseQuantize.cpp - Fuse activation quantization into producers -----===//
//
// DeepSeek-V3 quantizes activations where they are produced: a
// kiln_kernel.quantize whose input comes from an RMSNorm becomes one
// rms_norm_quant launch (which still yields the f32 row for other users, such
// as the MoE router); one fed by a SwiGLU used only by it becomes
// swiglu_quant. The quantized values never round-trip through memory in f32.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "Rebuild.h"

#include "kernel/IR/KernelDialect.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_KILNFUSEQUANTIZE
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;
namespace k = kiln::kernel;

namespace {

struct FuseIntoRMSNorm : OpRewritePattern<k::QuantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(k::QuantizeOp op,
                                PatternRewriter &rw) const override {
    // The fused producers quantize as kiln.quantize does without its flags.
    if (op.hasScaleFlags())
      return failure();
    auto norm = op.getInput().getDefiningOp<k::RMSNormOp>();
    if (!norm || norm.getInputStride() != 0 || norm.getCache())
      return failure();
    rw.setInsertionPoint(norm);
    auto fused = k::RMSNormQuantOp::create(
        rw, rw.getFusedLoc({norm.getLoc(), op.getLoc()}),
        TypeRange{norm.getType(), op.getResult().getType(),
                  op.getScale().getType()},
        norm.getInput(), norm.getWeight(), norm.getEpsilonAttr(),
        op.getActAttr(), kiln::concatFusedOps(rw, {norm.getFusedOps(), op.getFusedOps()}));
    rw.replaceOp(op, {fused.getQuantized(), fused.getScale()});
    rw.replaceOp(norm, fused.getResult());
    return success();
  }
};

struct FuseIntoSwiGLU : OpRewritePattern<k::QuantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(k::QuantizeOp op,
                                PatternRewriter &rw) const override {
    if (op.hasScaleFlags())
      return failure();
    auto ew = op.getInput().getDefiningOp<k::ElementwiseOp>();
    if (!ew || ew.getKind() != "swiglu" || !ew->hasOneUse())
      return failure();
    auto fused = k::SwiGLUQuantOp::create(
        rw, rw.getFusedLoc({ew.getLoc(), op.getLoc()}),
        TypeRange{op.getResult().getType(), op.getScale().getType()},
        ew.getLhs(), ew.getRhs(), op.getActAttr(),
        kiln::concatFusedOps(rw, {ew.getFusedOps(), op.getFusedOps()}));
    rw.replaceOp(op, fused->getResults());
    rw.eraseOp(ew);
    return success();
  }
};

/// quantize(view(mla_attention)) -> mla_attention_quant when every head's
/// output row is whole activation tiles (v_head_dim % act == 0).
struct FuseIntoMLA : OpRewritePattern<k::QuantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(k::QuantizeOp op,
                                PatternRewriter &rw) const override {
    if (op.hasScaleFlags())
      return failure();
    auto view = op.getInput().getDefiningOp<k::ViewOp>();
    auto mla = view ? view.getInput().getDefiningOp<k::MLAAttentionOp>()
                    : k::MLAAttentionOp();
    if (!mla)
      return failure();
    auto out = cast<RankedTensorType>(mla.getResult().getType());
    if (out.getShape().back() % op.getAct() != 0)
      return failure();
    rw.setInsertionPoint(mla);
    // Every attribute of the MLA carries over (q_nope/q_rope sources, a
    // fused rotation), plus the activation tile.
    auto fused = cast<k::MLAAttentionQuantOp>(kiln::rebuildOp(
        rw, mla, rw.getFusedLoc({mla.getLoc(), op.getLoc()}),
        k::MLAAttentionQuantOp::getOperationName(), mla->getOperands(),
        TypeRange{mla.getResult().getType(), mla.getWorkspace().getType(),
                  op.getResult().getType(), op.getScale().getType()},
        {rw.getNamedAttr("act", op.getActAttr()),
         rw.getNamedAttr("fused_ops",
                         kiln::concatFusedOps(rw, {mla.getFusedOps(), op.getFusedOps()}))}));
    rw.replaceOp(op, {fused.getQuantized(), fused.getQuantScale()});
    rw.replaceOp(mla, {fused.getResult(), fused.getWorkspace()});
    return success();
  }
};

struct KilnFuseQuantizePass
    : kiln::impl::KilnFuseQuantizeBase<KilnFuseQuantizePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseIntoRMSNorm, FuseIntoSwiGLU, FuseIntoMLA>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
