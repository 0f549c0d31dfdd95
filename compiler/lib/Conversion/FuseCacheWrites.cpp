//===- FuseCacheWrites.cpp - Producers write straight into the KV cache ---===//
//
// cache_write(cache, view?(producer(...)), start) where the producer is an
// RMSNorm (MLA's normalized latent) or a rope (the rotated keys) used only by
// the write: the producer places its rows at start + s in the cache itself
// and its result becomes the updated cache. The kiln.state (no operands) is
// moved before the producer so the cache operand is available there.
// Then MLA's two cache writers (the latent RMSNorm and the key rope), which
// read the same rows, merge into one latent_cache_write.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "Rebuild.h"

#include "kernel/IR/KernelDialect.h"
#include "kiln/IR/KilnDialect.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_KILNFUSECACHEWRITES
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;
namespace k = kiln::kernel;

namespace {

struct FuseCacheWrite : OpRewritePattern<k::CacheWriteOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(k::CacheWriteOp cw,
                                PatternRewriter &rw) const override {
    Value values = cw.getValues();
    auto view = values.getDefiningOp<k::ViewOp>();
    if (view) {
      if (!view->hasOneUse())
        return failure();
      values = view.getInput();
    }
    Operation *prod = values.getDefiningOp();
    if (!prod || !prod->hasOneUse())
      return failure();
    auto state = cw.getCache().getDefiningOp<kiln::graph::StateOp>();
    if (!state)
      return failure();
    Location loc = rw.getFusedLoc({prod->getLoc(), cw.getLoc()});
    if (auto norm = dyn_cast<k::RMSNormOp>(prod)) {
      if (norm.getCache())
        return failure();
      if (Value start = cw.getStart())
        if (auto def = start.getDefiningOp();
            def && !def->isBeforeInBlock(norm))
          return failure();
      if (!state->isBeforeInBlock(norm))
        rw.moveOpBefore(state, norm);
      rw.setInsertionPoint(norm);
      auto fused = k::RMSNormOp::create(
          rw, loc, cw.getType(), norm.getInput(), norm.getWeight(),
          cw.getCache(), cw.getStart(), norm.getEpsilonAttr(),
          norm.getInputStrideAttr(), norm.getInputOffsetAttr(),
          kiln::concatFusedOps(rw, {norm.getFusedOps(), cw.getFusedOps()}));
      rw.replaceOp(cw, fused.getResult());
    } else if (auto rope = dyn_cast<k::RopeOp>(prod)) {
      // The rope's positions are the cache rows: same start.
      if (rope.getCache() || rope.getStart() != cw.getStart())
        return failure();
      auto cacheTy = cast<RankedTensorType>(cw.getType());
      auto ropeTy = cast<RankedTensorType>(rope.getType());
      // The cache must hold the rope's rows: [B, T, heads, head_dim].
      if (cacheTy.getNumElements() / cacheTy.getDimSize(1) !=
          ropeTy.getNumElements() / ropeTy.getDimSize(1))
        return failure();
      auto cache4 = RankedTensorType::get(
          {ropeTy.getDimSize(0), cacheTy.getDimSize(1), ropeTy.getDimSize(2),
           ropeTy.getDimSize(3)},
          cacheTy.getElementType());
      if (!state->isBeforeInBlock(rope))
        rw.moveOpBefore(state, rope);
      rw.setInsertionPoint(rope);
      Value cache = cw.getCache();
      if (cache.getType() != cache4)
        cache = k::ViewOp::create(rw, cw.getLoc(), cache4, cache);
      auto fused = k::RopeOp::create(
          rw, loc, cache4, rope.getInput(), rope.getStart(), cache,
          rope.getThetaAttr(), rope.getRotaryDimAttr(),
          rope.getInterleavedAttr(), rope.getScalingFactorAttr(),
          rope.getYarnFactorAttr(), rope.getYarnLowAttr(),
          rope.getYarnHighAttr(), rope.getMscaleAttr(),
          rope.getInputStrideAttr(), rope.getInputOffsetAttr(),
          kiln::concatFusedOps(rw, {rope.getFusedOps(), cw.getFusedOps()}));
      Value result = fused.getResult();
      if (result.getType() != cw.getType())
        result = k::ViewOp::create(rw, cw.getLoc(), cw.getType(), result);
      rw.replaceOp(cw, result);
    } else {
      return failure();
    }
    if (view && view->use_empty())
      rw.eraseOp(view);
    rw.eraseOp(prod);
    return success();
  }
};

/// MLA's latent RMSNorm and its key rope, both writing a cache from rows
/// of the same input (kv_a_proj_with_mqa's output, read in place at two
/// offsets) at the same start, become one latent_cache_write: one launch
/// reads each row once and fills both caches.
struct MergeLatentAndRopeWrites : OpRewritePattern<k::RMSNormOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(k::RMSNormOp norm,
                                PatternRewriter &rw) const override {
    if (!norm.getCache() || norm.getInputStride() == 0)
      return failure();
    k::RopeOp rope;
    for (Operation *user : norm.getInput().getUsers()) {
      auto r = dyn_cast<k::RopeOp>(user);
      if (r && r.getCache() && r.getInput() == norm.getInput() &&
          r.getInputStride() == norm.getInputStride() &&
          r.getStart() == norm.getCacheStart() &&
          r->getBlock() == norm->getBlock()) {
        rope = r;
        break;
      }
    }
    if (!rope)
      return failure();
    auto ropeCache = cast<RankedTensorType>(rope.getType());
    auto latCache = cast<RankedTensorType>(norm.getType());
    if (ropeCache.getRank() != 4 || ropeCache.getDimSize(2) != 1 ||
        latCache.getRank() != 3 ||
        ropeCache.getDimSize(1) != latCache.getDimSize(1))
      return failure();
    // The merged launch takes the later one's place; the earlier one's
    // users must all come after it.
    Operation *first = norm, *last = rope;
    if (rope->isBeforeInBlock(norm))
      std::swap(first, last);
    for (Operation *user : first->getUsers())
      if (!last->isBeforeInBlock(user))
        return failure();
    rw.setInsertionPoint(last);
    SmallVector<NamedAttribute> rotation;
    for (StringRef name : {"theta", "rotary_dim", "interleaved",
                           "scaling_factor", "yarn_factor", "yarn_low",
                           "yarn_high", "mscale"})
      rotation.push_back(rw.getNamedAttr(name, rope->getAttr(name)));
    auto fused = k::LatentCacheWriteOp::create(
        rw, rw.getFusedLoc({norm.getLoc(), rope.getLoc()}),
        TypeRange{latCache, ropeCache}, norm.getInput(), norm.getWeight(),
        norm.getCache(), rope.getCache(), norm.getCacheStart(),
        norm.getEpsilonAttr(), norm.getInputStrideAttr(),
        norm.getInputOffsetAttr(), rope.getInputOffsetAttr(),
        rw.getDictionaryAttr(rotation),
        kiln::concatFusedOps(rw, {norm.getFusedOps(), rope.getFusedOps()}));
    rw.replaceOp(norm, fused.getLatent());
    rw.replaceOp(rope, fused.getRope());
    return success();
  }
};

struct KilnFuseCacheWritesPass
    : kiln::impl::KilnFuseCacheWritesBase<KilnFuseCacheWritesPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseCacheWrite, MergeLatentAndRopeWrites>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
