//===- KilnOps.cpp - Kiln graph op verifiers ------------------------------===//
//
// Every verifier names the operand and the dimension that is wrong, so that a
// malformed model is reported at its source location with a usable message.
//
//===----------------------------------------------------------------------===//
#include "kiln/IR/KilnDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace kiln::graph;

namespace {

RankedTensorType ranked(Value v) {
  return cast<RankedTensorType>(v.getType());
}

std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += ShapedType::isDynamic(shape[i]) ? "?" : std::to_string(shape[i]);
  }
  return s + "]";
}

// Kiln graphs are statically shaped: a plan is compiled for maximum sizes.
LogicalResult requireStatic(Operation *op, Value v, StringRef what) {
  if (!ranked(v).hasStaticShape())
    return op->emitOpError() << what << " must have a static shape, got "
                             << shapeStr(ranked(v).getShape());
  return success();
}

LogicalResult requireRank(Operation *op, Value v, StringRef what,
                          int64_t minRank, int64_t maxRank = -1) {
  int64_t r = ranked(v).getRank();
  if (r < minRank || (maxRank >= 0 && r > maxRank)) {
    auto d = op->emitOpError() << what << " must have rank ";
    if (maxRank == minRank)
      d << minRank;
    else if (maxRank < 0)
      d << ">= " << minRank;
    else
      d << minRank << ".." << maxRank;
    return d << ", got " << shapeStr(ranked(v).getShape());
  }
  return success();
}

LogicalResult requireShape(Operation *op, Value v, StringRef what,
                           ArrayRef<int64_t> expected) {
  if (ranked(v).getShape() != expected)
    return op->emitOpError() << what << " must have shape "
                             << shapeStr(expected) << ", got "
                             << shapeStr(ranked(v).getShape());
  return success();
}

LogicalResult requireSameElementType(Operation *op, Value a, StringRef an,
                                     Value b, StringRef bn) {
  if (ranked(a).getElementType() != ranked(b).getElementType())
    return op->emitOpError() << an << " and " << bn
                             << " must have the same element type, got "
                             << ranked(a).getElementType() << " and "
                             << ranked(b).getElementType();
  return success();
}

LogicalResult allStatic(Operation *op) {
  for (auto [i, v] : llvm::enumerate(op->getOperands()))
    if (failed(requireStatic(op, v, "operand #" + std::to_string(i))))
      return failure();
  for (Value v : op->getResults())
    if (failed(requireStatic(op, v, "result")))
      return failure();
  return success();
}

LogicalResult verifyElementwise(Operation *op, Value a, Value b, Value r) {
  if (failed(allStatic(op)))
    return failure();
  if (ranked(a).getShape() != ranked(b).getShape())
    return op->emitOpError() << "operands must have the same shape, got "
                             << shapeStr(ranked(a).getShape()) << " and "
                             << shapeStr(ranked(b).getShape());
  if (failed(requireSameElementType(op, a, "lhs", b, "rhs")) ||
      failed(requireShape(op, r, "result", ranked(a).getShape())) ||
      failed(requireSameElementType(op, a, "lhs", r, "result")))
    return failure();
  return success();
}

} // namespace

LogicalResult WeightOp::verify() {
  if (getName().empty())
    return emitOpError("weight name must not be empty");
  return requireStatic(*this, getResult(), "weight");
}

LogicalResult EmbeddingOp::verify() {
  if (failed(allStatic(*this)) ||
      failed(requireRank(*this, getTable(), "table", 2, 2)))
    return failure();
  SmallVector<int64_t> expected(ranked(getTokens()).getShape());
  expected.push_back(ranked(getTable()).getDimSize(1));
  return requireShape(*this, getResult(), "result", expected);
}

