//===- LowerToKernels.cpp - kiln graph -> kiln_kernel launches ------------===//
//
// One pattern per graph op family (populateLowerToKernelsPatterns). Each
// launch op records the graph ops it computes in `fused_ops` and keeps their
// location, so every kernel traces back to the model.
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
#define GEN_PASS_DEF_KILNLOWERTOKERNELS
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;
namespace g = kiln::graph;
namespace k = kiln::kernel;

namespace {

using kiln::fusedOps;

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
        op, op.getType(), op.getInput(), op.getWeight(), Value(), Value(),
        op.getEpsilonAttr(),
        rw.getI64IntegerAttr(0), rw.getI64IntegerAttr(0),
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
    if (auto q = op.getQuantAttr()) {
      if (q.getWeightBlock()[1] != q.getActBlock())
        return rw.notifyMatchFailure(op, "weight K block != activation tile");
      rw.replaceOpWithNewOp<k::GemmFP8Op>(
          op, op.getType(), op.getInput(), op.getWeight(), op.getInputScale(),
          op.getWeightScale(), ValueRange{}, rw.getI64IntegerAttr(tileN),
          rw.getI64IntegerAttr(q.getActBlock()),
          rw.getI64IntegerAttr(q.getWeightBlock()[0]),
          fusedOps(rw, {g::LinearOp::getOperationName()}));
      return success();
    }
    rw.replaceOpWithNewOp<k::GemmOp>(
        op, op.getType(), op.getInput(), op.getWeight(), ValueRange{},
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

struct LowerSlice : OpRewritePattern<g::SliceOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::SliceOp op,
                                PatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<k::SliceOp>(
        op, op.getType(), op.getInput(), op.getOffsetAttr(),
        fusedOps(rw, {g::SliceOp::getOperationName()}));
    return success();
  }
};

struct LowerLastToken : OpRewritePattern<g::LastTokenOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::LastTokenOp op,
                                PatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<k::LastTokenOp>(
        op, op.getType(), op.getInput(),
        fusedOps(rw, {g::LastTokenOp::getOperationName()}));
    return success();
  }
};

/// A cast is a full-width copy with conversion on load and store.
struct LowerCast : OpRewritePattern<g::CastOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::CastOp op,
                                PatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<k::SliceOp>(
        op, op.getType(), op.getInput(), rw.getI64IntegerAttr(0),
        fusedOps(rw, {g::CastOp::getOperationName()}));
    return success();
  }
};

struct LowerRope : OpRewritePattern<g::RopeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::RopeOp op,
                                PatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<k::RopeOp>(
        op, op.getType(), op.getInput(), op.getStart(), Value(),
        op.getThetaAttr(),
        op.getRotaryDimAttr(), op.getInterleavedAttr(),
        op.getScalingFactorAttr(), op.getYarnFactorAttr(),
        op.getYarnLowAttr(), op.getYarnHighAttr(), op.getMscaleAttr(),
        rw.getI64IntegerAttr(0), rw.getI64IntegerAttr(0),
        fusedOps(rw, {g::RopeOp::getOperationName()}));
    return success();
  }
};

struct LowerAttention : OpRewritePattern<g::AttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::AttentionOp op,
                                PatternRewriter &rw) const override {
    auto qTy = cast<RankedTensorType>(op.getQ().getType());
    auto ws = RankedTensorType::get(
        {qTy.getNumElements() / qTy.getShape().back(), qTy.getShape().back()},
        rw.getF32Type());
    auto k = k::AttentionOp::create(
        rw, op.getLoc(), TypeRange{op.getType(), ws}, op.getQ(), op.getK(),
        op.getV(), op.getStart(), op.getScaleAttr(), op.getCausalAttr(),
        DictionaryAttr(), fusedOps(rw, {g::AttentionOp::getOperationName()}));
    rw.replaceOp(op, k.getResult());
    return success();
  }
};

struct LowerCacheUpdate : OpRewritePattern<g::CacheUpdateOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::CacheUpdateOp op,
                                PatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<k::CacheWriteOp>(
        op, op.getType(), op.getCache(), op.getValues(), op.getStart(),
        fusedOps(rw, {g::CacheUpdateOp::getOperationName()}));
    return success();
  }
};

struct LowerQuantize : OpRewritePattern<g::QuantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::QuantizeOp op,
                                PatternRewriter &rw) const override {
    auto k = k::QuantizeOp::create(
        rw, op.getLoc(), op->getResultTypes(), op.getInput(),
        rw.getI64IntegerAttr(op.getQuant().getActBlock()),
        fusedOps(rw, {g::QuantizeOp::getOperationName()}),
        rw.getBoolAttr(op.getPow2Scale()),
        rw.getBoolAttr(op.getFlushSubnormals()));
    rw.replaceOp(op, k->getResults());
    return success();
  }
};

struct LowerDequantize : OpRewritePattern<g::DequantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::DequantizeOp op,
                                PatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<k::DequantizeOp>(
        op, op.getType(), op.getInput(), op.getScale(),
        rw.getI64IntegerAttr(op.getQuant().getActBlock()),
        fusedOps(rw, {g::DequantizeOp::getOperationName()}));
    return success();
  }
};

void populateLowerToKernelsPatterns(RewritePatternSet &patterns,
                                    int64_t minGemmPrograms) {
  MLIRContext *ctx = patterns.getContext();
  patterns.add<LowerEmbedding, LowerRMSNorm, LowerReshape, LowerSlice, LowerLastToken,
               LowerRope, LowerAttention, LowerCacheUpdate,
               LowerQuantize, LowerDequantize, LowerCast>(ctx);
  // Defaults of kiln-lower-moe and kiln-lower-mla; pipelines that steer
  // them run those passes first.
  kiln::populateLowerMoEPatterns(patterns, minGemmPrograms, /*blockM=*/0);
  kiln::populateLowerMLAPatterns(patterns, minGemmPrograms,
                                 kiln::MLAForm::Auto);
  patterns.add<LowerLinear>(ctx, minGemmPrograms);
  patterns.add<LowerBinary<g::AddOp>>(ctx, "add");
  patterns.add<LowerBinary<g::MulOp>>(ctx, "mul");
  patterns.add<LowerBinary<g::BiasAddOp>>(ctx, "bias_add");
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
      if (isa<g::KilnDialect>(op->getDialect()) &&
          !isa<g::WeightOp, g::WeightStackOp, g::StateOp>(op)) {
        op->emitError() << "'" << op->getName()
                        << "' has no kernel lowering yet";
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (r.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
