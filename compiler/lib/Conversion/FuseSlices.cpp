//===- FuseSlices.cpp - Read sliced rows in place -------------------------===//
//
// A slice of the last dimension feeding a kernel that reads whole rows is
// folded into that kernel, which reads the rows where they lie (a row stride
// and an offset): rope(view?(slice(x))) rotates the rope parts of q and of
// the compressed KV in place, rms_norm(slice(x)) normalizes the latent in
// place, and MLA reads q_nope straight out of q. No slice launch, no copy.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "Rebuild.h"

#include "kernel/IR/KernelDialect.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_KILNFUSESLICES
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;
namespace k = kiln::kernel;

namespace {

struct FuseSliceIntoRope : OpRewritePattern<k::RopeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(k::RopeOp rope,
                                PatternRewriter &rw) const override {
    if (rope.getInputStride() != 0)
      return failure();
    Value in = rope.getInput();
    auto view = in.getDefiningOp<k::ViewOp>();
    if (view) {
      if (!view->hasOneUse())
        return failure();
      in = view.getInput();
    }
    auto slice = in.getDefiningOp<k::SliceOp>();
    if (!slice || !slice->hasOneUse())
      return failure();
    auto src = cast<RankedTensorType>(slice.getInput().getType());
    auto res = cast<RankedTensorType>(rope.getType());
    if (src.getElementType() != res.getElementType())
      return failure();
    SmallVector<NamedAttribute> attrs(rope->getAttrs());
    auto fused = k::RopeOp::create(
        rw, rw.getFusedLoc({slice.getLoc(), rope.getLoc()}), rope.getType(),
        slice.getInput(), rope.getStart(), rope.getCache(),
        rope.getThetaAttr(),
        rope.getRotaryDimAttr(), rope.getInterleavedAttr(),
        rope.getScalingFactorAttr(), rope.getYarnFactorAttr(),
        rope.getYarnLowAttr(), rope.getYarnHighAttr(), rope.getMscaleAttr(),
        rw.getI64IntegerAttr(src.getShape().back()), slice.getOffsetAttr(),
        kiln::concatFusedOps(rw, {slice.getFusedOps(), rope.getFusedOps()}));
    rw.replaceOp(rope, fused.getResult());
    if (view)
      rw.eraseOp(view);
    rw.eraseOp(slice);
    return success();
  }
};

/// The slice feeding `v` (through at most one single-use view), if it has no
/// other use.
k::SliceOp sliceOf(Value v, k::ViewOp &view) {
  view = v.getDefiningOp<k::ViewOp>();
  if (view) {
    if (!view->hasOneUse())
      return {};
    v = view.getInput();
  }
  auto slice = v.getDefiningOp<k::SliceOp>();
  if (!slice || !slice->hasOneUse())
    return {};
  auto in = cast<RankedTensorType>(slice.getInput().getType());
  auto out = cast<RankedTensorType>(slice.getType());
  if (in.getElementType() != out.getElementType())
    return {};
  return slice;
}

struct FuseSliceIntoRMSNorm : OpRewritePattern<k::RMSNormOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(k::RMSNormOp norm,
                                PatternRewriter &rw) const override {
    if (norm.getInputStride() != 0 || norm.getCache())
      return failure();
    k::ViewOp view;
    k::SliceOp slice = sliceOf(norm.getInput(), view);
    if (!slice)
      return failure();
    auto src = cast<RankedTensorType>(slice.getInput().getType());
    auto fused = k::RMSNormOp::create(
        rw, rw.getFusedLoc({slice.getLoc(), norm.getLoc()}), norm.getType(),
        slice.getInput(), norm.getWeight(), norm.getCache(),
        norm.getCacheStart(), norm.getEpsilonAttr(),
        rw.getI64IntegerAttr(src.getShape().back()), slice.getOffsetAttr(),
        kiln::concatFusedOps(rw, {slice.getFusedOps(), norm.getFusedOps()}));
    rw.replaceOp(norm, fused.getResult());
    if (view)
      rw.eraseOp(view);
    rw.eraseOp(slice);
    return success();
  }
};

/// q_nope = slice(q, 0, d_nope) feeding MLA (absorbed or naive): MLA reads
/// it with q's row stride.
template <typename MLAOpT>
struct FuseSliceIntoMLA : OpRewritePattern<MLAOpT> {
  using OpRewritePattern<MLAOpT>::OpRewritePattern;
  LogicalResult matchAndRewrite(MLAOpT mla,
                                PatternRewriter &rw) const override {
    if (mla.getQNopeStride() != 0)
      return failure();
    k::ViewOp view;
    k::SliceOp slice = sliceOf(mla.getQNope(), view);
    if (!slice || slice.getOffset() != 0)
      return failure();
    auto src = cast<RankedTensorType>(slice.getInput().getType());
    SmallVector<Value> operands(mla->getOperands());
    operands[0] = slice.getInput(); // q_nope
    Operation *fused = kiln::rebuildOp(
        rw, mla, rw.getFusedLoc({slice.getLoc(), mla.getLoc()}), operands,
        {rw.getNamedAttr("q_nope_stride",
                         rw.getI64IntegerAttr(src.getShape().back())),
         rw.getNamedAttr("fused_ops", kiln::concatFusedOps(rw, {slice.getFusedOps(), mla.getFusedOps()}))});
    rw.replaceOp(mla, fused->getResults());
    if (view)
      rw.eraseOp(view);
    rw.eraseOp(slice);
    return success();
  }
};

struct KilnFuseSlicesPass
    : kiln::impl::KilnFuseSlicesBase<KilnFuseSlicesPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseSliceIntoRope, FuseSliceIntoRMSNorm,
                 FuseSliceIntoMLA<k::MLAAttentionOp>,
                 FuseSliceIntoMLA<k::MLANaiveOp>>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
