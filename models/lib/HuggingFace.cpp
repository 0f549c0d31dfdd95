//===- HuggingFace.cpp - Hugging Face checkpoints -> kiln graph -----------===//
//
// One builder per family, written from the published modeling code:
// Llama (GQA), Mixtral (GQA + MoE), DeepSeek-V2 and V3 (MLA + MoE with
// shared experts, YaRN). Every op carries the checkpoint prefix it comes from
// as its location (e.g. "model.layers.3.mlp"), so kernels trace back to it.
//
//===----------------------------------------------------------------------===//
#include "kiln/Models/HuggingFace.h"

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

/// Typed access to config.json with errors that name the field.
class Config {
public:
  Config(const llvm::json::Object &obj, std::string path, MLIRContext &ctx)
      : obj(obj), path(std::move(path)), ctx(ctx) {}

  InFlightDiagnostic error(const Twine &field) {
    return emitError(FileLineColLoc::get(&ctx, path, 0, 0))
           << "config field '" << field << "' ";
  }
  bool has(StringRef key) const {
    const llvm::json::Value *v = obj.get(key);
    return v && v->kind() != llvm::json::Value::Null;
  }
  FailureOr<int64_t> integer(StringRef key) {
    if (auto v = obj.getInteger(key))
      return *v;
    error(key) << (has(key) ? "must be an integer" : "is missing");
    return failure();
  }
  int64_t integerOr(StringRef key, int64_t dflt) {
    if (auto v = obj.getInteger(key))
      return *v;
    return dflt;
  }
  FailureOr<double> number(StringRef key) {
    if (auto v = obj.getNumber(key))
      return *v;
    error(key) << (has(key) ? "must be a number" : "is missing");
    return failure();
  }
  double numberOr(StringRef key, double dflt) {
    if (auto v = obj.getNumber(key))
      return *v;
    return dflt;
  }
  bool boolOr(StringRef key, bool dflt) {
    if (auto v = obj.getBoolean(key))
      return *v;
    return dflt;
  }
  std::string stringOr(StringRef key, StringRef dflt) {
    if (auto v = obj.getString(key))
      return v->str();
    return dflt.str();
  }
  const llvm::json::Object *object(StringRef key) { return obj.getObject(key); }
  const std::string &file() const { return path; }

private:
  const llvm::json::Object &obj;
  std::string path;
  MLIRContext &ctx;
};

struct YaRN {
  double factor = 1.0, low = 0.0, high = 0.0, mscale = 1.0,
         softmaxMscale = 1.0;
};

double yarnGetMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

