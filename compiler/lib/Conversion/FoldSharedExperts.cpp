//===- FoldSharedExperts.cpp - Shared experts into the grouped experts ----===//
//
// DeepSeek's MoE layer adds a shared expert (a SwiGLU MLP applied to every
// token) to the routed experts' output. When the shared expert has the
// routed experts' shape, it can ride in their launches as one more expert
// that every token selects with weight 1: its weights join the expert
// pointer tables, and the routing's permutation gives each token one more
// row. This saves the shared expert's two launches (gate+up, down) and a
// pass over the hidden state.
//
//   add(moe(x, ...), linear(swiglu(linear(x, Wg), linear(x, Wu)), Wd))
//     -> moe(x, ..., stacks + [Wg, Wu, Wd]) {shared_experts = n + 1}
//
// In the block-quantized form the linears read kiln.quantize results of x
// (and of the SwiGLU output), and the weights' block scales join the scale
// stacks the same way.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Passes.h"

#include "kiln/IR/KilnDialect.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_KILNFOLDSHAREDEXPERTS
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;
namespace g = kiln::graph;

namespace {

/// The shared expert's pieces, once matched.
struct SharedExpert {
  g::WeightOp gate, up, down;
  g::WeightOp gateScale, upScale, downScale; // FP8 only
  SmallVector<Operation *> ops;              // for the fused location
};

/// True when `v` is `x`, or (FP8) the `which`th result of kiln.quantize(x).
bool readsInput(Value v, Value x, unsigned which) {
  if (v == x)
    return which == 0;
  auto q = v.getDefiningOp<g::QuantizeOp>();
  return q && q.getInput() == x && q->getResult(which) == v;
}

/// Matches linear(input, weight) whose input is `x` (or quantize(x)).
g::LinearOp matchLinear(Value v, Value x, g::WeightOp &w, g::WeightOp &ws) {
  auto lin = v.getDefiningOp<g::LinearOp>();
  if (!lin || !lin->hasOneUse())
    return nullptr;
  w = lin.getWeight().getDefiningOp<g::WeightOp>();
  if (!w || !readsInput(lin.getInput(), x, 0))
    return nullptr;
  if (lin.getQuantAttr()) {
    ws = lin.getWeightScale().getDefiningOp<g::WeightOp>();
    if (!ws || !readsInput(lin.getInputScale(), x, 1))
      return nullptr;
  }
  return lin;
}

std::optional<SharedExpert> matchSharedExpert(Value s, Value x) {
  SharedExpert se;
  // The down projection reads the SwiGLU output (or its quantization).
  auto down = s.getDefiningOp<g::LinearOp>();
  if (!down || !down->hasOneUse())
    return std::nullopt;
  Value act = down.getInput();
  if (auto q = act.getDefiningOp<g::QuantizeOp>())
    act = q.getInput();
  auto swiglu = act.getDefiningOp<g::SwiGLUOp>();
  if (!swiglu)
    return std::nullopt;
  if (!matchLinear(s, act, se.down, se.downScale))
    return std::nullopt;
  g::LinearOp gate = matchLinear(swiglu.getGate(), x, se.gate, se.gateScale);
  g::LinearOp up = matchLinear(swiglu.getUp(), x, se.up, se.upScale);
  if (!gate || !up || gate.getQuantAttr() != down.getQuantAttr() ||
      up.getQuantAttr() != down.getQuantAttr())
    return std::nullopt;
  se.ops = {gate, up, swiglu, down};
  return se;
}

/// `stack` with `extra` appended, when the shapes and types line up.
Value appendToStack(PatternRewriter &rw, Value stack, g::WeightOp extra) {
  auto ws = stack.getDefiningOp<g::WeightStackOp>();
  if (!ws || !extra)
    return {};
  auto st = cast<RankedTensorType>(ws.getType());
  auto et = cast<RankedTensorType>(extra.getType());
  if (st.getShape().drop_front() != et.getShape() ||
      st.getElementType() != et.getElementType())
    return {};
  SmallVector<Attribute> names(ws.getNames().begin(), ws.getNames().end());
  names.push_back(extra.getNameAttr());
  SmallVector<int64_t> shape(st.getShape());
  ++shape[0];
  return g::WeightStackOp::create(
      rw, ws.getLoc(), RankedTensorType::get(shape, st.getElementType()),
      rw.getArrayAttr(names));
}

struct FoldSharedExpert : OpRewritePattern<g::AddOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(g::AddOp add,
                                PatternRewriter &rw) const override {
    Value operands[2] = {add.getLhs(), add.getRhs()};
    for (unsigned i = 0; i < 2; ++i) {
      auto moe = operands[i].getDefiningOp<g::MoEOp>();
      if (!moe || !moe->hasOneUse() ||
          add.getType() != moe.getResult().getType())
        continue;
      std::optional<SharedExpert> se =
          matchSharedExpert(operands[1 - i], moe.getInput());
      if (!se)
        continue;
      bool fp8 = static_cast<bool>(moe.getQuantAttr());
      if (fp8 != static_cast<bool>(se->gateScale))
        continue;
      rw.setInsertionPoint(moe);
      Value wg = appendToStack(rw, moe.getWGate(), se->gate);
      Value wu = appendToStack(rw, moe.getWUp(), se->up);
      Value wd = appendToStack(rw, moe.getWDown(), se->down);
      Value wgs, wus, wds;
      if (fp8) {
        wgs = appendToStack(rw, moe.getWGateScale(), se->gateScale);
        wus = appendToStack(rw, moe.getWUpScale(), se->upScale);
        wds = appendToStack(rw, moe.getWDownScale(), se->downScale);
      }
      if (!wg || !wu || !wd || (fp8 && (!wgs || !wus || !wds))) {
        // Shapes differ (e.g. DeepSeek-V2's two shared experts in one MLP
        // of twice the width): keep the separate MLP.
        for (Value v : {wg, wu, wd, wgs, wus, wds})
          if (v && v.use_empty())
            rw.eraseOp(v.getDefiningOp());
        continue;
      }
      SmallVector<Location> locs{moe.getLoc()};
      for (Operation *op : se->ops)
        locs.push_back(op->getLoc());
      locs.push_back(add.getLoc());
      auto fused = g::MoEOp::create(
          rw, rw.getFusedLoc(locs), moe.getType(), moe.getInput(),
          moe.getRouter(), moe.getCorrectionBias(), wg, wu, wd,
          moe.getInputQ(), moe.getInputScale(), wgs, wus, wds,
          moe.getQuantAttr(), moe.getTopKAttr(), moe.getScoringAttr(),
          moe.getNGroupAttr(), moe.getTopkGroupAttr(), moe.getGroupScoreAttr(),
          moe.getNormTopkProbAttr(), moe.getRoutedScalingFactorAttr(),
          rw.getI64IntegerAttr(moe.getSharedExperts() + 1));
      rw.replaceOp(add, fused.getResult());
      return success();
    }
    return failure();
  }
};

struct KilnFoldSharedExpertsPass
    : kiln::impl::KilnFoldSharedExpertsBase<KilnFoldSharedExpertsPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FoldSharedExpert>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
