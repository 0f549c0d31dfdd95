//===- HFConfig.cpp - config.json -> validated model description ----------===//
//
// Three phases, each complete before the next starts:
//   1. read every field the family's transformers class defines (its default
//      when absent), each type- and range-checked on its own;
//   2. check what the architecture needs across fields (divisibilities,
//      orderings) and resolve the rotary embedding;
//   3. size the model with overflow-checked arithmetic: every weight,
//      activation and cache shape, and the parameter total, against
//      ModelLimits.
// Nothing of the model's size is allocated before phase 3 passed.
//
//===----------------------------------------------------------------------===//
#include "HFConfig.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Location.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/CheckedArithmetic.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstdio>
#include <optional>

using namespace mlir;
namespace json = llvm::json;
using L = kiln::models::ModelLimits;

namespace kiln::models {

namespace {

/// A double as config.json would write it (500000, 0.5, 1e-06).
std::string num(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.15g", d);
  return buf;
}

std::string show(const json::Value &v) {
  std::string s = llvm::formatv("{0}", v).str();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

/// One JSON object of the config (the root, or the rope dict) with typed,
/// strictly checked access. An error is emitted once per bad field and
/// remembered; callers check `failed()` between phases.
class Reader {
public:
  Reader(MLIRContext &ctx, const std::string &path, std::string className)
      : loc(FileLineColLoc::get(&ctx, path, 0, 0)),
        className(std::move(className)) {}

  InFlightDiagnostic error(const Twine &field) {
    bad = true;
    return emitError(loc) << "config field '" << field << "' ";
  }
  InFlightDiagnostic errorAt(const Twine &message) {
    bad = true;
    return emitError(loc) << message;
  }
  bool failed() const { return bad; }
  const std::string &cls() const { return className; }

  /// The value of `key` in `obj`, null when absent or JSON null.
  static const json::Value *get(const json::Object *obj, StringRef key) {
    const json::Value *v = obj ? obj->get(key) : nullptr;
    return v && v->kind() != json::Value::Null ? v : nullptr;
  }
  static bool isExplicitNull(const json::Object *obj, StringRef key) {
    const json::Value *v = obj ? obj->get(key) : nullptr;
    return v && v->kind() == json::Value::Null;
  }

  /// `key` of `obj` converted by `as` (the json::Value accessor);
  /// std::nullopt when absent or null, an error naming `name` when `as`
  /// rejects it.
  template <typename T, typename As>
  std::optional<T> opt(const json::Object *obj, StringRef key, StringRef name,
                       As as, StringRef expected) {
    const json::Value *v = get(obj, key);
    if (!v)
      return std::nullopt;
    if (std::optional<T> x = as(*v))
      return x;
    error(name) << "must be " << expected << ", got " << show(*v);
    return std::nullopt;
  }
  std::optional<int64_t> optInt(const json::Object *obj, StringRef key,
                                StringRef name) {
    return opt<int64_t>(obj, key, name,
                        [](const json::Value &v) { return v.getAsInteger(); },
                        "an integer");
  }
  std::optional<double> optNumber(const json::Object *obj, StringRef key,
                                  StringRef name) {
    return opt<double>(
        obj, key, name,
        [](const json::Value &v) -> std::optional<double> {
          std::optional<double> d = v.getAsNumber();
          return d && std::isfinite(*d) ? d : std::nullopt;
        },
        "a finite number");
  }
  std::optional<bool> optBool(const json::Object *obj, StringRef key,
                              StringRef name) {
    return opt<bool>(obj, key, name,
                     [](const json::Value &v) { return v.getAsBoolean(); },
                     "true or false");
  }
  std::optional<std::string> optString(const json::Object *obj, StringRef key,
                                       StringRef name) {
    return opt<std::string>(
        obj, key, name,
        [](const json::Value &v) -> std::optional<std::string> {
          if (auto s = v.getAsString())
            return s->str();
          return std::nullopt;
        },
        "a string");
  }

  // Root fields.
  /// A size in [lo, hi]; `dflt` when absent (an error when the class has
  /// no default, std::nullopt).
  int64_t size(StringRef key, std::optional<int64_t> dflt, int64_t lo = 1,
               int64_t hi = L::kMaxDim) {
    std::optional<int64_t> v = optInt(root, key, key);
    if (!v && !get(root, key)) {
      if (!dflt) {
        error(key) << "is missing (" << className << " has no default)";
        return lo;
      }
      v = dflt;
    }
    if (!v)
      return lo;
    return inRange(key, *v, lo, hi);
  }
  int64_t inRange(StringRef name, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo) {
      error(name) << "must be " << (lo == 1 ? "positive" : ">= " + std::to_string(lo))
                  << ", got " << v;
      return lo;
    }
    if (v > hi) {
      error(name) << "= " << v << " exceeds Kiln's limit of " << hi
                  << " (docs/config.md, Limits)";
      return lo;
    }
    return v;
  }
  double number(StringRef key, double dflt) {
    return optNumber(root, key, key).value_or(dflt);
  }
  bool boolean(StringRef key, bool dflt) {
    return optBool(root, key, key).value_or(dflt);
  }
  std::string string(StringRef key, StringRef dflt) {
    return optString(root, key, key).value_or(dflt.str());
  }
  const json::Object *object(StringRef key) {
    const json::Value *v = get(root, key);
    if (!v)
      return nullptr;
    if (const json::Object *o = v->getAsObject())
      return o;
    error(key) << "must be an object or null, got " << show(*v);
    return nullptr;
  }

  const json::Object *root = nullptr;

private:
  Location loc;
  std::string className;
  bool bad = false;
};

double yarnGetMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

double yarnCorrectionDim(double rotations, int64_t dim, double base,
                         double maxPos) {
  return (dim * std::log(maxPos / (rotations * 2 * M_PI))) /
         (2 * std::log(base));
}

/// The rotary embedding, as transformers 5 resolves it
/// (RotaryEmbeddingConfigMixin.convert_rope_params_to_dict /
/// standardize_rope_params and the ROPE_INIT_FUNCTIONS).
void readRope(Reader &r, ModelSpec &m, double defaultTheta) {
  const json::Object *legacy = r.object("rope_scaling");
  const json::Object *current = r.object("rope_parameters");
  // transformers 5 takes the legacy dict when both are set; a config that
  // says two different things is an error here rather than a guess.
  const json::Object *dict = legacy ? legacy : current;
  std::string dictName = legacy ? "rope_scaling" : "rope_parameters";
  if (legacy && current) {
    for (const auto &kv : *current) {
      const json::Value *other = legacy->get(kv.first);
      if (other && *other != kv.second) {
        r.error("rope_scaling") << "and 'rope_parameters' disagree on '"
                                << kv.first.str() << "' (" << show(*other)
                                << " vs " << show(kv.second) << ")";
        return;
      }
    }
  }
  auto field = [&](StringRef key) { return dictName + "." + key.str(); };
  std::string type =
      r.optString(dict, "rope_type", field("rope_type"))
          .value_or(r.optString(dict, "type", field("type")).value_or("default"));
  // rope_theta: the dict's, else the top-level field, else the class's.
  std::optional<double> dictTheta =
      r.optNumber(dict, "rope_theta", field("rope_theta"));
  std::optional<double> topTheta = r.optNumber(r.root, "rope_theta", "rope_theta");
  if (dictTheta && topTheta && *dictTheta != *topTheta) {
    r.error("rope_theta") << "= " << num(*topTheta) << " disagrees with '"
                          << field("rope_theta") << "' = " << num(*dictTheta);
    return;
  }
  RopeSpec &rope = m.rope;
  rope.type = type;
  rope.theta = dictTheta.value_or(topTheta.value_or(defaultTheta));
  if (!(rope.theta > 1.0)) {
    r.error(dictTheta ? field("rope_theta") : std::string("rope_theta"))
        << "must be > 1, got " << num(rope.theta);
    return;
  }
  for (const json::Object *o : {dict, r.root}) {
    std::string name =
        o == dict ? field("partial_rotary_factor") : "partial_rotary_factor";
    if (auto p = r.optNumber(o, "partial_rotary_factor", name); p && *p != 1.0)
      r.error(name) << "= " << num(*p)
                    << " is not implemented (Kiln rotates the whole head)";
  }
  auto factor = [&](bool required) -> std::optional<double> {
    std::optional<double> f = r.optNumber(dict, "factor", field("factor"));
    if (!f && required && !r.failed())
      r.error(field("factor")) << "is missing (rope_type '" << type
                               << "' needs it)";
    if (f && *f < 1.0) {
      r.error(field("factor")) << "must be >= 1, got " << num(*f);
      return std::nullopt;
    }
    return f;
  };
  if (type == "default") {
  } else if (type == "linear") {
    rope.linearFactor = factor(true).value_or(1.0);
  } else if (type == "dynamic") {
    // Dynamic NTK equals the default rope up to max_position_embeddings,
    // and --max-seq never exceeds it (checked in readModelSpec).
    factor(true);
  } else if (type == "yarn") {
    std::optional<int64_t> orig = r.optInt(
        dict, "original_max_position_embeddings",
        field("original_max_position_embeddings"));
    // transformers gives a top-level original_max_position_embeddings
    // priority (Phi-3 style), then the dict's, then max_position_embeddings.
    if (auto top = r.optInt(r.root, "original_max_position_embeddings",
                            "original_max_position_embeddings"))
      orig = top;
    int64_t origMax = r.inRange(field("original_max_position_embeddings"),
                                orig.value_or(m.maxPositions), 1,
                                int64_t(1) << 40);
    std::optional<double> f = factor(false);
    double fac = f ? *f : double(m.maxPositions) / double(origMax);
    if (fac < 1.0) {
      r.error("max_position_embeddings")
          << "/ " << field("original_max_position_embeddings")
          << " gives the yarn factor " << num(fac) << ", which must be >= 1";
      return;
    }
    std::optional<double> attn =
        r.optNumber(dict, "attention_factor", field("attention_factor"));
    double mscale = r.optNumber(dict, "mscale", field("mscale")).value_or(0.0);
    double mscaleAll =
        r.optNumber(dict, "mscale_all_dim", field("mscale_all_dim"))
            .value_or(0.0);
    double betaFast =
        r.optNumber(dict, "beta_fast", field("beta_fast")).value_or(0.0);
    double betaSlow =
        r.optNumber(dict, "beta_slow", field("beta_slow")).value_or(0.0);
    if (betaFast == 0.0)
      betaFast = 32; // transformers: `or 32`
    if (betaSlow == 0.0)
      betaSlow = 1;
    if (betaFast <= 0 || betaSlow <= 0) {
      r.error(field("beta_fast")) << "and beta_slow must be positive, got "
                                  << num(betaFast) << " and " << num(betaSlow);
      return;
    }
    bool truncate = r.optBool(dict, "truncate", field("truncate")).value_or(true);
    if (attn && *attn < 0) {
      r.error(field("attention_factor")) << "must be >= 0, got " << num(*attn);
      return;
    }
    rope.yarnFactor = fac;
    rope.attentionFactor =
        attn ? *attn
        : (mscale != 0.0 && mscaleAll != 0.0)
            ? yarnGetMscale(fac, mscale) / yarnGetMscale(fac, mscaleAll)
            : yarnGetMscale(fac, 1.0);
    int64_t d = rope.dim;
    double low = yarnCorrectionDim(betaFast, d, rope.theta, double(origMax));
    double high = yarnCorrectionDim(betaSlow, d, rope.theta, double(origMax));
    if (truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, double(d - 1));
    if (low == high)
      high += 0.001; // transformers' linear_ramp_factor
    rope.yarnLow = low;
    rope.yarnHigh = high;
  } else if (type == "llama3" || type == "longrope") {
    r.error(field("rope_type")) << "'" << type
                                << "' is not implemented (implemented: "
                                   "default, linear, dynamic, yarn)";
    return;
  } else {
    r.error(field("rope_type")) << "'" << type
                                << "' is not a known rope type (default, "
                                   "linear, dynamic, yarn, llama3, longrope)";
    return;
  }
  // DeepSeek's attention (yarn_apply_mscale): a scaled rope with
  // mscale_all_dim also scales the softmax.
  if (m.isDeepseek() && type != "default") {
    double mad = r.optNumber(dict, "mscale_all_dim", field("mscale_all_dim"))
                     .value_or(0.0);
    double fac = type == "yarn" ? rope.yarnFactor
                                : r.optNumber(dict, "factor", field("factor"))
                                      .value_or(1.0);
    if (mad != 0.0) {
      double ms = yarnGetMscale(fac, mad);
      rope.softmaxMscale = ms * ms;
    }
  }
}

/// Activation of the gated MLPs (ACT2FN[hidden_act]).
void readActivation(Reader &r) {
  std::string act = r.string("hidden_act", "silu");
  if (act == "silu" || act == "swish")
    return;
  static const llvm::StringSet<> known = {
      "gelu",        "gelu_10",         "gelu_fast",        "gelu_new",
      "gelu_python", "gelu_pytorch_tanh", "gelu_python_tanh", "gelu_accurate",
      "laplace",     "leaky_relu",      "linear",           "mish",
      "quick_gelu",  "relu",            "relu2",            "relu6",
      "sigmoid",     "tanh",            "prelu",            "xielu"};
  r.error("hidden_act") << "'" << act << "' is "
                        << (known.contains(act) ? "not implemented"
                                                : "not a known activation")
                        << " (implemented: silu, swish)";
}

/// Overflow-checked shape arithmetic: any overflow or a tensor past the
/// limit marks the model too large.
class Sizer {
public:
  explicit Sizer(Reader &r) : r(r) {}
  int64_t mul(std::initializer_list<int64_t> xs) {
    int64_t acc = 1;
    for (int64_t x : xs) {
      std::optional<int64_t> p = llvm::checkedMul(acc, x);
      if (!p) {
        overflow = true;
        return L::kMaxTensorElements + 1;
      }
      acc = *p;
    }
    return acc;
  }
  /// A tensor's element count, checked against the per-tensor limit.
  int64_t tensor(StringRef what, std::initializer_list<int64_t> dims) {
    int64_t n = mul(dims);
    if (n > L::kMaxTensorElements && !r.failed())
      r.errorAt("model too large: ")
          << what << " would have "
          << (overflow ? std::string("more than 2^63")
                       : std::to_string(n))
          << " elements (limit 2^40, docs/config.md)";
    return n;
  }
  /// A weight: `count` tensors of `dims`, added to the parameter total.
  void weight(StringRef what, int64_t count,
              std::initializer_list<int64_t> dims) {
    int64_t n = tensor(what, dims);
    std::optional<int64_t> all = llvm::checkedMul(n, count);
    std::optional<int64_t> sum =
        all ? llvm::checkedAdd(params, *all) : std::nullopt;
    if (!sum)
      overflow = true;
    params = sum ? *sum : L::kMaxParameters + 1;
  }
  int64_t params = 0;
  bool overflow = false;

private:
  Reader &r;
};

/// Phase 3: every shape the graph will have.
void sizeModel(Reader &r, const ModelSpec &m, const ImportOptions &o) {
  Sizer s(r);
  int64_t D = m.hidden, V = m.vocab, Lyr = m.layers;
  int64_t moeLayers = 0;
  for (int64_t i = 0; i < Lyr; ++i)
    moeLayers += m.isMoELayer(i);
  int64_t dense = Lyr - moeLayers;
  if (moeLayers && s.mul({moeLayers, m.moe.experts}) > L::kMaxExpertInstances)
    r.errorAt("model too large: ")
        << moeLayers << " MoE layers x " << m.moe.experts
        << " routed experts exceed Kiln's limit of "
        << L::kMaxExpertInstances << " expert instances (docs/config.md)";
  if (r.failed())
    return;
  s.weight("model.embed_tokens.weight", m.tieEmbeddings ? 1 : 2, {V, D});
  s.weight("norms", 2 * Lyr + 1, {D});
  int64_t attnOut = 0;
  if (m.isDeepseek()) {
    int64_t H = m.heads, qk = m.qkNope + m.qkRope;
    if (m.qLoraRank) {
      s.weight("q_a_proj", Lyr, {m.qLoraRank, D});
      s.weight("q_b_proj", Lyr, {H, qk, m.qLoraRank});
    } else {
      s.weight("q_proj", Lyr, {H, qk, D});
    }
    s.weight("kv_a_proj_with_mqa", Lyr, {m.kvLoraRank + m.qkRope, D});
    s.weight("kv_b_proj", Lyr, {H, m.qkNope + m.vHead, m.kvLoraRank});
    s.weight("o_proj", Lyr, {D, H, m.vHead});
    attnOut = s.mul({H, std::max(qk, m.vHead)});
    s.tensor("the latent KV cache",
             {Lyr, o.batch, o.seq, m.kvLoraRank + m.qkRope});
    // The absorbed and naive MLA forms' intermediates.
    s.tensor("the MLA keys", {o.batch, o.seq, H, m.qkNope + m.vHead});
    s.tensor("the absorbed query", {o.batch, o.seq, H, m.kvLoraRank});
  } else {
    s.weight("q_proj/o_proj", 2 * Lyr, {m.heads, m.headDim, D});
    s.weight("k_proj/v_proj", 2 * Lyr, {m.kvHeads, m.headDim, D});
    attnOut = s.mul({m.heads, m.headDim});
    s.tensor("the KV cache", {Lyr, 2, o.batch, o.seq, m.kvHeads, m.headDim});
  }
  s.weight("mlp", dense, {3, m.intermediate, D});
  if (moeLayers) {
    const MoESpec &e = m.moe;
    s.weight("the router", moeLayers, {e.experts, D});
    s.weight("the experts", moeLayers, {3, e.experts, e.ffn, D});
    if (e.sharedExperts)
      s.weight("the shared experts", moeLayers, {3, e.sharedExperts, e.ffn, D});
    // Token slots of the grouped experts (shared experts folded in).
    s.tensor("the expert activations",
             {o.batch, o.seq, e.topK + e.sharedExperts + 1,
              std::max(e.ffn, D)});
    s.tensor("the router scores", {o.batch, o.seq, e.experts});
  }
  for (int64_t width : {D, V, attnOut, m.intermediate})
    s.tensor("an activation", {o.batch, o.seq, std::max<int64_t>(width, 1)});
  if (r.failed())
    return;
  if (s.params > L::kMaxParameters)
    r.errorAt("model too large: ")
        << (s.overflow ? std::string("more than 2^63")
                       : std::to_string(s.params))
        << " parameters exceed Kiln's limit of 2^41 ~ 2.2e12 "
           "(docs/config.md)";
}

} // namespace

FailureOr<ModelSpec> readModelSpec(MLIRContext &ctx, const json::Object &root,
                                   const std::string &path,
                                   const ImportOptions &o) {
  ModelSpec m;
  m.modelType = root.getString("model_type").value_or("").str();
  struct Defaults {
    Family family;
    const char *cls;
    int64_t vocab, hidden, inter, layers, heads;
    std::optional<int64_t> kvHeads; ///< nullopt: num_attention_heads
    int64_t maxPos;
    double eps, theta;
  };
  static const std::pair<const char *, Defaults> table[] = {
      {"llama",
       {Family::Llama, "LlamaConfig", 32000, 4096, 11008, 32, 32,
        std::nullopt, 2048, 1e-6, 10000.0}},
      {"mixtral",
       {Family::Mixtral, "MixtralConfig", 32000, 4096, 14336, 32, 32, 8,
        4096 * 32, 1e-5, 1e6}},
      {"deepseek_v2",
       {Family::DeepseekV2, "DeepseekV2Config", 102400, 4096, 11008, 32, 32,
        std::nullopt, 2048, 1e-6, 10000.0}},
      {"deepseek_v3",
       {Family::DeepseekV3, "DeepseekV3Config", 129280, 7168, 18432, 61, 128,
        128, 4096, 1e-6, 10000.0}},
  };
  const Defaults *d = nullptr;
  for (const auto &[name, defaults] : table)
    if (m.modelType == name)
      d = &defaults;
  Location loc = FileLineColLoc::get(&ctx, path, 0, 0);
  if (!d) {
    emitError(loc) << "config field 'model_type' "
                   << (m.modelType.empty()
                           ? std::string("is missing")
                           : "'" + m.modelType + "' is not supported")
                   << " (supported: deepseek_v3, deepseek_v2, llama, "
                      "mixtral)";
    return failure();
  }
  if (o.batch <= 0 || o.seq <= 0 || o.batch > L::kMaxDim ||
      o.seq > L::kMaxDim) {
    emitError(loc) << "--max-batch and --max-seq must be in [1, "
                   << L::kMaxDim << "], got " << o.batch << " and " << o.seq;
    return failure();
  }
  Reader r(ctx, path, d->cls);
  r.root = &root;
  m.family = d->family;
  bool deepseek = m.isDeepseek();

  // Phase 1: every field, on its own.
  m.vocab = r.size("vocab_size", d->vocab);
  m.hidden = r.size("hidden_size", d->hidden);
  m.layers = r.size("num_hidden_layers", d->layers, 1, L::kMaxLayers);
  m.heads = r.size("num_attention_heads", d->heads);
  m.intermediate = r.size("intermediate_size", d->inter);
  m.maxPositions = r.size("max_position_embeddings", d->maxPos, 1,
                          int64_t(1) << 40);
  m.eps = r.number("rms_norm_eps", d->eps);
  if (!(m.eps > 0.0))
    r.error("rms_norm_eps") << "must be positive, got " << num(m.eps);
  m.tieEmbeddings = r.boolean("tie_word_embeddings", false);
  // transformers 5 writes `dtype`, 4.x `torch_dtype`.
  m.dtype = r.optString(&root, "dtype", "dtype")
                .value_or(r.string("torch_dtype", "bfloat16"));
  readActivation(r);
  if (m.family != Family::Mixtral)
    m.attentionBias = r.boolean("attention_bias", false);
  if (m.family == Family::Llama || m.family == Family::DeepseekV2)
    m.mlpBias = r.boolean("mlp_bias", false);
  std::optional<int64_t> kvHeads = r.optInt(&root, "num_key_value_heads",
                                            "num_key_value_heads");
  if (!deepseek) {
    m.kvHeads = r.inRange("num_key_value_heads",
                          kvHeads.value_or(d->kvHeads.value_or(m.heads)), 1,
                          L::kMaxDim);
    std::optional<int64_t> hd = r.optInt(&root, "head_dim", "head_dim");
    if (hd) {
      m.headDim = r.inRange("head_dim", *hd, 1, L::kMaxDim);
    } else if (!r.failed()) {
      // LlamaConfig.validate_architecture; Mixtral floors.
      if (m.family == Family::Llama && m.hidden % m.heads)
        r.error("hidden_size") << "= " << m.hidden
                               << " is not a multiple of num_attention_heads = "
                               << m.heads << " (and head_dim is not set)";
      m.headDim = m.hidden / m.heads;
      if (m.headDim == 0)
        r.error("head_dim") << "defaults to hidden_size / num_attention_heads "
                            << "= 0";
    }
  } else {
    m.kvLoraRank = r.size("kv_lora_rank", 512);
    m.qkNope = r.size("qk_nope_head_dim", 128);
    m.qkRope = r.size("qk_rope_head_dim", 64);
    m.vHead = r.size("v_head_dim", 128);
    if (Reader::isExplicitNull(&root, "q_lora_rank"))
      m.qLoraRank = 0;
    else
      m.qLoraRank = r.size("q_lora_rank", 1536);
  }
  if (m.family == Family::Mixtral) {
    if (std::optional<int64_t> w =
            r.optInt(&root, "sliding_window", "sliding_window")) {
      if (*w < 1)
        r.error("sliding_window") << "must be positive or null, got " << *w;
      else if (*w < o.seq)
        r.error("sliding_window")
            << "= " << *w << " is not implemented: it is smaller than the "
            << "compiled context (--max-seq " << o.seq
            << "), so it would change attention; compile with --max-seq <= "
            << *w << " (a window >= the context has no effect)";
    }
    m.hasMoE = true;
    m.moe.experts = r.size("num_local_experts", 8, 1, L::kMaxExperts);
    m.moe.topK = r.size("num_experts_per_tok", 2, 1, L::kMaxExperts);
    m.moe.ffn = m.intermediate;
    m.moe.scoring = "softmax";
    m.moe.norm = true;
  }
  if (deepseek) {
    bool v3 = m.family == Family::DeepseekV3;
    // null n_routed_experts: every layer dense (modeling_deepseek.py).
    m.hasMoE = !Reader::isExplicitNull(&root, "n_routed_experts");
    m.firstDense = r.size("first_k_dense_replace", v3 ? 3 : 0, 0,
                          L::kMaxLayers + 1);
    if (auto f = r.optInt(&root, "moe_layer_freq", "moe_layer_freq");
        f && *f != 1)
      r.error("moe_layer_freq")
          << "= " << num(*f) << " is not implemented: transformers makes every "
          << "layer from first_k_dense_replace on MoE, DeepSeek's "
          << "modeling_deepseek.py only every moe_layer_freq-th";
    MoESpec &e = m.moe;
    if (m.hasMoE) {
      e.experts = r.size("n_routed_experts", v3 ? 256 : 64, 1, L::kMaxExperts);
      e.topK = r.size("num_experts_per_tok",
                      v3 ? std::optional<int64_t>(8) : std::nullopt, 1,
                      L::kMaxExperts);
      e.ffn = r.size("moe_intermediate_size", v3 ? 2048 : 1407);
      e.sharedExperts = Reader::isExplicitNull(&root, "n_shared_experts")
                            ? 0
                            : r.size("n_shared_experts", v3 ? 1 : 2, 0,
                                     L::kMaxExperts);
    }
    // DeepseekV3Config fixes sigmoid scoring and noaux_tc routing (absent
    // from its config.json); DeepseekV2's router is softmax, greedy by
    // default. Explicit values Kiln implements are honoured, as vLLM does.
    e.scoring = r.string("scoring_func", v3 ? "sigmoid" : "softmax");
    if (e.scoring != "softmax" && e.scoring != "sigmoid")
      r.error("scoring_func") << "'" << e.scoring
                              << "' is not implemented (softmax, sigmoid)";
    std::string method = r.string("topk_method", v3 ? "noaux_tc" : "greedy");
    bool norm = r.boolean("norm_topk_prob", v3);
    double rsf = r.number("routed_scaling_factor", v3 ? 2.5 : 1.0);
    if (!(rsf > 0.0))
      r.error("routed_scaling_factor") << "must be positive, got " << num(rsf);
    auto groups = [&](std::optional<int64_t> g, std::optional<int64_t> tg) {
      e.groups = r.size("n_group", g, 1, L::kMaxExperts);
      e.topkGroup = r.size("topk_group", tg, 1, L::kMaxExperts);
    };
    if (method == "noaux_tc") {
      e.correctionBias = true;
      groups(v3 ? std::optional<int64_t>(8) : std::nullopt,
             v3 ? std::optional<int64_t>(4) : std::nullopt);
      e.groupScore = "top2_sum";
      e.norm = norm && e.topK > 1;
      e.scaling = rsf; // V3: normalize, then scale
    } else if (method == "greedy" || method == "group_limited_greedy") {
      if (method == "group_limited_greedy") {
        groups(v3 ? std::optional<int64_t>(8) : std::nullopt,
               v3 ? std::optional<int64_t>(4) : std::nullopt);
        e.groupScore = "max";
      }
      if (norm && e.topK > 1 && !v3)
        r.error("norm_topk_prob")
            << "= true is not implemented for deepseek_v2: transformers "
            << "ignores it, DeepSeek's modeling_deepseek.py normalizes "
            << "instead of scaling, vLLM does both";
      e.norm = norm && e.topK > 1;
      e.scaling = v3 || !e.norm ? rsf : 1.0;
    } else {
      r.error("topk_method") << "'" << method
                             << "' is not implemented (noaux_tc, greedy, "
                                "group_limited_greedy)";
    }
    if (v3 && !r.boolean("rope_interleave", true))
      m.rope.interleaved = false;
    else
      m.rope.interleaved = true;
  }
  if (r.failed())
    return failure();

  // Phase 2: across fields.
  if (o.seq > m.maxPositions)
    r.errorAt("--max-seq ")
        << o.seq << " exceeds max_position_embeddings " << m.maxPositions;
  if (!deepseek && m.heads % m.kvHeads)
    r.error("num_key_value_heads")
        << "= " << m.kvHeads << " must divide num_attention_heads = "
        << m.heads;
  if (deepseek && kvHeads && *kvHeads != m.heads)
    r.error("num_key_value_heads")
        << "= " << *kvHeads << " must equal num_attention_heads = " << m.heads
        << " (MLA: every head reads the one latent)";
  m.rope.dim = deepseek ? m.qkRope : m.headDim;
  if (m.rope.dim % 2)
    r.error(deepseek ? "qk_rope_head_dim" : "head_dim")
        << "= " << m.rope.dim << " must be even (rotary pairs)";
  if (m.hasMoE) {
    const MoESpec &e = m.moe;
    const char *expertsField =
        deepseek ? "n_routed_experts" : "num_local_experts";
    if (e.topK > e.experts)
      r.error("num_experts_per_tok") << "= " << e.topK << " exceeds "
                                     << expertsField << " = " << e.experts;
    if (e.experts % e.groups)
      r.error("n_group") << "= " << e.groups << " must divide "
                         << expertsField << " = " << e.experts;
    else if (e.topkGroup > e.groups)
      r.error("topk_group") << "= " << e.topkGroup
                            << " exceeds n_group = " << e.groups;
    else if (e.topK > e.topkGroup * (e.experts / e.groups))
      r.error("num_experts_per_tok")
          << "= " << e.topK << " exceeds the " << e.topkGroup * (e.experts / e.groups)
          << " experts of topk_group = " << e.topkGroup << " groups";
    else if (e.groupScore == "top2_sum" && e.experts / e.groups < 2)
      r.error("n_group") << "= " << e.groups << " leaves fewer than 2 experts "
                         << "per group (noaux_tc scores a group by its top 2)";
  }
  if (r.failed())
    return failure();
  if (deepseek)
    m.softmaxScale = 1.0 / std::sqrt(double(m.qkNope + m.qkRope));
  readRope(r, m, d->theta);
  if (deepseek)
    m.softmaxScale *= m.rope.softmaxMscale;
  if (r.failed())
    return failure();

  // Phase 3: sizes.
  sizeModel(r, m, o);
  if (r.failed())
    return failure();
  return m;
}

} // namespace kiln::models
