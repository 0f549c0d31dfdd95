//===- LowerToKernels.cpp - kiln graph -> kiln_kernel launches ------------===//
//
// One pattern per graph op family (populateLowerToKernelsPatterns). Each
// launch op records the graph ops it computes in `fused_ops` and keeps their
// location, so every kernel traces back to the model.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "kernel/IR/KernelDialect.h"
#include "kiln/IR/KilnDialect.h"
#include "kiln/Kernels/Heuristics.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_KILNLOWERTOKERNELS
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;
namespace g = kiln::graph;
namespace k = kiln::kernel;

namespace {

ArrayAttr fusedOps(Builder &b, ArrayRef<StringRef> names) {
  SmallVector<Attribute> attrs;
  for (StringRef n : names)
    attrs.push_back(b.getStringAttr(n));
  return b.getArrayAttr(attrs);
}

int64_t numel(Value v) {
  return cast<RankedTensorType>(v.getType()).getNumElements();
}

struct LowerEmbedding : OpRewritePattern<g::EmbeddingOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::EmbeddingOp op,
                                PatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<k::GatherRowsOp>(
        op, op.getType(), op.getTable(), op.getTokens(),
        fusedOps(rw, {g::EmbeddingOp::getOperationName()}));
    return success();
  }
};

struct LowerRMSNorm : OpRewritePattern<g::RMSNormOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::RMSNormOp op,
                                PatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<k::RMSNormOp>(
        op, op.getType(), op.getInput(), op.getWeight(), op.getEpsilonAttr(),
        fusedOps(rw, {g::RMSNormOp::getOperationName()}));
    return success();
  }
};

struct LowerLinear : OpRewritePattern<g::LinearOp> {
  LowerLinear(MLIRContext *ctx, int64_t minPrograms)
      : OpRewritePattern(ctx), minPrograms(minPrograms) {}
  LogicalResult matchAndRewrite(g::LinearOp op,
                                PatternRewriter &rw) const override {
    auto w = cast<RankedTensorType>(op.getWeight().getType());
    int64_t n = w.getDimSize(0), kdim = w.getDimSize(1);
    int64_t m = numel(op.getInput()) / kdim;
    int64_t tileN = kiln::kernels::chooseGemmTileN(m, n, kdim, minPrograms);
    rw.replaceOpWithNewOp<k::GemmOp>(
        op, op.getType(), op.getInput(), op.getWeight(),
        rw.getI64IntegerAttr(tileN),
        fusedOps(rw, {g::LinearOp::getOperationName()}));
    return success();
  }
  int64_t minPrograms;
};

template <typename GraphOp>
struct LowerBinary : OpRewritePattern<GraphOp> {
  LowerBinary(MLIRContext *ctx, StringRef kind)
      : OpRewritePattern<GraphOp>(ctx), kind(kind) {}
  LogicalResult matchAndRewrite(GraphOp op,
                                PatternRewriter &rw) const override {
    int64_t block = kiln::kernels::chooseElementwiseBlock(numel(op));
    rw.replaceOpWithNewOp<k::ElementwiseOp>(
        op, op.getType(), rw.getStringAttr(kind), op->getOperand(0),
        op->getOperand(1), rw.getI64IntegerAttr(block),
        fusedOps(rw, {GraphOp::getOperationName()}));
    return success();
  }
  static int64_t numel(GraphOp op) { return ::numel(op.getResult()); }
  std::string kind;
};

struct LowerReshape : OpRewritePattern<g::ReshapeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::ReshapeOp op,
                                PatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<k::ViewOp>(op, op.getType(), op.getInput());
    return success();
  }
};

void populateLowerToKernelsPatterns(RewritePatternSet &patterns,
                                    int64_t minGemmPrograms) {
  MLIRContext *ctx = patterns.getContext();
  patterns.add<LowerEmbedding, LowerRMSNorm, LowerReshape>(ctx);
  patterns.add<LowerLinear>(ctx, minGemmPrograms);
  patterns.add<LowerBinary<g::AddOp>>(ctx, "add");
  patterns.add<LowerBinary<g::MulOp>>(ctx, "mul");
  patterns.add<LowerBinary<g::SwiGLUOp>>(ctx, "swiglu");
}

struct KilnLowerToKernelsPass
    : kiln::impl::KilnLowerToKernelsBase<KilnLowerToKernelsPass> {
  using Base::Base;
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateLowerToKernelsPatterns(patterns, minGemmPrograms);
    GreedyRewriteConfig config;
    config.enableFolding(false);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns),
                                     config)))
      return signalPassFailure();
    // Whatever graph op is left has no kernel lowering yet.
    WalkResult r = getOperation().walk([](Operation *op) {
      if (isa<g::KilnDialect>(op->getDialect()) && !isa<g::WeightOp>(op)) {
        op->emitError() << "'" << op->getName()
                        << "' has no kernel lowering yet; supported: "
                           "kiln.embedding, kiln.rms_norm, kiln.linear, "
                           "kiln.swiglu, kiln.add, kiln.mul, kiln.reshape";
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (r.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
