//===- HuggingFace.cpp - Hugging Face checkpoints -> kiln graph -----------===//
//
// One builder per family, written from the published modeling code:
// Llama (GQA), Mixtral (GQA + MoE), DeepSeek-V2 and V3 (MLA + MoE with
// shared experts, YaRN). Every op carries the checkpoint prefix it comes from
// as its location (e.g. "model.layers.3.mlp"), so kernels trace back to it.
// The config is read and validated first (HFConfig.cpp): the builders only
// see a ModelSpec whose every size and shape product is known to fit.
//
//===----------------------------------------------------------------------===//
#include "kiln/Models/HuggingFace.h"

#include "HFConfig.h"

#include "kiln/IR/KilnDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cmath>

using namespace mlir;
namespace g = kiln::graph;

namespace kiln::models {

namespace {

/// The graph builder: helpers that create kiln ops with shapes inferred.
class GraphBuilder {
public:
  GraphBuilder(MLIRContext &ctx, OpBuilder &b, const ImportOptions &opts,
               const std::function<std::string(StringRef)> &dtypeOf,
               Type defaultWeightType)
      : ctx(ctx), b(b), opts(opts), dtypeOf(dtypeOf),
        defaultWeightType(defaultWeightType) {}

  Location at(StringRef prefix) {
    return NameLoc::get(b.getStringAttr(prefix));
  }
  Type f32() { return b.getF32Type(); }
  RankedTensorType tensor(ArrayRef<int64_t> shape, Type et) {
    return RankedTensorType::get(shape, et);
  }
  ArrayRef<int64_t> shape(Value v) {
    return cast<RankedTensorType>(v.getType()).getShape();
  }