LogicalResult ReshapeOp::verify() {
  if (failed(allStatic(*this)))
    return failure();
  auto in = ranked(getInput()), out = ranked(getResult());
  if (in.getNumElements() != out.getNumElements())
    return emitOpError() << "cannot reshape " << shapeStr(in.getShape())
                         << " (" << in.getNumElements() << " elements) to "
                         << shapeStr(out.getShape()) << " ("
                         << out.getNumElements() << " elements)";
  if (in.getElementType() != out.getElementType())
    return emitOpError("reshape must keep the element type");
  return success();
}

LogicalResult RMSNormOp::verify() {
  if (failed(allStatic(*this)) ||
      failed(requireRank(*this, getInput(), "input", 1)) ||
      failed(requireRank(*this, getWeight(), "weight", 1, 1)))
    return failure();
  int64_t d = ranked(getInput()).getShape().back();
  if (failed(requireShape(*this, getWeight(), "weight", {d})) ||
      failed(requireShape(*this, getResult(), "result",
                          ranked(getInput()).getShape())) ||
      failed(requireSameElementType(*this, getInput(), "input", getResult(),
                                    "result")))
    return failure();
  if (!(getEpsilon().convertToFloat() >= 0.0f))
    return emitOpError("epsilon must be non-negative");
  return success();
}

static int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Checks the FP8 block layout of a quantized weight and its scale.
static LogicalResult verifyQuantWeight(Operation *op, Value w, Value ws,
                                       BlockQuantAttr q, StringRef what) {
  auto wt = ranked(w);
  if (wt.getElementType() != q.getElementType())
    return op->emitOpError() << what << " must have element type "
                             << q.getElementType() << ", got "
                             << wt.getElementType();
  if (!ws)
    return op->emitOpError() << what << " needs a scale";
  ArrayRef<int64_t> blk = q.getWeightBlock();
  if (blk.size() != 2 || blk[0] <= 0 || blk[1] <= 0)
    return op->emitOpError("weight blocks must be 2-D and positive");
  SmallVector<int64_t> expected(wt.getShape().drop_back(2));
  expected.push_back(ceilDiv(wt.getShape()[wt.getRank() - 2], blk[0]));
  expected.push_back(ceilDiv(wt.getShape().back(), blk[1]));
  return requireShape(op, ws, (what + " scale").str(), expected);
}

static LogicalResult verifyQuantAttr(Operation *op, BlockQuantAttr q) {
  if (!isa<Float8E4M3FNType>(q.getElementType()))
    return op->emitOpError("block quantization supports f8E4M3FN only");
  if (q.getActBlock() <= 0)
    return op->emitOpError("act block must be positive");
  return success();
}

LogicalResult LinearOp::verify() {
  if (failed(allStatic(*this)) ||
      failed(requireRank(*this, getInput(), "input", 1)) ||
      failed(requireRank(*this, getWeight(), "weight", 2, 2)))
    return failure();
  auto x = ranked(getInput()), w = ranked(getWeight());
  if (x.getShape().back() != w.getDimSize(1))
    return emitOpError() << "input's last dimension (" << x.getShape().back()
                         << ") must equal the weight's in_features (dimension "
                            "1 of weight "
                         << shapeStr(w.getShape()) << ")";
  SmallVector<int64_t> expected(x.getShape());
  expected.back() = w.getDimSize(0);
  if (failed(requireShape(*this, getResult(), "result", expected)))
    return failure();
  if (auto q = getQuantAttr()) {
    if (failed(verifyQuantAttr(*this, q)))
      return failure();
    if (x.getElementType() != q.getElementType() || !getInputScale())
      return emitOpError("a quantized linear takes the e4m3 input and its "
                         "scale from kiln.quantize");
    SmallVector<int64_t> xs(x.getShape());
    xs.back() = ceilDiv(xs.back(), q.getActBlock());
    if (failed(requireShape(*this, getInputScale(), "input scale", xs)))
      return failure();
    return verifyQuantWeight(*this, getWeight(), getWeightScale(), q,
                             "weight");
  }
  if (getInputScale() || getWeightScale())
    return emitOpError("scales need the quant attribute");
  if (!isa<FloatType>(w.getElementType()) ||
      isa<Float8E4M3FNType>(w.getElementType()))
    return emitOpError("an FP8 weight needs the quant attribute and scales");
  return requireSameElementType(*this, getInput(), "input", getResult(),
                                "result");
}

