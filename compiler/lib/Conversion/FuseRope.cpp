//===- FuseRope.cpp - Fuse slices into the rotary embedding that reads them ===//
//
// rope(view?(slice(x))) reads its rows straight from x (input_stride = the
// row width of x, input_offset = the slice's offset), so the rope part of q
// and of the compressed KV projection is rotated where it lies: no slice
// launch, no copy.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "kernel/IR/KernelDialect.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_KILNFUSEROPE
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
        slice.getInput(), rope.getStart(), rope.getThetaAttr(),
        rope.getRotaryDimAttr(), rope.getInterleavedAttr(),
        rope.getScalingFactorAttr(), rope.getYarnFactorAttr(),
        rope.getYarnLowAttr(), rope.getYarnHighAttr(), rope.getMscaleAttr(),
        rw.getI64IntegerAttr(src.getShape().back()), slice.getOffsetAttr(),
        [&] {
          SmallVector<Attribute> ops(slice.getFusedOps().begin(),
                                     slice.getFusedOps().end());
          ops.append(rope.getFusedOps().begin(), rope.getFusedOps().end());
          return rw.getArrayAttr(ops);
        }());
    rw.replaceOp(rope, fused.getResult());
    if (view)
      rw.eraseOp(view);
    rw.eraseOp(slice);
    return success();
  }
};

struct KilnFuseRopePass : kiln::impl::KilnFuseRopeBase<KilnFuseRopePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseSliceIntoRope>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