  /// Element type of a checkpoint tensor; missing tensors default to the
  /// model dtype (the compiler reports them by name when resolving).
  Type weightType(StringRef name) {
    std::string dt = opts.noWeights ? "" : dtypeOf(name);
    if (dt == "F32")
      return b.getF32Type();
    if (dt == "F16")
      return b.getF16Type();
    if (dt == "BF16")
      return b.getBF16Type();
    return defaultWeightType;
  }
  Value weight(StringRef name, ArrayRef<int64_t> shape, Type forced = {}) {
    Type et = forced ? forced : weightType(name);
    return g::WeightOp::create(b, at(name.rsplit('.').first),
                               tensor(shape, et), b.getStringAttr(name));
  }
  Value weightStack(ArrayRef<std::string> names, ArrayRef<int64_t> shape,
                    StringRef prefix) {
    SmallVector<Attribute> attrs;
    for (const std::string &n : names)
      attrs.push_back(b.getStringAttr(n));
    SmallVector<int64_t> full{static_cast<int64_t>(names.size())};
    full.append(shape.begin(), shape.end());
    return g::WeightStackOp::create(b, at(prefix),
                                    tensor(full, weightType(names.front())),
                                    b.getArrayAttr(attrs));
  }
  Value rmsNorm(Value x, StringRef wname, double eps) {
    Value w = weight(wname, {shape(x).back()});
    return g::RMSNormOp::create(b, at(wname.rsplit('.').first), x.getType(),
                                x, w, b.getF32FloatAttr(eps));
  }
  /// Projection by a checkpoint weight. `quantizable` marks the projections
  /// DeepSeek-V3 quantizes; in FP8 mode their input is quantized
  /// (kiln.quantize, fused into its producer later) and the weight is e4m3
  /// with its `_scale_inv` block scales.
  /// `bias`: the checkpoint's `X.bias` ([out]) is added after the
  /// projection (kiln.bias_add).
  Value linear(Value x, StringRef wname, int64_t out, bool quantizable = false,
               bool bias = false) {
    Value y = projection(x, wname, out, quantizable);
    if (!bias)
      return y;
    std::string bname = (wname.drop_back(StringRef(".weight").size()) + ".bias").str();
    Value bv = weight(bname, {out});
    return g::BiasAddOp::create(b, at(wname.rsplit('.').first), y.getType(), y,
                                bv);
  }
  Value projection(Value x, StringRef wname, int64_t out, bool quantizable) {
    int64_t in = shape(x).back();
    SmallVector<int64_t> s(shape(x));
    s.back() = out;
    Location loc = at(wname.rsplit('.').first);
    if (quant && quantizable) {
      auto [xq, xs] = quantize(x, loc);
      Value w = weight(wname, {out, in}, quant.getElementType());
      Value ws = weight((wname + "_scale_inv").str(),
                        {ceilDiv(out, 128), ceilDiv(in, 128)}, f32());
      return g::LinearOp::create(b, loc, tensor(s, f32()), xq, w, xs, ws,
                                 quant);
    }
    Value w = weight(wname, {out, in});
    return g::LinearOp::create(b, loc, tensor(s, f32()), x, w, Value(),
                               Value(), g::BlockQuantAttr());
  }
  static int64_t ceilDiv(int64_t a, int64_t c) { return (a + c - 1) / c; }
  std::pair<Value, Value> quantize(Value x, Location loc) {
    SmallVector<int64_t> ss(shape(x));
    ss.back() = ceilDiv(ss.back(), quant.getActBlock());
    auto op = g::QuantizeOp::create(
        b, loc, TypeRange{tensor(shape(x), quant.getElementType()),
                          tensor(ss, f32())},
        x, quant);
    return {op.getResult(), op.getScale()};
  }
  Value reshape(Value x, ArrayRef<int64_t> s, Location loc) {
    return g::ReshapeOp::create(b, loc, tensor(s, f32()), x);
  }
  Value slice(Value x, int64_t offset, int64_t size, Location loc) {
    SmallVector<int64_t> s(shape(x));
    s.back() = size;
    return g::SliceOp::create(b, loc, tensor(s, f32()), x,
                              b.getI64IntegerAttr(offset));
  }
  Value add(Value a, Value c, Location loc) {
    return g::AddOp::create(b, loc, a.getType(), a, c);
  }
  Value mlp(Value x, StringRef prefix, int64_t ffn, bool bias) {
    Value gt = linear(x, (prefix + ".gate_proj.weight").str(), ffn, true, bias);
    Value up = linear(x, (prefix + ".up_proj.weight").str(), ffn, true, bias);
    Value act = g::SwiGLUOp::create(b, at(prefix), gt.getType(), gt, up);
    return linear(act, (prefix + ".down_proj.weight").str(), shape(x).back(),
                  true, bias);
  }
  /// kiln.state + kiln.cache_update: appends `values` ([B, seq, ...]) to
  /// the named cache ([B, capacity, ...]) at the entry's start position.
  Value cache(StringRef name, Value values, Location loc) {
    return cache(name, values,
                 opts.cacheType == ImportOptions::CacheType::F32
                     ? f32()
                     : Type(b.getBF16Type()),
                 loc);
  }
  Value cache(StringRef name, Value values, Type elementType, Location loc) {
    SmallVector<int64_t> shape(this->shape(values));
    shape[1] = opts.seq;
    auto type = tensor(shape, elementType);
    Value state = g::StateOp::create(b, loc, type, b.getStringAttr(name));
    return g::CacheUpdateOp::create(b, loc, type, state, values, start);
  }
  Value rope(Value x, const RopeSpec &r, Location loc) {
    return g::RopeOp::create(
        b, loc, x.getType(), x, start, b.getF32FloatAttr(r.theta),
        b.getI64IntegerAttr(r.dim), b.getBoolAttr(r.interleaved),
        b.getF32FloatAttr(r.linearFactor), b.getF32FloatAttr(r.yarnFactor),
        b.getF32FloatAttr(r.yarnLow), b.getF32FloatAttr(r.yarnHigh),
        b.getF32FloatAttr(r.attentionFactor));
  }