LogicalResult QuantizeOp::verify() {
  if (failed(allStatic(*this)) || failed(verifyQuantAttr(*this, getQuant())) ||
      failed(requireRank(*this, getInput(), "input", 1)))
    return failure();
  auto x = ranked(getInput());
  if (failed(requireShape(*this, getResult(), "result", x.getShape())))
    return failure();
  if (ranked(getResult()).getElementType() != getQuant().getElementType())
    return emitOpError("result must have the quantized element type");
  SmallVector<int64_t> s(x.getShape());
  s.back() = ceilDiv(s.back(), getQuant().getActBlock());
  if (failed(requireShape(*this, getScale(), "scale", s)))
    return failure();
  if (!ranked(getScale()).getElementType().isF32())
    return emitOpError("scale must be f32");
  return success();
}

LogicalResult DequantizeOp::verify() {
  if (failed(allStatic(*this)) || failed(verifyQuantAttr(*this, getQuant())) ||
      failed(requireRank(*this, getInput(), "input", 1)))
    return failure();
  auto q = ranked(getInput());
  if (q.getElementType() != getQuant().getElementType())
    return emitOpError("input must have the quantized element type");
  SmallVector<int64_t> s(q.getShape());
  s.back() = ceilDiv(s.back(), getQuant().getActBlock());
  if (failed(requireShape(*this, getScale(), "scale", s)) ||
      failed(requireShape(*this, getResult(), "result", q.getShape())))
    return failure();
  return success();
}

LogicalResult SwiGLUOp::verify() {
  return verifyElementwise(*this, getGate(), getUp(), getResult());
}
LogicalResult AddOp::verify() {
  return verifyElementwise(*this, getLhs(), getRhs(), getResult());
}
LogicalResult BiasAddOp::verify() {
  if (failed(allStatic(*this)) ||
      failed(requireRank(*this, getInput(), "input", 1)))
    return failure();
  auto x = ranked(getInput());
  if (failed(requireShape(*this, getBias(), "bias", {x.getShape().back()})) ||
      failed(requireShape(*this, getResult(), "result", x.getShape())) ||
      failed(requireSameElementType(*this, getInput(), "input", getResult(),
                                    "result")))
    return failure();
  return success();
}
LogicalResult MulOp::verify() {
  return verifyElementwise(*this, getLhs(), getRhs(), getResult());
}

LogicalResult RopeOp::verify() {
  if (failed(allStatic(*this)) ||
      failed(requireRank(*this, getInput(), "input", 4, 4)))
    return failure();
  auto x = ranked(getInput());
  if (getStart() &&
      failed(requireShape(*this, getStart(), "start", {x.getDimSize(0)})))
    return failure();
  if (failed(requireShape(*this, getResult(), "result", x.getShape())))
    return failure();
  int64_t rd = getRotaryDim();
  if (rd <= 0 || rd % 2 != 0 || rd > x.getDimSize(3))
    return emitOpError() << "rotary_dim must be even and in (0, head_dim = "
                         << x.getDimSize(3) << "], got " << rd;
  if (!(getTheta().convertToFloat() > 0.0f))
    return emitOpError("theta must be positive");
  if (!(getYarnFactor().convertToFloat() >= 1.0f))
    return emitOpError("yarn_factor must be >= 1");
  return success();
}

LogicalResult WeightStackOp::verify() {
  if (getNames().empty())
    return emitOpError("needs at least one weight name");
  if (failed(requireStatic(*this, getResult(), "result")))
    return failure();
  auto t = ranked(getResult());
  if (t.getRank() < 2 || t.getDimSize(0) != (int64_t)getNames().size())
    return emitOpError() << "result's leading dimension must equal the "
                            "number of names ("
                         << getNames().size() << ")";
  return success();
}

