//===- FuseRope.cpp - The query's rotary embedding into MLA ---------------===//
//
// MLA's q_rope is the rope part of q (read in place by the rope kernel
// after kiln-fuse-slices), rotated by a rope launch and written to a tensor
// that only the attention reads. The attention program reads its query row
// once anyway: with the rotation's attributes (`q_rotation`) and q's layout
// (`q_rope_stride`, `q_rope_offset`) it rotates the row as it stages it.
// One launch and one tensor less:
//
//   mla(q_nope, rope(q[.., 128:192]), ...) -> mla(q_nope, q, ...)
//       {q_rope_stride = 192, q_rope_offset = 128, q_rotation = {...}}
//
// for the absorbed and the naive forms (and mla_attention_quant, which
// kiln-fuse-quantize builds later with every attribute carried over), and
// for GQA attention, which stages its whole query row the same way.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "Rebuild.h"
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

/// The rope op's attributes that define the rotation.
constexpr llvm::StringLiteral kRotationAttrs[] = {
    "theta",       "rotary_dim", "interleaved", "scaling_factor",
    "yarn_factor", "yarn_low",   "yarn_high",   "mscale"};

/// `op` with operand `index` read from the rope's input and the rope's
/// rotation (and any `extra` attributes) set; the rope's fused ops join.
Operation *withRotation(PatternRewriter &rw, Operation *op, unsigned index,
                        k::RopeOp rope, ArrayAttr opFused,
                        ArrayRef<NamedAttribute> extra = {}) {
  SmallVector<NamedAttribute> rotation;
  for (StringRef name : kRotationAttrs)
    rotation.push_back(rw.getNamedAttr(name, rope->getAttr(name)));
  SmallVector<NamedAttribute> set(extra.begin(), extra.end());
  set.push_back(rw.getNamedAttr("q_rotation", rw.getDictionaryAttr(rotation)));
  set.push_back(rw.getNamedAttr(
      "fused_ops", kiln::concatFusedOps(rw, {rope.getFusedOps(), opFused})));
  SmallVector<Value> operands(op->getOperands());
  operands[index] = rope.getInput();
  return kiln::rebuildOp(rw, op, rw.getFusedLoc({rope.getLoc(), op->getLoc()}),
                         operands, set);
}

template <typename MLAOpT>
struct FuseQueryRope : OpRewritePattern<MLAOpT> {
  using OpRewritePattern<MLAOpT>::OpRewritePattern;
  LogicalResult matchAndRewrite(MLAOpT mla,
                                PatternRewriter &rw) const override {
    if (mla.getQRotationAttr())
      return failure();
    auto rope = mla.getQRope().template getDefiningOp<k::RopeOp>();
    if (!rope || !rope->hasOneUse() || rope.getCache() ||
        rope.getStart() != mla.getStart() ||
        rope.getType() != mla.getQRope().getType())
      return failure();
    // q_rope (operand 1) is read where the rope read it.
    Operation *newOp = withRotation(
        rw, mla, 1, rope, mla.getFusedOps(),
        {rw.getNamedAttr("q_rope_stride", rope.getInputStrideAttr()),
         rw.getNamedAttr("q_rope_offset", rope.getInputOffsetAttr())});
    rw.replaceOp(mla, newOp->getResults());
    rw.eraseOp(rope);
    return success();
  }
};

/// GQA: attention(rope(q), k, v) -> attention(q, k, v) {q_rotation}; the
/// rope must read q contiguously (as the merged q/k projection writes it).
struct FuseQueryRopeIntoAttention : OpRewritePattern<k::AttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(k::AttentionOp attn,
                                PatternRewriter &rw) const override {
    if (attn.getQRotationAttr())
      return failure();
    auto rope = attn.getQ().getDefiningOp<k::RopeOp>();
    if (!rope || !rope->hasOneUse() || rope.getCache() ||
        rope.getInputStride() != 0 || rope.getStart() != attn.getStart() ||
        rope.getInput().getType() != attn.getQ().getType())
      return failure();
    Operation *newOp = withRotation(rw, attn, 0, rope, attn.getFusedOps());
    rw.replaceOp(attn, newOp->getResults());
    rw.eraseOp(rope);
    return success();
  }
};

struct KilnFuseRopePass : kiln::impl::KilnFuseRopeBase<KilnFuseRopePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseQueryRope<k::MLAAttentionOp>,
                 FuseQueryRope<k::MLANaiveOp>, FuseQueryRopeIntoAttention>(
        &getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