double yarnCorrectionDim(double rotations, int64_t dim, double base,
                         double maxPos) {
  return (dim * std::log(maxPos / (rotations * 2 * M_PI))) /
         (2 * std::log(base));
}

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
  Value linear(Value x, StringRef wname, int64_t out, bool quantizable = false) {
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
  Value mlp(Value x, StringRef prefix, int64_t ffn) {
    Value gt = linear(x, (prefix + ".gate_proj.weight").str(), ffn, true);
    Value up = linear(x, (prefix + ".up_proj.weight").str(), ffn, true);
    Value act = g::SwiGLUOp::create(b, at(prefix), gt.getType(), gt, up);
    return linear(act, (prefix + ".down_proj.weight").str(), shape(x).back(),
                  true);
  }
  /// kiln.state + kiln.cache_update: appends `values` ([B, seq, ...]) to
  /// the named cache ([B, capacity, ...]) at the entry's start position.
  Value cache(StringRef name, Value values, Location loc) {
    SmallVector<int64_t> shape(this->shape(values));
    shape[1] = opts.seq;
    auto type = tensor(shape, f32());
    Value state = g::StateOp::create(b, loc, type, b.getStringAttr(name));
    return g::CacheUpdateOp::create(b, loc, type, state, values, start);
  }
  Value rope(Value x, double theta, int64_t rd, bool interleaved,
             double scaling, const YaRN &y, Location loc) {
    return g::RopeOp::create(
        b, loc, x.getType(), x, start, b.getF32FloatAttr(theta),
        b.getI64IntegerAttr(rd), b.getBoolAttr(interleaved),
        b.getF32FloatAttr(scaling), b.getF32FloatAttr(y.factor),
        b.getF32FloatAttr(y.low), b.getF32FloatAttr(y.high),
        b.getF32FloatAttr(y.mscale));
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

struct Common {
  int64_t vocab, hidden, layers, heads;
  double eps;
  bool tieEmbeddings;
};

FailureOr<Common> readCommon(Config &c) {
  Common m;
  auto v = c.integer("vocab_size"), h = c.integer("hidden_size"),
       l = c.integer("num_hidden_layers"), n = c.integer("num_attention_heads");
  if (failed(v) || failed(h) || failed(l) || failed(n))
    return failure();
  m.vocab = *v;
  m.hidden = *h;
  m.layers = *l;
  m.heads = *n;
  m.eps = c.numberOr("rms_norm_eps", 1e-6);
  m.tieEmbeddings = c.boolOr("tie_word_embeddings", false);
  if (m.vocab <= 0 || m.hidden <= 0 || m.layers <= 0 || m.heads <= 0) {
    c.error("vocab_size/hidden_size/num_hidden_layers/num_attention_heads")
        << "must be positive";
    return failure();
  }
  return m;
}

/// GQA self-attention (Llama, Mixtral).
FailureOr<Value> gqaAttention(GraphBuilder &gb, Config &c, const Common &m,
                              Value x, const std::string &p) {
  int64_t kvHeads = c.integerOr("num_key_value_heads", m.heads);
  int64_t hd = c.integerOr("head_dim", m.hidden / m.heads);
  if (kvHeads <= 0 || m.heads % kvHeads) {
    c.error("num_key_value_heads") << "must divide num_attention_heads";
    return failure();
  }
  double theta = c.numberOr("rope_theta", 10000.0), scaling = 1.0;
  if (const llvm::json::Object *rs = c.object("rope_scaling")) {
    std::string type = rs->getString("rope_type")
                           .value_or(rs->getString("type").value_or("default"))
                           .str();
    if (type == "linear")
      scaling = rs->getNumber("factor").value_or(1.0);
    else if (type != "default") {
      c.error("rope_scaling") << "type '" << type
                              << "' is not supported (supported: linear)";
      return failure();
    }
  }
  int64_t B = gb.opts.batch, S = gb.seq;
  Location loc = gb.at(p + ".self_attn");
  Value q = gb.linear(x, p + ".self_attn.q_proj.weight", m.heads * hd, true);
  Value k = gb.linear(x, p + ".self_attn.k_proj.weight", kvHeads * hd, true);
  Value v = gb.linear(x, p + ".self_attn.v_proj.weight", kvHeads * hd, true);
  q = gb.rope(gb.reshape(q, {B, S, m.heads, hd}, loc), theta, hd, false,
              scaling, YaRN{}, loc);
  k = gb.rope(gb.reshape(k, {B, S, kvHeads, hd}, loc), theta, hd, false,
              scaling, YaRN{}, loc);
  v = gb.reshape(v, {B, S, kvHeads, hd}, loc);
  k = gb.cache(p + ".self_attn.k_cache", k, loc);
  v = gb.cache(p + ".self_attn.v_cache", v, loc);
  Value o = g::AttentionOp::create(
      gb.b, loc, gb.tensor({B, S, m.heads, hd}, gb.f32()), q, k, v, gb.start,
      gb.b.getF32FloatAttr(1.0 / std::sqrt(double(hd))),
      gb.b.getBoolAttr(true));
  o = gb.reshape(o, {B, S, m.heads * hd}, loc);
  return gb.linear(o, p + ".self_attn.o_proj.weight", m.hidden, true);
}

/// DeepSeek Multi-head Latent Attention.
FailureOr<Value> mlaAttention(GraphBuilder &gb, Config &c, const Common &m,
                              Value x, const std::string &p) {
  auto dn = c.integer("qk_nope_head_dim"), dr = c.integer("qk_rope_head_dim"),
       dv = c.integer("v_head_dim"), rank = c.integer("kv_lora_rank");
  if (failed(dn) || failed(dr) || failed(dv) || failed(rank))
    return failure();
  int64_t H = m.heads, B = gb.opts.batch, S = gb.seq;
  double theta = c.numberOr("rope_theta", 10000.0);
  YaRN y;
  double softmaxScale = 1.0 / std::sqrt(double(*dn + *dr));
  if (const llvm::json::Object *rs = c.object("rope_scaling")) {
    std::string type =
        rs->getString("type").value_or(rs->getString("rope_type").value_or(""))
            .str();
    if (type != "yarn") {
      c.error("rope_scaling") << "type '" << type
                              << "' is not supported for DeepSeek (yarn)";
      return failure();
    }
    y.factor = rs->getNumber("factor").value_or(1.0);
    double orig =
        rs->getNumber("original_max_position_embeddings").value_or(4096);
    double betaFast = rs->getNumber("beta_fast").value_or(32);
    double betaSlow = rs->getNumber("beta_slow").value_or(1);
    double mscale = rs->getNumber("mscale").value_or(1.0);
    double mscaleAll = rs->getNumber("mscale_all_dim").value_or(0.0);
    double low = std::floor(yarnCorrectionDim(betaFast, *dr, theta, orig));
    double high = std::ceil(yarnCorrectionDim(betaSlow, *dr, theta, orig));
    low = std::max(low, 0.0);
    high = std::min(high, double(*dr - 1));
    if (low == high)
      high += 0.001;
    y.low = low;
    y.high = high;
    y.mscale = yarnGetMscale(y.factor, mscale) /
               yarnGetMscale(y.factor, mscaleAll);
    if (mscaleAll != 0.0) {
      double ms = yarnGetMscale(y.factor, mscaleAll);
      softmaxScale *= ms * ms;
    }
  }
  Location loc = gb.at(p + ".self_attn");
  Value q;
  if (c.has("q_lora_rank")) {
    auto qr = c.integer("q_lora_rank");
    if (failed(qr))
      return failure();
    Value qa = gb.linear(x, p + ".self_attn.q_a_proj.weight", *qr, true);
    qa = gb.rmsNorm(qa, p + ".self_attn.q_a_layernorm.weight", m.eps);
    q = gb.linear(qa, p + ".self_attn.q_b_proj.weight", H * (*dn + *dr), true);
  } else {
    q = gb.linear(x, p + ".self_attn.q_proj.weight", H * (*dn + *dr), true);
  }
  q = gb.reshape(q, {B, S, H, *dn + *dr}, loc);
  Value qNope = gb.slice(q, 0, *dn, loc);
  Value qPe = gb.rope(gb.slice(q, *dn, *dr, loc), theta, *dr, true, 1.0, y,
                      loc);
  Value kv = gb.linear(x, p + ".self_attn.kv_a_proj_with_mqa.weight",
                       *rank + *dr, true);
  Value latent = gb.rmsNorm(gb.slice(kv, 0, *rank, loc),
                            p + ".self_attn.kv_a_layernorm.weight", m.eps);
  Value kPe = gb.reshape(gb.slice(kv, *rank, *dr, loc), {B, S, 1, *dr}, loc);
  kPe = gb.reshape(gb.rope(kPe, theta, *dr, true, 1.0, y, loc), {B, S, *dr},
                   loc);
  std::string kvbName = p + ".self_attn.kv_b_proj.weight";
  Value kvB, kvBScale;
  if (gb.quant) {
    // Dequantized as the absorbed kernel reads it (no activation quant).
    kvB = gb.weight(kvbName, {H * (*dn + *dv), *rank},
                    gb.quant.getElementType());
    kvBScale = gb.weight(kvbName + "_scale_inv",
                         {GraphBuilder::ceilDiv(H * (*dn + *dv), 128),
                          GraphBuilder::ceilDiv(*rank, 128)},
                         gb.f32());
  } else {
    kvB = gb.weight(kvbName, {H * (*dn + *dv), *rank});
  }
  // The cache holds the normalized latent and the rotated rope key:
  // kv_lora_rank + qk_rope_head_dim values per token.
  latent = gb.cache(p + ".self_attn.kv_latent_cache", latent, loc);
  kPe = gb.cache(p + ".self_attn.k_rope_cache", kPe, loc);
  Value o = g::MLAAttentionOp::create(
      gb.b, loc, gb.tensor({B, S, H, *dv}, gb.f32()), qNope, qPe, latent, kPe,
      kvB, kvBScale, gb.start, gb.b.getF32FloatAttr(softmaxScale),
      gb.b.getBoolAttr(true));
  o = gb.reshape(o, {B, S, H * *dv}, loc);
  return gb.linear(o, p + ".self_attn.o_proj.weight", m.hidden, true);
}

struct MoEConfig {
  int64_t experts, topK, ffn, groups = 1, topkGroup = 1;
  std::string scoring = "softmax", groupScore = "top2_sum";
  bool norm = true;
  double scaling = 1.0;
  bool bias = false;
};

Value moe(GraphBuilder &gb, Value x, const std::string &p,
          const std::string &routerName, const MoEConfig &mc,
          const std::function<std::string(int64_t, StringRef)> &expertName) {
  int64_t D = gb.shape(x).back();
  Location loc = gb.at(p);
  Value router = gb.weight(routerName, {mc.experts, D});
  Value bias;
  if (mc.bias)
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
LogicalResult buildBody(GraphBuilder &gb, Config &c, const Common &m,
                        const std::string &type, bool deepseek, Value tokens) {
  OpBuilder &b = gb.b;
  int64_t B = gb.opts.batch, S = gb.seq;

  Value table = gb.weight("model.embed_tokens.weight", {m.vocab, m.hidden});
  Value h = g::EmbeddingOp::create(b, gb.at("model.embed_tokens"),
                                   gb.tensor({B, S, m.hidden}, gb.f32()),
                                   table, tokens);
  for (int64_t i = 0; i < m.layers; ++i) {
    std::string p = "model.layers." + std::to_string(i);
    Value n = gb.rmsNorm(h, p + ".input_layernorm.weight", m.eps);
    FailureOr<Value> attn = deepseek ? mlaAttention(gb, c, m, n, p)
                                     : gqaAttention(gb, c, m, n, p);
    if (failed(attn))
      return failure();
    h = gb.add(h, *attn, gb.at(p));
    n = gb.rmsNorm(h, p + ".post_attention_layernorm.weight", m.eps);
    Value y;
    if (type == "llama") {
      auto ffn = c.integer("intermediate_size");
      if (failed(ffn))
        return failure();
      y = gb.mlp(n, p + ".mlp", *ffn);
    } else if (type == "mixtral") {
      MoEConfig mc;
      auto e = c.integer("num_local_experts"),
           k = c.integer("num_experts_per_tok"),
           f = c.integer("intermediate_size");
      if (failed(e) || failed(k) || failed(f))
        return failure();
      mc.experts = *e;
      mc.topK = *k;
      mc.ffn = *f;
      std::string mp = p + ".block_sparse_moe";
      y = moe(gb, n, mp, mp + ".gate.weight", mc,
              [&](int64_t j, StringRef which) {
                const char *w = which == "gate" ? "w1"
                                : which == "up" ? "w3"
                                                : "w2";
                return mp + ".experts." + std::to_string(j) + "." + w +
                       ".weight";
              });
    } else {
      int64_t firstDense = c.integerOr("first_k_dense_replace", 0);
      int64_t freq = c.integerOr("moe_layer_freq", 1);
      bool isMoE = c.has("n_routed_experts") && i >= firstDense &&
                   freq > 0 && i % freq == 0;
      if (!isMoE) {
        auto ffn = c.integer("intermediate_size");
        if (failed(ffn))
          return failure();
        y = gb.mlp(n, p + ".mlp", *ffn);
      } else {
        MoEConfig mc;
        auto e = c.integer("n_routed_experts"),
             k = c.integer("num_experts_per_tok"),
             f = c.integer("moe_intermediate_size");
        if (failed(e) || failed(k) || failed(f))
          return failure();
        mc.experts = *e;
        mc.topK = *k;
        mc.ffn = *f;
        mc.scoring = c.stringOr("scoring_func", "softmax");
        if (mc.scoring != "softmax" && mc.scoring != "sigmoid") {
          c.error("scoring_func") << "'" << mc.scoring << "' is not supported";
          return failure();
        }
        std::string method = c.stringOr(
            "topk_method", type == "deepseek_v3" ? "noaux_tc" : "greedy");
        bool norm = c.boolOr("norm_topk_prob", false) && mc.topK > 1;
        double rsf = c.numberOr("routed_scaling_factor", 1.0);
        if (method == "noaux_tc") {
          mc.bias = true;
          mc.groups = c.integerOr("n_group", 1);
          mc.topkGroup = c.integerOr("topk_group", 1);
          mc.groupScore = "top2_sum";
          mc.norm = norm;
          mc.scaling = rsf; // V3: normalize, then scale
        } else if (method == "greedy" || method == "group_limited_greedy") {
          if (method == "group_limited_greedy") {
            mc.groups = c.integerOr("n_group", 1);
            mc.topkGroup = c.integerOr("topk_group", 1);
            mc.groupScore = "max";
          }
          // V2 scales only when it does not normalize.
          mc.norm = norm;
          mc.scaling = norm ? 1.0 : rsf;
        } else {
          c.error("topk_method") << "'" << method << "' is not supported";
          return failure();
        }
        std::string mp = p + ".mlp";
        // The shared expert first: the routed experts' down projection then
        // folds it and the residual into its epilogue (kiln-fuse-residual).
        int64_t shared = c.integerOr("n_shared_experts", 0);
        Value sharedOut;
        if (shared > 0)
          sharedOut = gb.mlp(n, mp + ".shared_experts", *f * shared);
        y = moe(gb, n, mp, mp + ".gate.weight", mc,
                [&](int64_t j, StringRef which) {
                  return mp + ".experts." + std::to_string(j) + "." +
                         which.str() + "_proj.weight";
                });
        if (sharedOut)
          y = gb.add(y, sharedOut, gb.at(mp));
      }
    }
    h = gb.add(h, y, gb.at(p));
  }
  h = gb.rmsNorm(h, "model.norm.weight", m.eps);
  Value logits =
      gb.linear(h, m.tieEmbeddings ? "model.embed_tokens.weight"
                                   : "lm_head.weight",
                m.vocab);
  func::ReturnOp::create(b, gb.at("lm_head"), logits);
  return success();
}

} // namespace

FailureOr<OwningOpRef<ModuleOp>>
importHuggingFace(MLIRContext &ctx, const std::string &configPath,
                  const ImportOptions &opts,
                  const std::function<std::string(StringRef)> &dtypeOf) {
  ctx.loadDialect<g::KilnDialect, func::FuncDialect>();
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
  Config c(*root, configPath, ctx);
  std::string type = c.stringOr("model_type", "");
  if (type != "deepseek_v3" && type != "deepseek_v2" && type != "llama" &&
      type != "mixtral") {
    c.error("model_type") << (type.empty() ? "is missing"
                                           : "'" + type + "' is not supported")
                          << " (supported: deepseek_v3, deepseek_v2, llama, "
                             "mixtral)";
    return failure();
  }
  if (opts.batch <= 0 || opts.seq <= 0) {
    emitError(fileLoc) << "--max-batch and --max-seq must be positive";
    return failure();
  }
  auto common = readCommon(c);
  if (failed(common))
    return failure();
  const Common &m = *common;
  if (c.has("max_position_embeddings") &&
      opts.seq > c.integerOr("max_position_embeddings", opts.seq)) {
    emitError(fileLoc) << "--max-seq " << opts.seq
                       << " exceeds max_position_embeddings "
                       << c.integerOr("max_position_embeddings", 0);
    return failure();
  }
  OpBuilder b(&ctx);
  std::string torchDType = c.stringOr("torch_dtype", "bfloat16");
  Type defaultWT = torchDType == "float32"   ? Type(b.getF32Type())
                   : torchDType == "float16" ? Type(b.getF16Type())
                                             : Type(b.getBF16Type());
  OwningOpRef<ModuleOp> module = ModuleOp::create(fileLoc);
  GraphBuilder gb(ctx, b, opts, dtypeOf, defaultWT);
  if (const llvm::json::Object *qc = c.object("quantization_config")) {
    // A published FP8 checkpoint: exactly DeepSeek-V3's scheme.
    auto field = [&](StringRef k) {
      return qc->getString(k).value_or("").str();
    };
    const llvm::json::Array *blk = qc->getArray("weight_block_size");
    if (field("quant_method") != "fp8") {
      c.error("quantization_config.quant_method")
          << "'" << field("quant_method") << "' is not supported (fp8)";
      return failure();
    }
    if (field("fmt") != "e4m3") {
      c.error("quantization_config.fmt")
          << "'" << field("fmt") << "' is not supported (e4m3)";
      return failure();
    }
    if (!blk || blk->size() != 2 || (*blk)[0].getAsInteger() != 128 ||
        (*blk)[1].getAsInteger() != 128) {
      c.error("quantization_config.weight_block_size")
          << "must be [128, 128]";
      return failure();
    }
    if (field("activation_scheme") != "dynamic") {
      c.error("quantization_config.activation_scheme")
          << "'" << field("activation_scheme")
          << "' is not supported (dynamic)";
      return failure();
    }
  }
  if (c.object("quantization_config") || opts.quantizeFP8)
    gb.quant = g::BlockQuantAttr::get(&ctx, b.getType<Float8E4M3FNType>(),
                                      {128, 128}, 128);
  bool deepseek = type == "deepseek_v3" || type == "deepseek_v2";
  // forward (prefill: tokens [B, S], fills the KV cache) and decode (one
  // token per batch row at `position`, reading and extending the cache).
  for (bool decode : {false, true}) {
    int64_t B = opts.batch, S = decode ? 1 : opts.seq;
    gb.seq = S;
    b.setInsertionPointToEnd(module->getBody());
    auto tokensTy = gb.tensor({B, S}, b.getI32Type());
    auto logitsTy = gb.tensor({B, S, m.vocab}, gb.f32());
    SmallVector<Type> inputs{tokensTy};
    if (decode)
      inputs.push_back(gb.tensor({B}, b.getI32Type()));
    auto fn = func::FuncOp::create(b, gb.at("model"),
                                   decode ? "decode" : "forward",
                                   b.getFunctionType(inputs, {logitsTy}));
    fn.setArgAttr(0, "kiln.name", b.getStringAttr("tokens"));
    if (decode)
      fn.setArgAttr(1, "kiln.name", b.getStringAttr("position"));
    fn.setResultAttr(0, "kiln.name", b.getStringAttr("logits"));
    // Batch rows are independent and attention is causal: callers may give
    // fewer rows (symbol 0) and, for prefill, fewer positions (symbol 1);
    // the runtime pads and slices (TensorSpec.dim_symbols).
    int64_t seqSym = decode ? -1 : 1;
    fn.setArgAttr(0, "kiln.dims", b.getDenseI64ArrayAttr({0, seqSym}));
    if (decode)
      fn.setArgAttr(1, "kiln.dims", b.getDenseI64ArrayAttr({0}));
    fn.setResultAttr(0, "kiln.dims", b.getDenseI64ArrayAttr({0, seqSym, -1}));
    Block *entry = fn.addEntryBlock();
    b.setInsertionPointToStart(entry);
    gb.start = decode ? entry->getArgument(1) : Value();
    if (failed(buildBody(gb, c, m, type, deepseek, entry->getArgument(0))))
      return failure();
  }
  return module;
}

} // namespace kiln::models