LogicalResult StateOp::verify() {
  if (getName().empty())
    return emitOpError("state name must not be empty");
  return requireStatic(*this, getResult(), "state");
}

LogicalResult CacheUpdateOp::verify() {
  if (failed(allStatic(*this)) ||
      failed(requireRank(*this, getCache(), "cache", 2)))
    return failure();
  auto c = ranked(getCache()), v = ranked(getValues());
  if (v.getRank() != c.getRank() || v.getDimSize(0) != c.getDimSize(0) ||
      v.getShape().drop_front(2) != c.getShape().drop_front(2))
    return emitOpError() << "values " << shapeStr(v.getShape())
                         << " must match cache " << shapeStr(c.getShape())
                         << " in all but the sequence dimension";
  if (v.getDimSize(1) > c.getDimSize(1))
    return emitOpError("more values than the cache holds");
  if (isa<Float8E4M3FNType>(c.getElementType()) !=
      isa<Float8E4M3FNType>(v.getElementType()))
    return emitOpError("an e4m3 cache takes e4m3 values (kiln.quantize's, "
                       "its scales in a cache of their own) and only it does");
  if (getStart() &&
      failed(requireShape(*this, getStart(), "start", {c.getDimSize(0)})))
    return failure();
  if (failed(requireShape(*this, getResult(), "result", c.getShape())) ||
      failed(requireSameElementType(*this, getCache(), "cache", getResult(),
                                    "result")))
    return failure();
  if (!getCache().getDefiningOp<StateOp>())
    return emitOpError("cache must be a kiln.state value");
  if (!getCache().hasOneUse())
    return emitOpError("the cache is updated in place: the state value must "
                       "have no other use");
  return success();
}

LogicalResult CastOp::verify() {
  if (failed(allStatic(*this)) ||
      failed(requireShape(*this, getResult(), "result",
                          ranked(getInput()).getShape())))
    return failure();
  if (ranked(getInput()).getRank() == 0)
    return emitOpError("input must have rank >= 1");
  return success();
}

LogicalResult LastTokenOp::verify() {
  if (failed(allStatic(*this)))
    return failure();
  auto in = ranked(getInput()), out = ranked(getResult());
  if (in.getRank() != 3 ||
      out.getShape() != ArrayRef<int64_t>{in.getDimSize(0), 1,
                                          in.getDimSize(2)})
    return emitOpError("expects [batch, seq, width] -> [batch, 1, width]");
  if (in.getElementType() != out.getElementType())
    return emitOpError("must keep the element type");
  return success();
}

LogicalResult SliceOp::verify() {
  if (failed(allStatic(*this)))
    return failure();
  auto in = ranked(getInput()), out = ranked(getResult());
  if (in.getRank() != out.getRank() || in.getRank() == 0 ||
      in.getShape().drop_back() != out.getShape().drop_back())
    return emitOpError("result must match the input in all but the last "
                       "dimension");
  if (getOffset() < 0 ||
      getOffset() + out.getShape().back() > in.getShape().back())
    return emitOpError() << "slice [" << getOffset() << ", "
                         << getOffset() + out.getShape().back()
                         << ") exceeds the last dimension ("
                         << in.getShape().back() << ")";
  if (in.getElementType() != out.getElementType())
    return emitOpError("slice must keep the element type");
  return success();
}

