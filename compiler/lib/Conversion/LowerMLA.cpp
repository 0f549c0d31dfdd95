//===- LowerMLA.cpp - kiln.mla_attention -> the absorbed or naive form ----===//
//
// The MLA lowering (also run by kiln-lower-to-kernels). `form` chooses the
// kernel form: `auto` (preferNaiveMLA: naive for long prefills, absorbed for
// decode), `absorbed` or `naive`. With a block-quantized kv_b the naive form
// is DeepSeek's: the latent quantized in 1 x 128 tiles, an FP8 GEMM.
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
#define GEN_PASS_DEF_KILNLOWERMLA
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;
namespace g = kiln::graph;
namespace k = kiln::kernel;

namespace {

/// kiln.mla_attention -> the absorbed form (one launch), or for long
/// prefills the naive form: a GEMM of kv_b over the cached latent, then
/// mla_naive (preferNaiveMLA, docs/kernels.md). With a block-quantized kv_b
/// the absorbed form dequantizes it as it reads, and the naive form's GEMM
/// is gemm_fp8 over the latent quantized per 1 x 128 (DeepSeek's naive
/// attention: its kv_b linear quantizes its input).
struct LowerMLA : OpRewritePattern<g::MLAAttentionOp> {
  LowerMLA(MLIRContext *ctx, int64_t minPrograms, kiln::MLAForm form)
      : OpRewritePattern(ctx), minPrograms(minPrograms), form(form) {}
  LogicalResult matchAndRewrite(g::MLAAttentionOp op,
                                PatternRewriter &rw) const override {
    auto outTy = cast<RankedTensorType>(op.getType());
    int64_t rows = cast<RankedTensorType>(op.getType()).getNumElements() / outTy.getShape().back();
    auto latTy = cast<RankedTensorType>(op.getKvLatent().getType());
    auto qrTy = cast<RankedTensorType>(op.getQRope().getType());
    int64_t rank = latTy.getShape().back();
    int64_t batch = latTy.getDimSize(0), kvLen = latTy.getDimSize(1);
    int64_t seq = qrTy.getDimSize(1), heads = qrTy.getDimSize(2);
    int64_t dr = qrTy.getDimSize(3), dv = outTy.getShape().back();
    int64_t kvbRows = cast<RankedTensorType>(op.getKvB().getType()).getDimSize(0);
    int64_t dn = kvbRows / heads - dv;
    ArrayAttr fused = kiln::fusedOps(rw, {g::MLAAttentionOp::getOperationName()});
    Location loc = op.getLoc();
    // Without a start position a causal call attends to the cache's first
    // `seq` positions only (its own tokens): the naive form then needs K/V
    // for that prefix, a contiguous view of the caches at batch 1. Otherwise
    // (a start: decode, extend; or the prefix of several batch rows) it
    // would apply kv_b to every position of the cache on every call, work
    // and memory that do not follow the request, so `auto` keeps the
    // absorbed form there.
    bool prefixOnly = !op.getStart() && op.getCausal() && kvLen > seq;
    bool usePrefix = prefixOnly && batch == 1;
    bool wholeCache = kvLen > seq && !usePrefix;
    bool naive =
        form == kiln::MLAForm::Naive ||
        (form == kiln::MLAForm::Auto && !wholeCache &&
         kiln::kernels::preferNaiveMLA(seq, usePrefix ? seq : kvLen, heads,
                                       dn, dr, dv, rank));
    if (naive) {
      Type f32 = rw.getF32Type();
      int64_t keys = usePrefix ? seq : kvLen;
      Value lat = k::ViewOp::create(
          rw, loc, RankedTensorType::get({batch * keys, rank},
                                         latTy.getElementType()),
          op.getKvLatent());
      Value kRope = op.getKRope();
      if (usePrefix) {
        auto krTy = cast<RankedTensorType>(kRope.getType());
        kRope = k::ViewOp::create(
            rw, loc,
            RankedTensorType::get({batch, keys, krTy.getDimSize(2)},
                                  krTy.getElementType()),
            kRope);
      }
      int64_t tileN = kiln::kernels::chooseGemmTileN(batch * keys, kvbRows,
                                                     rank, minPrograms);
      auto kvTy = RankedTensorType::get({batch * keys, kvbRows}, f32);
      // kv_b's 128 x 128 blocks: the latent's tiles are 128 of K.
      constexpr int64_t kBlock = 128;
      int64_t tokenRows = batch * keys, tiles = (rank + kBlock - 1) / kBlock;
      if (Value s = op.getKvLatentScale()) {
        // The FP8 latent cache: its values x their tiles' scales.
        int64_t cacheTiles = cast<RankedTensorType>(s.getType()).getDimSize(2);
        Value latScale = k::ViewOp::create(
            rw, loc, RankedTensorType::get({tokenRows, cacheTiles}, f32), s);
        lat = k::DequantizeOp::create(
            rw, loc, RankedTensorType::get({tokenRows, rank}, f32), lat,
            latScale, rw.getI64IntegerAttr(rank / cacheTiles), fused);
      }
      Value kv;
      if (Value kvbScale = op.getKvBScale()) {
        auto quant = k::QuantizeOp::create(
            rw, loc,
            TypeRange{RankedTensorType::get({tokenRows, rank},
                                            rw.getType<Float8E4M3FNType>()),
                      RankedTensorType::get({tokenRows, tiles}, f32)},
            lat, rw.getI64IntegerAttr(kBlock), fused);
        kv = k::GemmFP8Op::create(
            rw, loc, kvTy, quant.getResult(), op.getKvB(), quant.getScale(),
            kvbScale, ValueRange{}, rw.getI64IntegerAttr(tileN),
            rw.getI64IntegerAttr(kBlock), rw.getI64IntegerAttr(kBlock), fused);
      } else {
        kv = k::GemmOp::create(rw, loc, kvTy, lat, op.getKvB(), ValueRange{},
                               rw.getI64IntegerAttr(tileN), fused);
      }
      kv = k::ViewOp::create(
          rw, loc, RankedTensorType::get({batch, keys, heads, dn + dv}, f32),
          kv);
      auto naive = k::MLANaiveOp::create(
          rw, loc, TypeRange{op.getType(), RankedTensorType::get({rows, dr}, f32)},
          op.getQNope(), op.getQRope(), kv, kRope, op.getStart(),
          rw.getI64IntegerAttr(0), rw.getI64IntegerAttr(0),
          rw.getI64IntegerAttr(0), DictionaryAttr(), op.getScaleAttr(),
          op.getCausalAttr(), fused);
      rw.replaceOp(op, naive.getResult());
      return success();
    }
    auto ws = RankedTensorType::get(
        {rows, kiln::kernels::mlaWorkspacePerProgram(seq, rank, dr)},
        rw.getF32Type());
    auto k = k::MLAAttentionOp::create(
        rw, loc, TypeRange{op.getType(), ws}, op.getQNope(), op.getQRope(),
        op.getKvLatent(), op.getKRope(), op.getKvB(), op.getKvBScale(),
        op.getKvLatentScale(), op.getStart(), rw.getI64IntegerAttr(0),
        rw.getI64IntegerAttr(0), rw.getI64IntegerAttr(0), DictionaryAttr(),
        op.getScaleAttr(), op.getCausalAttr(), fused);
    rw.replaceOp(op, k.getResult());
    return success();
  }
  int64_t minPrograms;
  kiln::MLAForm form;
};

struct KilnLowerMLAPass : kiln::impl::KilnLowerMLABase<KilnLowerMLAPass> {
  using Base::Base;
  void runOnOperation() override {
    std::optional<kiln::MLAForm> f = kiln::parseMLAForm(form);
    if (!f) {
      getOperation().emitError() << "kiln-lower-mla: form must be auto, "
                                    "absorbed or naive, got '"
                                 << form << "'";
      return signalPassFailure();
    }
    RewritePatternSet patterns(&getContext());
    kiln::populateLowerMLAPatterns(patterns, minGemmPrograms, *f);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

std::optional<kiln::MLAForm> kiln::parseMLAForm(StringRef s) {
  if (s == "auto")
    return MLAForm::Auto;
  if (s == "absorbed")
    return MLAForm::Absorbed;
  if (s == "naive")
    return MLAForm::Naive;
  return std::nullopt;
}

void kiln::populateLowerMLAPatterns(RewritePatternSet &patterns,
                                    int64_t minGemmPrograms, MLAForm form) {
  patterns.add<LowerMLA>(patterns.getContext(), minGemmPrograms, form);
}
