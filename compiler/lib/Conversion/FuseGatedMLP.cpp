//===- FuseGatedMLP.cpp - Gate and up GEMMs with SwiGLU in one launch -----===//
//
// swiglu(gemm(x, W_gate), gemm(x, W_up)), both GEMMs used only there, becomes
// one gemm_swiglu launch: x is read once, the gate and up activations never
// reach memory.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

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
    SmallVector<Attribute> fused(gate.getFusedOps().begin(),
                                 gate.getFusedOps().end());
    fused.append(up.getFusedOps().begin(), up.getFusedOps().end());
    fused.append(op.getFusedOps().begin(), op.getFusedOps().end());
    auto fusedOp = k::GemmSwiGLUOp::create(
        rw, rw.getFusedLoc({gate.getLoc(), up.getLoc(), op.getLoc()}),
        op.getType(), gate.getInput(), gate.getWeight(), up.getWeight(),
        gate.getTileNAttr(), rw.getArrayAttr(fused));
    rw.replaceOp(op, fusedOp.getResult());
    rw.eraseOp(gate);
    rw.eraseOp(up);
    return success();
  }
};

struct KilnFuseGatedMLPPass
    : kiln::impl::KilnFuseGatedMLPBase<KilnFuseGatedMLPPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseSwiGLUIntoGemms>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