LogicalResult AttentionOp::verify() {
  if (failed(allStatic(*this)) ||
      failed(requireRank(*this, getQ(), "q", 4, 4)) ||
      failed(requireRank(*this, getK(), "k", 4, 4)) ||
      failed(requireRank(*this, getV(), "v", 4, 4)))
    return failure();
  auto q = ranked(getQ()), k = ranked(getK()), v = ranked(getV());
  if (k.getDimSize(0) != q.getDimSize(0) || v.getDimSize(0) != q.getDimSize(0))
    return emitOpError("q, k and v must have the same batch size");
  if (k.getShape().drop_back() != v.getShape().drop_back())
    return emitOpError() << "k " << shapeStr(k.getShape()) << " and v "
                         << shapeStr(v.getShape())
                         << " must agree in batch, kv_len and kv_heads";
  if (q.getDimSize(3) != k.getDimSize(3))
    return emitOpError() << "q head_dim (" << q.getDimSize(3)
                         << ") must equal k head_dim (" << k.getDimSize(3)
                         << ")";
  if (q.getDimSize(2) % k.getDimSize(2) != 0)
    return emitOpError() << "q_heads (" << q.getDimSize(2)
                         << ") must be a multiple of kv_heads ("
                         << k.getDimSize(2) << ")";
  if (getCausal() && k.getDimSize(1) < q.getDimSize(1))
    return emitOpError("causal attention needs kv_len >= seq");
  if (getStart() &&
      failed(requireShape(*this, getStart(), "start", {q.getDimSize(0)})))
    return failure();
  return requireShape(*this, getResult(), "result",
                      {q.getDimSize(0), q.getDimSize(1), q.getDimSize(2),
                       v.getDimSize(3)});
}

LogicalResult MLAAttentionOp::verify() {
  if (failed(allStatic(*this)) ||
      failed(requireRank(*this, getQNope(), "q_nope", 4, 4)) ||
      failed(requireRank(*this, getQRope(), "q_rope", 4, 4)) ||
      failed(requireRank(*this, getKvLatent(), "kv_latent", 3, 3)) ||
      failed(requireRank(*this, getKRope(), "k_rope", 3, 3)) ||
      failed(requireRank(*this, getKvB(), "kv_b", 2, 2)) ||
      failed(requireRank(*this, getResult(), "result", 4, 4)))
    return failure();
  auto qn = ranked(getQNope()), qr = ranked(getQRope());
  auto c = ranked(getKvLatent()), kr = ranked(getKRope());
  auto wb = ranked(getKvB()), out = ranked(getResult());
  int64_t b = qn.getDimSize(0), s = qn.getDimSize(1), h = qn.getDimSize(2);
  int64_t dn = qn.getDimSize(3), dr = qr.getDimSize(3);
  int64_t t = c.getDimSize(1), rank = c.getDimSize(2);
  int64_t dv = out.getDimSize(3);
  if (failed(requireShape(*this, getQRope(), "q_rope", {b, s, h, dr})) ||
      failed(requireShape(*this, getKRope(), "k_rope", {b, t, dr})) ||
      failed(requireShape(*this, getKvB(), "kv_b", {h * (dn + dv), rank})) ||
      failed(requireShape(*this, getResult(), "result", {b, s, h, dv})))
    return failure();
  if (c.getDimSize(0) != b || kr.getDimSize(0) != b || wb.getRank() != 2)
    return emitOpError("kv_latent and k_rope must have q's batch size");
  if (getCausal() && t < s)
    return emitOpError("causal attention needs kv_len >= seq");
  if (getStart() && failed(requireShape(*this, getStart(), "start", {b})))
    return failure();
  if (isa<Float8E4M3FNType>(wb.getElementType())) {
    if (!getKvBScale())
      return emitOpError("an FP8 kv_b needs kv_b_scale");
    if (failed(requireShape(*this, getKvBScale(), "kv_b_scale",
                            {ceilDiv(wb.getDimSize(0), 128),
                             ceilDiv(wb.getDimSize(1), 128)})))
      return failure();
  } else if (getKvBScale()) {
    return emitOpError("kv_b_scale needs an FP8 kv_b");
  }
  if (isa<Float8E4M3FNType>(c.getElementType())) {
    if (!getKvLatentScale())
      return emitOpError("an e4m3 kv_latent needs kv_latent_scale");
    auto ls = ranked(getKvLatentScale());
    int64_t tiles = ls.getRank() == 3 ? ls.getDimSize(2) : 0;
    if (tiles <= 0 || rank % tiles ||
        failed(requireShape(*this, getKvLatentScale(), "kv_latent_scale",
                            {b, t, tiles})))
      return emitOpError("kv_latent_scale must be [batch, kv_len, tiles], "
                         "the tiles dividing kv_lora_rank");
    if (!ls.getElementType().isF32())
      return emitOpError("kv_latent_scale must be f32");
  } else if (getKvLatentScale()) {
    return emitOpError("kv_latent_scale needs an e4m3 kv_latent");
  }
  return success();
}

