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
    rw.replaceOpWithNewOp<k::AttentionOp>(
        op, op.getType(), op.getQ(), op.getK(), op.getV(), op.getStart(),
        op.getScaleAttr(), op.getCausalAttr(),
        fusedOps(rw, {g::AttentionOp::getOperationName()}));
    return success();
  }
};

/// kiln.mla_attention -> the absorbed form (one launch), or for long
/// prefills the naive form: a GEMM of kv_b over the cached latent, then
/// mla_naive (preferNaiveMLA, docs/kernels.md). A block-quantized kv_b keeps
/// the absorbed form, which dequantizes it as it reads.
struct LowerMLA : OpRewritePattern<g::MLAAttentionOp> {
  LowerMLA(MLIRContext *ctx, int64_t minPrograms)
      : OpRewritePattern(ctx), minPrograms(minPrograms) {}
  LogicalResult matchAndRewrite(g::MLAAttentionOp op,
                                PatternRewriter &rw) const override {
    auto outTy = cast<RankedTensorType>(op.getType());
    int64_t rows = numel(op.getResult()) / outTy.getShape().back();
    auto latTy = cast<RankedTensorType>(op.getKvLatent().getType());
    auto qrTy = cast<RankedTensorType>(op.getQRope().getType());
    int64_t rank = latTy.getShape().back();
    int64_t batch = latTy.getDimSize(0), kvLen = latTy.getDimSize(1);
    int64_t seq = qrTy.getDimSize(1), heads = qrTy.getDimSize(2);
    int64_t dr = qrTy.getDimSize(3), dv = outTy.getShape().back();
    int64_t kvbRows = cast<RankedTensorType>(op.getKvB().getType()).getDimSize(0);
    int64_t dn = kvbRows / heads - dv;
    ArrayAttr fused = fusedOps(rw, {g::MLAAttentionOp::getOperationName()});
    Location loc = op.getLoc();
    if (!op.getKvBScale() &&
        kiln::kernels::preferNaiveMLA(seq, kvLen, heads, dn, dr, dv, rank)) {
      Type f32 = rw.getF32Type();
      Value lat = k::ViewOp::create(
          rw, loc, RankedTensorType::get({batch * kvLen, rank},
                                         latTy.getElementType()),
          op.getKvLatent());
      int64_t tileN = kiln::kernels::chooseGemmTileN(batch * kvLen, kvbRows,
                                                     rank, minPrograms);
      Value kv = k::GemmOp::create(
          rw, loc, RankedTensorType::get({batch * kvLen, kvbRows}, f32), lat,
          op.getKvB(), ValueRange{}, rw.getI64IntegerAttr(tileN), fused);
      kv = k::ViewOp::create(
          rw, loc, RankedTensorType::get({batch, kvLen, heads, dn + dv}, f32),
          kv);
      auto naive = k::MLANaiveOp::create(
          rw, loc, TypeRange{op.getType(), RankedTensorType::get({rows, dr}, f32)},
          op.getQNope(), op.getQRope(), kv, op.getKRope(), op.getStart(),
          rw.getI64IntegerAttr(0), rw.getI64IntegerAttr(0),
          rw.getI64IntegerAttr(0), DictionaryAttr(), op.getScaleAttr(),
          op.getCausalAttr(), fused);
      rw.replaceOp(op, naive.getResult());
      return success();
    }
    auto ws = RankedTensorType::get({rows, 2 * rank + dr}, rw.getF32Type());
    auto k = k::MLAAttentionOp::create(
        rw, loc, TypeRange{op.getType(), ws}, op.getQNope(), op.getQRope(),
        op.getKvLatent(), op.getKRope(), op.getKvB(), op.getKvBScale(),
        op.getStart(), rw.getI64IntegerAttr(0), rw.getI64IntegerAttr(0),
        rw.getI64IntegerAttr(0), DictionaryAttr(), op.getScaleAttr(),
        op.getCausalAttr(), fused);
    rw.replaceOp(op, k.getResult());
    return success();
  }
  int64_t minPrograms;
};

/// kiln.moe -> routing with the token permutation, the grouped gate+up
/// GEMM (SwiGLU, and quantization in FP8), the grouped down GEMM and the
/// combine: 4 launches, whatever the number of experts.
struct LowerMoE : OpRewritePattern<g::MoEOp> {
  LowerMoE(MLIRContext *ctx, int64_t minPrograms)
      : OpRewritePattern(ctx), minPrograms(minPrograms) {}
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
    ArrayAttr fused = fusedOps(rw, {g::MoEOp::getOperationName()});
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
        kiln::kernels::chooseMoEBlockM(tokens * (topK + shared), e + shared)};
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
        fused);
    Value sorted = route.getSortedToken(), blocks = route.getBlockExpert();
    // With shared experts folded in (kiln-fold-shared-experts), the grouped
    // GEMMs and the combine also compute the shared MLP's ops.
    StringRef moeName = g::MoEOp::getOperationName();
    StringRef lin = g::LinearOp::getOperationName();
    ArrayAttr upFused = shared ? fusedOps(rw, {moeName, lin, lin,
                                              g::SwiGLUOp::getOperationName()})
                               : fused;
    ArrayAttr downFused = shared ? fusedOps(rw, {moeName, lin}) : fused;
    ArrayAttr combineFused =
        shared ? fusedOps(rw, {moeName, g::AddOp::getOperationName()}) : fused;
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
  int64_t minPrograms;
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
        fusedOps(rw, {g::QuantizeOp::getOperationName()}));
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
  patterns.add<LowerEmbedding, LowerRMSNorm, LowerReshape, LowerSlice,
               LowerRope, LowerAttention, LowerCacheUpdate,
               LowerQuantize, LowerDequantize, LowerCast>(ctx);
  patterns.add<LowerMoE, LowerMLA>(ctx, minGemmPrograms);
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