  MLIRContext &ctx;
  OpBuilder &b;
  const ImportOptions &opts;
  const std::function<std::string(StringRef)> &dtypeOf;
  Type defaultWeightType;
  /// The entry being built: its sequence length and, for decode, the
  /// position of its first token ([batch] i32; null for prefill).
  int64_t seq = 0;
  Value start;
  /// Set in FP8 mode: DeepSeek-V3's block quantization.
  g::BlockQuantAttr quant;
};


/// GQA self-attention (Llama, Mixtral). Llama's attention_bias puts a bias
/// on q, k, v and o (LlamaAttention); Mixtral has none.
Value gqaAttention(GraphBuilder &gb, const ModelSpec &m, Value x,
                   const std::string &p) {
  int64_t B = gb.opts.batch, S = gb.seq, hd = m.headDim, kvh = m.kvHeads;
  bool bias = m.attentionBias;
  Location loc = gb.at(p + ".self_attn");
  std::string a = p + ".self_attn.";
  Value q = gb.linear(x, a + "q_proj.weight", m.heads * hd, true, bias);
  Value k = gb.linear(x, a + "k_proj.weight", kvh * hd, true, bias);
  Value v = gb.linear(x, a + "v_proj.weight", kvh * hd, true, bias);
  q = gb.rope(gb.reshape(q, {B, S, m.heads, hd}, loc), m.rope, loc);
  k = gb.rope(gb.reshape(k, {B, S, kvh, hd}, loc), m.rope, loc);
  v = gb.reshape(v, {B, S, kvh, hd}, loc);
  k = gb.cache(a + "k_cache", k, loc);
  v = gb.cache(a + "v_cache", v, loc);
  Value o = g::AttentionOp::create(
      gb.b, loc, gb.tensor({B, S, m.heads, hd}, gb.f32()), q, k, v, gb.start,
      gb.b.getF32FloatAttr(1.0 / std::sqrt(double(hd))),
      gb.b.getBoolAttr(true));
  o = gb.reshape(o, {B, S, m.heads * hd}, loc);
  return gb.linear(o, a + "o_proj.weight", m.hidden, true, bias);
}

/// DeepSeek Multi-head Latent Attention. attention_bias puts a bias on
/// q_a_proj, kv_a_proj_with_mqa and o_proj only (DeepseekV2/V3Attention).
Value mlaAttention(GraphBuilder &gb, const ModelSpec &m, Value x,
                   const std::string &p) {
  int64_t H = m.heads, B = gb.opts.batch, S = gb.seq;
  int64_t dn = m.qkNope, dr = m.qkRope, dv = m.vHead, rank = m.kvLoraRank;
  bool bias = m.attentionBias;
  Location loc = gb.at(p + ".self_attn");
  std::string a = p + ".self_attn.";
  Value q;
  if (m.qLoraRank) {
    Value qa = gb.linear(x, a + "q_a_proj.weight", m.qLoraRank, true, bias);
    qa = gb.rmsNorm(qa, a + "q_a_layernorm.weight", m.eps);
    q = gb.linear(qa, a + "q_b_proj.weight", H * (dn + dr), true);
  } else {
    q = gb.linear(x, a + "q_proj.weight", H * (dn + dr), true);
  }
  q = gb.reshape(q, {B, S, H, dn + dr}, loc);
  Value qNope = gb.slice(q, 0, dn, loc);
  Value qPe = gb.rope(gb.slice(q, dn, dr, loc), m.rope, loc);
  Value kv =
      gb.linear(x, a + "kv_a_proj_with_mqa.weight", rank + dr, true, bias);
  Value latent = gb.rmsNorm(gb.slice(kv, 0, rank, loc),
                            a + "kv_a_layernorm.weight", m.eps);
  Value kPe = gb.reshape(gb.slice(kv, rank, dr, loc), {B, S, 1, dr}, loc);
  kPe = gb.reshape(gb.rope(kPe, m.rope, loc), {B, S, dr}, loc);
  std::string kvbName = a + "kv_b_proj.weight";
  Value kvB, kvBScale;
  if (gb.quant) {
    // Dequantized as the absorbed kernel reads it (no activation quant).
    kvB = gb.weight(kvbName, {H * (dn + dv), rank}, gb.quant.getElementType());
    kvBScale = gb.weight(kvbName + "_scale_inv",
                         {GraphBuilder::ceilDiv(H * (dn + dv), 128),
                          GraphBuilder::ceilDiv(rank, 128)},
                         gb.f32());
  } else {
    kvB = gb.weight(kvbName, {H * (dn + dv), rank});
  }
  // The cache holds the normalized latent and the rotated rope key:
  // kv_lora_rank + qk_rope_head_dim values per token.
  Value latentScale;
  if (gb.opts.cacheType == ImportOptions::CacheType::FP8) {
    // The FP8 latent cache: each token's latent e4m3 under one power-of-two
    // scale, no subnormal codes (docs/fp8.md).
    auto row = g::BlockQuantAttr::get(&gb.ctx, gb.b.getType<Float8E4M3FNType>(),
                                      {128, 128}, rank);
    auto q = g::QuantizeOp::create(
        gb.b, loc,
        TypeRange{gb.tensor({B, S, rank}, row.getElementType()),
                  gb.tensor({B, S, 1}, gb.f32())},
        latent, row, gb.b.getBoolAttr(true), gb.b.getBoolAttr(true));
    latent = gb.cache(a + "kv_latent_cache", q.getResult(),
                      row.getElementType(), loc);
    latentScale =
        gb.cache(a + "kv_latent_scale_cache", q.getScale(), gb.f32(), loc);
    kPe = gb.cache(a + "k_rope_cache", kPe, gb.b.getBF16Type(), loc);
  } else {
    latent = gb.cache(a + "kv_latent_cache", latent, loc);
    kPe = gb.cache(a + "k_rope_cache", kPe, loc);
  }
  Value o = g::MLAAttentionOp::create(
      gb.b, loc, gb.tensor({B, S, H, dv}, gb.f32()), qNope, qPe, latent, kPe,
      kvB, kvBScale, latentScale, gb.start,
      gb.b.getF32FloatAttr(m.softmaxScale), gb.b.getBoolAttr(true));
  o = gb.reshape(o, {B, S, H * dv}, loc);
  return gb.linear(o, a + "o_proj.weight", m.hidden, true, bias);
}

Value moe(GraphBuilder &gb, Value x, const std::string &p,
          const std::string &routerName, const MoESpec &mc,
          const std::function<std::string(int64_t, StringRef)> &expertName) {
  int64_t D = gb.shape(x).back();
  Location loc = gb.at(p);
  Value router = gb.weight(routerName, {mc.experts, D});
  Value bias;
  if (mc.correctionBias)
    bias = gb.weight(p + ".gate.e_score_correction_bias", {mc.experts});
  std::vector<std::string> wg, wu, wd;
  for (int64_t e = 0; e < mc.experts; ++e) {
    wg.push_back(expertName(e, "gate"));
    wu.push_back(expertName(e, "up"));
    wd.push_back(expertName(e, "down"));
  }
  auto I64 = [&](int64_t v) { return gb.b.getI64IntegerAttr(v); };
  if (gb.quant) {
    Type f8 = gb.quant.getElementType();
    auto scaleNames = [](const std::vector<std::string> &names) {
      std::vector<std::string> out;
      for (const std::string &n : names)
        out.push_back(n + "_scale_inv");
      return out;
    };
    auto stack = [&](const std::vector<std::string> &names,
                     ArrayRef<int64_t> shape, Type et) {
      SmallVector<Attribute> attrs;
      for (const std::string &n : names)
        attrs.push_back(gb.b.getStringAttr(n));
      SmallVector<int64_t> full{static_cast<int64_t>(names.size())};
      full.append(shape.begin(), shape.end());
      return g::WeightStackOp::create(gb.b, gb.at(p + ".experts"),
                                      gb.tensor(full, et),
                                      gb.b.getArrayAttr(attrs))
          .getResult();
    };
    auto cd = GraphBuilder::ceilDiv;
    Value sg = stack(wg, {mc.ffn, D}, f8), su = stack(wu, {mc.ffn, D}, f8);
    Value sd = stack(wd, {D, mc.ffn}, f8);
    Value sgs = stack(scaleNames(wg), {cd(mc.ffn, 128), cd(D, 128)}, gb.f32());
    Value sus = stack(scaleNames(wu), {cd(mc.ffn, 128), cd(D, 128)}, gb.f32());
    Value sds = stack(scaleNames(wd), {cd(D, 128), cd(mc.ffn, 128)}, gb.f32());
    auto [xq, xs] = gb.quantize(x, loc);
    return g::MoEOp::create(
        gb.b, loc, x.getType(), x, router, bias, sg, su, sd, xq, xs, sgs, sus,
        sds, gb.quant, I64(mc.topK), gb.b.getStringAttr(mc.scoring),
        I64(mc.groups), I64(mc.topkGroup), gb.b.getStringAttr(mc.groupScore),
        gb.b.getBoolAttr(mc.norm), gb.b.getF32FloatAttr(mc.scaling));
  }
  Value sg = gb.weightStack(wg, {mc.ffn, D}, p + ".experts");
  Value su = gb.weightStack(wu, {mc.ffn, D}, p + ".experts");
  Value sd = gb.weightStack(wd, {D, mc.ffn}, p + ".experts");
  return g::MoEOp::create(
      gb.b, loc, x.getType(), x, router, bias, sg, su, sd, Value(), Value(),
      Value(), Value(), Value(), g::BlockQuantAttr(), I64(mc.topK),
      gb.b.getStringAttr(mc.scoring), I64(mc.groups), I64(mc.topkGroup),
      gb.b.getStringAttr(mc.groupScore), gb.b.getBoolAttr(mc.norm),
      gb.b.getF32FloatAttr(mc.scaling));
}

/// The body of one entry function: embedding, layers, final norm, LM head.
void buildBody(GraphBuilder &gb, const ModelSpec &m, Value tokens) {
  OpBuilder &b = gb.b;
  int64_t B = gb.opts.batch, S = gb.seq;

  Value table = gb.weight("model.embed_tokens.weight", {m.vocab, m.hidden});
  Value h = g::EmbeddingOp::create(b, gb.at("model.embed_tokens"),
                                   gb.tensor({B, S, m.hidden}, gb.f32()),
                                   table, tokens);
  for (int64_t i = 0; i < m.layers; ++i) {
    std::string p = "model.layers." + std::to_string(i);
    Value n = gb.rmsNorm(h, p + ".input_layernorm.weight", m.eps);
    Value attn = m.isDeepseek() ? mlaAttention(gb, m, n, p)
                                : gqaAttention(gb, m, n, p);
    h = gb.add(h, attn, gb.at(p));
    // Past the last attention only the positions whose logits are returned
    // matter (every position's keys and values are cached by now).
    if (i + 1 == m.layers && !gb.opts.allLogits && S > 1) {
      h = g::LastTokenOp::create(b, gb.at(p + ".last_token"),
                                 gb.tensor({B, 1, m.hidden}, gb.f32()), h);
      gb.seq = 1;
    }
    n = gb.rmsNorm(h, p + ".post_attention_layernorm.weight", m.eps);
    Value y;
    if (!m.isMoELayer(i)) {
      y = gb.mlp(n, p + ".mlp", m.intermediate, m.mlpBias);
    } else if (m.family == Family::Mixtral) {
      std::string mp = p + ".block_sparse_moe";
      y = moe(gb, n, mp, mp + ".gate.weight", m.moe,
              [&](int64_t j, StringRef which) {
                const char *w = which == "gate" ? "w1"
                                : which == "up" ? "w3"
                                                : "w2";
                return mp + ".experts." + std::to_string(j) + "." + w +
                       ".weight";
              });
    } else {
      std::string mp = p + ".mlp";
      // The shared expert first: the routed experts' down projection then
      // folds it and the residual into its epilogue (kiln-fuse-residual).
      // DeepseekV2MLP (dense and shared) carries mlp_bias; routed experts
      // never have a bias.
      Value sharedOut;
      if (m.moe.sharedExperts > 0)
        sharedOut = gb.mlp(n, mp + ".shared_experts",
                           m.moe.ffn * m.moe.sharedExperts, m.mlpBias);
      y = moe(gb, n, mp, mp + ".gate.weight", m.moe,
              [&](int64_t j, StringRef which) {
                return mp + ".experts." + std::to_string(j) + "." +
                       which.str() + "_proj.weight";
              });
      if (sharedOut)
        y = gb.add(y, sharedOut, gb.at(mp));
    }
    h = gb.add(h, y, gb.at(p));
  }
  h = gb.rmsNorm(h, "model.norm.weight", m.eps);
  Value logits = gb.linear(
      h, m.tieEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight",
      m.vocab, /*quantizable=*/gb.opts.fp8LmHead);
  if (!gb.opts.allLogits)
    logits = g::ReshapeOp::create(b, gb.at("lm_head"),
                                  gb.tensor({B, m.vocab}, gb.f32()), logits);
  gb.seq = S;
  func::ReturnOp::create(b, gb.at("lm_head"), logits);
}

/// A published FP8 checkpoint must use exactly DeepSeek-V3's scheme.
LogicalResult checkQuantizationConfig(const llvm::json::Object &qc,
                                      Location loc) {
  auto field = [&](StringRef k) { return qc.getString(k).value_or("").str(); };
  auto error = [&](StringRef f) {
    return emitError(loc) << "config field 'quantization_config." << f << "' ";
  };
  const llvm::json::Array *blk = qc.getArray("weight_block_size");
  if (field("quant_method") != "fp8")
    return error("quant_method")
           << "'" << field("quant_method") << "' is not supported (fp8)";
  if (field("fmt") != "e4m3")
    return error("fmt") << "'" << field("fmt") << "' is not supported (e4m3)";
  if (!blk || blk->size() != 2 || (*blk)[0].getAsInteger() != 128 ||
      (*blk)[1].getAsInteger() != 128)
    return error("weight_block_size") << "must be [128, 128]";
  if (field("activation_scheme") != "dynamic")
    return error("activation_scheme")
           << "'" << field("activation_scheme")
           << "' is not supported (dynamic)";
  return success();
}

} // namespace

FailureOr<OwningOpRef<ModuleOp>>
importHuggingFace(MLIRContext &ctx, const std::string &configPath,
                  const ImportOptions &given,
                  const std::function<std::string(StringRef)> &dtypeOf) {
  ctx.loadDialect<g::KilnDialect, func::FuncDialect>();
  ImportOptions opts = given;
  Location fileLoc = FileLineColLoc::get(&ctx, configPath, 0, 0);
  auto buf = llvm::MemoryBuffer::getFile(configPath);
  if (!buf)
    return emitError(fileLoc) << "cannot read " << configPath << ": "
                              << buf.getError().message(),
           failure();
  auto json = llvm::json::parse((*buf)->getBuffer());
  if (!json) {
    emitError(fileLoc) << "invalid JSON: " << llvm::toString(json.takeError());
    return failure();
  }
  const llvm::json::Object *root = json->getAsObject();
  if (!root) {
    emitError(fileLoc) << "config.json is not a JSON object";
    return failure();
  }
  if (opts.seq == 0) {
    // The default: the config's context, capped (kDefaultMaxSeq).
    ImportOptions probe = opts;
    probe.seq = 1;
    FailureOr<ModelSpec> s = readModelSpec(ctx, *root, configPath, probe);
    if (failed(s))
      return failure();
    opts.seq = std::min<int64_t>(s->maxPositions, kDefaultMaxSeq);
  }
  FailureOr<ModelSpec> spec = readModelSpec(ctx, *root, configPath, opts);
  if (failed(spec))
    return failure();
  const ModelSpec &m = *spec;
  const llvm::json::Object *qc = root->getObject("quantization_config");
  if (qc && failed(checkQuantizationConfig(*qc, fileLoc)))
    return failure();

  OpBuilder b(&ctx);
  Type defaultWT = m.dtype == "float32"   ? Type(b.getF32Type())
                   : m.dtype == "float16" ? Type(b.getF16Type())
                                          : Type(b.getBF16Type());
  OwningOpRef<ModuleOp> module = ModuleOp::create(fileLoc);
  if (opts.prefillChunk == 0)
    opts.prefillChunk = std::min(opts.seq, kDefaultPrefillChunk);
  if (opts.prefillChunk < 1 || opts.prefillChunk > opts.seq) {
    emitError(fileLoc) << "--prefill-chunk must be in [1, --max-seq "
                       << opts.seq << "], got " << opts.prefillChunk;
    return failure();
  }
  const int64_t chunk = opts.prefillChunk;
  const bool chunked = chunk < opts.seq;
  // What bounds each dimension symbol (kiln.dims), for the runtime's errors
  // on inputs beyond the plan's limits: the batch, and the tokens per row
  // a prefill call takes (the chunk when prefill is chunked).
  (*module)->setAttr(
      "kiln.symbol_limits",
      b.getStrArrayAttr(
          {"--max-batch " + std::to_string(opts.batch),
           chunked ? "--prefill-chunk " + std::to_string(chunk)
                   : "--max-seq " + std::to_string(opts.seq)}));
  if (opts.fp8LmHead && !qc && !opts.quantizeFP8) {
    emitError(fileLoc) << "--fp8-lm-head needs an FP8 model: a checkpoint "
                          "with a quantization_config, or --quantize=fp8-block";
    return failure();
  }
  if (opts.fp8LmHead && m.tieEmbeddings) {
    emitError(fileLoc) << "--fp8-lm-head: tie_word_embeddings is true (the LM "
                          "head is the embedding table, which stays in its "
                          "checkpoint precision)";
    return failure();
  }
  if (opts.cacheType == ImportOptions::CacheType::FP8 && !m.isDeepseek()) {
    emitError(fileLoc) << "--kv-cache-dtype=fp8 is the MLA latent cache "
                          "(DeepSeek-V2/V3 models); this model's attention "
                          "is GQA, whose caches take bf16 or f32";
    return failure();
  }
  GraphBuilder gb(ctx, b, opts, dtypeOf, defaultWT);
  if (qc || opts.quantizeFP8)
    gb.quant = g::BlockQuantAttr::get(&ctx, b.getType<Float8E4M3FNType>(),
                                      {128, 128}, 128);
  // forward (prefill from position 0: tokens [B, chunk], fills the KV
  // cache), extend when prefill is chunked (the next chunk of tokens at
  // `position`: appends to the cache and attends to all of it), and decode
  // (one token per batch row at `position`).
  struct Entry {
    const char *name;
    int64_t seq;
    bool positioned;
  };
  SmallVector<Entry> entries{{"forward", chunk, false}};
  if (chunked)
    entries.push_back({"extend", chunk, true});
  entries.push_back({"decode", 1, true});
  for (const Entry &e : entries) {
    int64_t B = opts.batch, S = e.seq;
    bool decode = StringRef(e.name) == "decode";
    gb.seq = S;
    b.setInsertionPointToEnd(module->getBody());
    auto tokensTy = gb.tensor({B, S}, b.getI32Type());
    auto logitsTy = opts.allLogits ? gb.tensor({B, S, m.vocab}, gb.f32())
                                   : gb.tensor({B, m.vocab}, gb.f32());
    SmallVector<Type> inputs{tokensTy};
    if (e.positioned)
      inputs.push_back(gb.tensor({B}, b.getI32Type()));
    auto fn = func::FuncOp::create(b, gb.at("model"), e.name,
                                   b.getFunctionType(inputs, {logitsTy}));
    fn.setArgAttr(0, "kiln.name", b.getStringAttr("tokens"));
    if (e.positioned)
      fn.setArgAttr(1, "kiln.name", b.getStringAttr("position"));
    fn.setResultAttr(0, "kiln.name", b.getStringAttr("logits"));
    // Batch rows are independent and attention is causal: callers may give
    // fewer rows (symbol 0) and, for prefill, fewer positions (symbol 1);
    // the runtime pads and slices (TensorSpec.dim_symbols).
    int64_t seqSym = decode ? -1 : 1;
    fn.setArgAttr(0, "kiln.dims", b.getDenseI64ArrayAttr({0, seqSym}));
    if (e.positioned)
      fn.setArgAttr(1, "kiln.dims", b.getDenseI64ArrayAttr({0}));
    fn.setResultAttr(0, "kiln.dims",
                     opts.allLogits
                         ? b.getDenseI64ArrayAttr({0, seqSym, -1})
                         : b.getDenseI64ArrayAttr({0, -1}));
    Block *entry = fn.addEntryBlock();
    b.setInsertionPointToStart(entry);
    gb.start = e.positioned ? entry->getArgument(1) : Value();
    buildBody(gb, m, entry->getArgument(0));
  }
  return module;
}

} // namespace kiln::models