LogicalResult MoEOp::verify() {
  if (failed(allStatic(*this)) ||
      failed(requireRank(*this, getInput(), "input", 1)) ||
      failed(requireRank(*this, getRouter(), "router", 2, 2)) ||
      failed(requireRank(*this, getWGate(), "w_gate", 3, 3)))
    return failure();
  int64_t d = ranked(getInput()).getShape().back();
  int64_t e = ranked(getRouter()).getDimSize(0);
  int64_t f = ranked(getWGate()).getDimSize(1);
  int64_t s = getSharedExperts();
  if (s < 0)
    return emitOpError("shared_experts must be >= 0");
  if (failed(requireShape(*this, getRouter(), "router", {e, d})) ||
      failed(requireShape(*this, getWGate(), "w_gate", {e + s, f, d})) ||
      failed(requireShape(*this, getWUp(), "w_up", {e + s, f, d})) ||
      failed(requireShape(*this, getWDown(), "w_down", {e + s, d, f})) ||
      failed(requireShape(*this, getResult(), "result",
                          ranked(getInput()).getShape())))
    return failure();
  if (getCorrectionBias() &&
      failed(requireShape(*this, getCorrectionBias(), "correction_bias", {e})))
    return failure();
  int64_t k = getTopK(), g = getNGroup(), tg = getTopkGroup();
  if (k < 1 || k > e)
    return emitOpError() << "top_k must be in [1, " << e << "], got " << k;
  if (getScoring() != "sigmoid" && getScoring() != "softmax")
    return emitOpError() << "scoring must be \"sigmoid\" or \"softmax\", got \""
                         << getScoring() << "\"";
  if (g < 1 || e % g != 0)
    return emitOpError() << "n_group (" << g
                         << ") must divide the number of experts (" << e << ")";
  if (tg < 1 || tg > g)
    return emitOpError() << "topk_group must be in [1, n_group = " << g
                         << "], got " << tg;
  if (k > tg * (e / g))
    return emitOpError() << "top_k (" << k << ") exceeds the experts in "
                         << tg << " groups";
  if (getGroupScore() != "top2_sum" && getGroupScore() != "max")
    return emitOpError("group_score must be \"top2_sum\" or \"max\"");
  if (auto q = getQuantAttr()) {
    if (failed(verifyQuantAttr(*this, q)))
      return failure();
    if (!getInputQ() || !getInputScale())
      return emitOpError("a quantized moe needs input_q and input_scale");
    if (failed(requireShape(*this, getInputQ(), "input_q",
                            ranked(getInput()).getShape())))
      return failure();
    if (failed(verifyQuantWeight(*this, getWGate(), getWGateScale(), q,
                                 "w_gate")) ||
        failed(verifyQuantWeight(*this, getWUp(), getWUpScale(), q, "w_up")) ||
        failed(verifyQuantWeight(*this, getWDown(), getWDownScale(), q,
                                 "w_down")))
      return failure();
  } else if (getInputQ() || getWGateScale()) {
    return emitOpError("fp8 operands need the quant attribute");
  }
  return success();
}

#define GET_OP_CLASSES
#include "kiln/IR/KilnOps.cpp.inc"
