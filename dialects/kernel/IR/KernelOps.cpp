//===- KernelOps.cpp - Kernel ops: verifiers and KernelOpInterface --------===//
//
// Each launch op says what its kernel computes: verifier, kernel name, tile
// configuration, grid, run-time scalars and their ranges, operand value
// ranges, token rows, and the parameters of its program (KernelParams.h).
// Code generation is not here: compiler/lib/Codegen/ builds the reference
// program (Reference/) and each target's entry points (CPU/, CUDA/).
// Dimensions that vary between launches (rows) only set the grid, so the
// kernel name -- and the code -- is shared across layers.
//
//===----------------------------------------------------------------------===//
#include "kernel/IR/KernelDialect.h"
#include "kernel/IR/KernelParams.h"

#include "kiln/Kernels/Kernels.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/Support/FormatVariadic.h"

#include <cctype>

using namespace mlir;
using namespace kiln::kernel;
namespace kk = kiln::kernels;

namespace {

RankedTensorType ranked(Value v) {
  return cast<RankedTensorType>(v.getType());
}
Type elem(Value v) { return ranked(v).getElementType(); }
int64_t numel(Value v) { return ranked(v).getNumElements(); }
int64_t lastDim(Value v) { return ranked(v).getShape().back(); }
int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t rows(Value v) { return numel(v) / lastDim(v); }
/// Tokens of a [batch, seq, ...] tensor (rank >= 3) or of a [tokens, ...]
/// one: the rows a token-major launch walks.
int64_t leadingTokens(Value v) {
  auto t = ranked(v);
  return t.getRank() >= 3 ? t.getDimSize(0) * t.getDimSize(1)
                          : t.getDimSize(0);
}

std::string typeName(Type t) {
  std::string s;
  llvm::raw_string_ostream os(s);
  t.print(os);
  return s;
}

std::string typeSig(Operation *op) {
  std::string s;
  for (Value v : op->getOperands())
    s += "_" + typeName(elem(v));
  for (Value v : op->getResults())
    s += "_" + typeName(elem(v));
  return s;
}

/// Kernel names are symbols on both targets: [A-Za-z0-9_] only.
std::string symbolSafe(std::string s) {
  std::string out;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_')
      out += c;
    else if (c == '.')
      out += 'p';
    else if (c == '-')
      out += 'm';
  }
  return out;
}

/// Any value of the operand is safe: the kernel reads it as data.
OperandValueRange anyValue() { return {}; }

/// Values the kernel indexes memory with, in [min, max].
OperandValueRange indexRange(int64_t min, int64_t max, std::string note) {
  OperandValueRange r;
  r.kind = OperandValueRange::Kind::Range;
  r.min = min;
  r.max = max;
  r.note = std::move(note);
  return r;
}

/// A start position: each call covers positions [start, start + seq) of a
/// cache of `capacity` positions.
OperandValueRange cachePosition(int64_t capacity, int64_t seq) {
  std::string note =
      seq == 1 ? llvm::formatv("the KV cache holds {0} positions", capacity)
                     .str()
               : llvm::formatv("the KV cache holds {0} positions and a call "
                               "covers {1} of them",
                               capacity, seq)
                     .str();
  OperandValueRange r = indexRange(0, capacity - seq, note);
  r.capacity = true;
  r.span = seq;
  return r;
}

/// Whether operand `i` of `op` is `v` (an optional operand may be absent).
bool isOperand(Operation *op, unsigned i, Value v) {
  return v && op->getOperand(i) == v;
}

LogicalResult verifyStatic(Operation *op) {
  for (Value v : op->getOperands())
    if (!ranked(v).hasStaticShape())
      return op->emitOpError("operands must be statically shaped");
  for (Value v : op->getResults())
    if (!ranked(v).hasStaticShape())
      return op->emitOpError("results must be statically shaped");
  return success();
}

} // namespace


/// Checks a block-scaled weight's scale: [ceil(N / block_n), ceil(K / act)].
static LogicalResult verifyWeightScale(Operation *op, Value w, Value scale,
                                       int64_t blockN, int64_t act,
                                       StringRef name) {
  auto t = ranked(w);
  if (numel(scale) != ceilDiv(t.getDimSize(0), blockN) *
                          ceilDiv(t.getDimSize(1), act))
    return op->emitOpError() << name
                             << " scale must be [ceil(N / block), ceil(K / "
                                "act)] (the weight's K block must equal the "
                                "activation tile)";
  return success();
}


//===----------------------------------------------------------------------===//
// gather_rows
//===----------------------------------------------------------------------===//

LogicalResult GatherRowsOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (ranked(getTable()).getRank() != 2)
    return emitOpError("table must be 2-D");
  if (!isa<IntegerType>(elem(getIds())))
    return emitOpError("ids must be integers");
  if (numel(getResult()) != numel(getIds()) * lastDim(getTable()))
    return emitOpError("result must hold one table row per id");
  return success();
}
std::string GatherRowsOp::getKernelName() {
  return llvm::formatv("gather_rows_v{0}_c{1}{2}",
                       ranked(getTable()).getDimSize(0), lastDim(getTable()),
                       typeSig(*this));
}
std::string GatherRowsOp::getTileConfig() { return "program=row"; }
OperandValueRange GatherRowsOp::getOperandValueRange(unsigned operand) {
  // The kernel reads zeros for ids out of range; they are refused anyway.
  int64_t rows = ranked(getTable()).getDimSize(0);
  if (isOperand(*this, operand, getIds()))
    return indexRange(0, rows - 1,
                      llvm::formatv("it indexes a table of {0} rows", rows));
  return anyValue();
}
int64_t GatherRowsOp::getTokenRows() { return numel(getIds()); }
int64_t GatherRowsOp::getNumPrograms() { return numel(getIds()); }

//===----------------------------------------------------------------------===//
// last_token
//===----------------------------------------------------------------------===//

LogicalResult LastTokenOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto in = ranked(getInput()), out = ranked(getResult());
  if (in.getRank() != 3 ||
      out.getShape() != ArrayRef<int64_t>{in.getDimSize(0), 1,
                                          in.getDimSize(2)})
    return emitOpError("expects [batch, seq, width] -> [batch, 1, width]");
  return success();
}
std::string LastTokenOp::getKernelName() {
  return llvm::formatv("last_token_s{0}_c{1}{2}",
                       ranked(getInput()).getDimSize(1), lastDim(getInput()),
                       typeSig(*this));
}
std::string LastTokenOp::getTileConfig() { return "program=token"; }
int64_t LastTokenOp::getTokenRows() { return rows(getInput()); }
int64_t LastTokenOp::getNumPrograms() { return rows(getInput()); }
SmallVector<int64_t> LastTokenOp::getLaunchScalars() {
  return {ranked(getInput()).getDimSize(1)};
}
SmallVector<std::pair<int64_t, int64_t>> LastTokenOp::getLaunchScalarRanges() {
  return {{1, ranked(getInput()).getDimSize(1)}};
}
std::pair<int, int> LastTokenOp::getTokenScalarSlots() { return {-1, 0}; }
unsigned LastTokenOp::getNumKernelScalars() { return 1; }

//===----------------------------------------------------------------------===//
// rms_norm
//===----------------------------------------------------------------------===//

LogicalResult RMSNormOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (ranked(getWeight()).getRank() != 1 ||
      lastDim(getWeight()) != lastDim(getResult()))
    return emitOpError("weight must be 1-D with the result's row width");
  int64_t cols = lastDim(getResult());
  int64_t rows = getInputStride() ? numel(getInput()) / getInputStride()
                                  : numel(getInput()) / lastDim(getInput());
  if (getCache()) {
    auto c = ranked(getCache());
    if (c != ranked(getResult()) || c.getRank() != 3 ||
        rows % c.getDimSize(0) != 0)
      return emitOpError("with a cache, the result is the cache "
                         "[batch, capacity, width]");
  } else if (getCacheStart()) {
    return emitOpError("cache_start needs a cache");
  } else if (getInputStride() == 0) {
    if (ranked(getResult()).getShape() != ranked(getInput()).getShape())
      return emitOpError("result must have the input's shape");
  } else if (getInputOffset() < 0 ||
             getInputOffset() + cols > getInputStride() ||
             numel(getInput()) != rows * getInputStride()) {
    return emitOpError("strided input must hold one row of input_stride "
                       "elements per result row");
  }
  return success();
}
std::optional<unsigned> RMSNormOp::getInPlaceOperand() {
  if (!getCache())
    return std::nullopt;
  return 2; // input, weight, cache
}
/// Rows of an RMSNorm (of its input, which differs from the result's when
/// the result is a cache).
int64_t kiln::kernel::normRows(RMSNormOp op) {
  return op.getInputStride()
             ? numel(op.getInput()) / op.getInputStride()
             : numel(op.getInput()) / lastDim(op.getInput());
}
std::string RMSNormOp::getKernelName() {
  std::string eps = llvm::formatv("{0:e}", getEpsilon().convertToFloat());
  std::string strided =
      getInputStride() ? llvm::formatv("_in{0}o{1}", getInputStride(),
                                       getInputOffset())
                             .str()
                       : std::string();
  if (getCache())
    strided += llvm::formatv("_cache{0}x{1}{2}",
                             ranked(getCache()).getDimSize(1),
                             normRows(*this) / ranked(getCache()).getDimSize(0),
                             getCacheStart() ? "_st" : "")
                   .str();
  return llvm::formatv("rms_norm_c{0}{1}_eps{2}{3}", lastDim(getResult()),
                       strided, symbolSafe(eps), typeSig(*this));
}
std::string RMSNormOp::getTileConfig() { return "program=row"; }
OperandValueRange RMSNormOp::getOperandValueRange(unsigned operand) {
  if (getCache() && isOperand(*this, operand, getCacheStart()))
    return cachePosition(ranked(getCache()).getDimSize(1),
                         normRows(*this) / ranked(getCache()).getDimSize(0));
  return anyValue();
}
int64_t RMSNormOp::getTokenRows() { return normRows(*this); }
int64_t RMSNormOp::getNumPrograms() { return normRows(*this); }

//===----------------------------------------------------------------------===//
// gemm
//===----------------------------------------------------------------------===//

static LogicalResult verifyAddends(Operation *op, ValueRange addends,
                                   Value result) {
  for (Value a : addends)
    if (numel(a) != numel(result) || elem(a) != elem(result))
      return op->emitOpError("addends must have the result's size and type");
  return success();
}

LogicalResult GemmOp::verify() {
  if (failed(verifyStatic(*this)) ||
      failed(verifyAddends(*this, getAddends(), getResult())))
    return failure();
  auto w = ranked(getWeight());
  if (w.getRank() != 2 || w.getDimSize(1) != lastDim(getInput()))
    return emitOpError("weight must be [N, K] with K the input's row width");
  if (lastDim(getResult()) != w.getDimSize(0) ||
      numel(getResult()) / w.getDimSize(0) !=
          numel(getInput()) / lastDim(getInput()))
    return emitOpError("result must be [M, N]");
  return success();
}
std::string GemmOp::getKernelName() {
  auto w = ranked(getWeight());
  return llvm::formatv("gemm_n{0}_k{1}_tn{2}{3}", w.getDimSize(0),
                       w.getDimSize(1), getTileN(), typeSig(*this));
  // typeSig lists every operand, so the addend count is part of the name.
}
std::string GemmOp::getTileConfig() {
  return llvm::formatv("program=row x {0} cols; tile_n={0}", getTileN());
}
int64_t GemmOp::getTokenRows() { return rows(getInput()); }
int64_t GemmOp::getNumPrograms() {
  int64_t n = ranked(getWeight()).getDimSize(0);
  int64_t m = numel(getInput()) / lastDim(getInput());
  return m * ((n + getTileN() - 1) / getTileN());
}

//===----------------------------------------------------------------------===//
// gemm_swiglu, gemm_dual
//===----------------------------------------------------------------------===//

LogicalResult GemmSwiGLUOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto wg = ranked(getWGate());
  if (wg.getRank() != 2 || ranked(getWUp()).getShape() != wg.getShape() ||
      wg.getDimSize(1) != lastDim(getInput()) ||
      lastDim(getResult()) != wg.getDimSize(0))
    return emitOpError("w_gate and w_up must be [N, K] with the input's K");
  return success();
}
std::string GemmSwiGLUOp::getKernelName() {
  auto w = ranked(getWGate());
  return llvm::formatv("gemm_swiglu_n{0}_k{1}_tn{2}{3}", w.getDimSize(0),
                       w.getDimSize(1), getTileN(), typeSig(*this));
}
std::string GemmSwiGLUOp::getTileConfig() {
  return llvm::formatv("program=row x {0} cols; tile_n={0}", getTileN());
}
int64_t GemmSwiGLUOp::getTokenRows() { return rows(getInput()); }
int64_t GemmSwiGLUOp::getNumPrograms() {
  int64_t n = ranked(getWGate()).getDimSize(0);
  return numel(getInput()) / lastDim(getInput()) *
         ((n + getTileN() - 1) / getTileN());
}

LogicalResult GemmDualOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto w1 = ranked(getW1()), w2 = ranked(getW2());
  if (w1.getRank() != 2 || w2.getRank() != 2 ||
      w1.getDimSize(1) != lastDim(getInput()) ||
      w2.getDimSize(1) != lastDim(getInput()) ||
      lastDim(getResult1()) != w1.getDimSize(0) ||
      lastDim(getResult2()) != w2.getDimSize(0))
    return emitOpError("w1 and w2 must be [N1, K] and [N2, K]");
  return success();
}
std::string GemmDualOp::getKernelName() {
  auto w1 = ranked(getW1()), w2 = ranked(getW2());
  return llvm::formatv("gemm_dual_n{0}_n{1}_k{2}_tn{3}{4}", w1.getDimSize(0),
                       w2.getDimSize(0), w1.getDimSize(1), getTileN(),
                       typeSig(*this));
}
std::string GemmDualOp::getTileConfig() {
  return llvm::formatv("program=row x {0} combined cols; tile_n={0}",
                       getTileN());
}
int64_t GemmDualOp::getTokenRows() { return rows(getInput()); }
int64_t GemmDualOp::getNumPrograms() {
  int64_t n = ranked(getW1()).getDimSize(0) + ranked(getW2()).getDimSize(0);
  return numel(getInput()) / lastDim(getInput()) *
         ((n + getTileN() - 1) / getTileN());
}

//===----------------------------------------------------------------------===//
// elementwise
//===----------------------------------------------------------------------===//

std::optional<kk::ElementwiseKind> kiln::kernel::parseElementwiseKind(StringRef s) {
  if (s == "add")
    return kk::ElementwiseKind::Add;
  if (s == "mul")
    return kk::ElementwiseKind::Mul;
  if (s == "swiglu")
    return kk::ElementwiseKind::SwiGLU;
  if (s == "bias_add")
    return kk::ElementwiseKind::BiasAdd;
  return std::nullopt;
}

LogicalResult ElementwiseOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (!parseElementwiseKind(getKind()))
    return emitOpError() << "unknown kind \"" << getKind()
                         << "\" (expected add, mul, swiglu or bias_add)";
  if (numel(getLhs()) != numel(getResult()))
    return emitOpError("lhs and result must have the same size");
  if (getKind() == "bias_add") {
    auto lhs = cast<RankedTensorType>(getLhs().getType());
    if (lhs.getRank() < 1 || numel(getRhs()) != lhs.getShape().back())
      return emitOpError("bias_add: rhs must have as many elements as the "
                         "last dimension of lhs");
    return success();
  }
  if (numel(getLhs()) != numel(getRhs()))
    return emitOpError("operands and result must have the same size");
  return success();
}
std::string ElementwiseOp::getKernelName() {
  // bias_add's rhs width is baked into the program (i mod width).
  std::string width =
      getKind() == "bias_add" ? "_n" + std::to_string(numel(getRhs())) : "";
  return llvm::formatv("ew_{0}{1}_b{2}{3}", getKind(), width, getBlock(),
                       typeSig(*this));
}
std::string ElementwiseOp::getTileConfig() {
  return llvm::formatv("program={0} elements", getBlock());
}
/// Token-major when a block never straddles two rows (tokens).
int64_t ElementwiseOp::getTokenRows() {
  return lastDim(getResult()) % getBlock() == 0 ? rows(getResult()) : 0;
}
int64_t ElementwiseOp::getNumPrograms() {
  return (numel(getResult()) + getBlock() - 1) / getBlock();
}
SmallVector<int64_t> ElementwiseOp::getLaunchScalars() {
  return {numel(getResult())};
}
unsigned ElementwiseOp::getNumKernelScalars() { return 1; }
/// The element count: the programs cover it (each stops at it) and the
/// bindings hold it.
SmallVector<std::pair<int64_t, int64_t>> ElementwiseOp::getLaunchScalarRanges() {
  return {{(getNumPrograms() - 1) * getBlock() + 1, numel(getResult())}};
}
OperandValueRange ElementwiseOp::getOperandValueRange(unsigned) {
  return anyValue();
}


//===----------------------------------------------------------------------===//
// slice
//===----------------------------------------------------------------------===//

LogicalResult SliceOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (getOffset() < 0 ||
      getOffset() + lastDim(getResult()) > lastDim(getInput()) ||
      numel(getInput()) / lastDim(getInput()) !=
          numel(getResult()) / lastDim(getResult()))
    return emitOpError("slice out of range");
  return success();
}
std::string SliceOp::getKernelName() {
  return llvm::formatv("slice_i{0}_o{1}_n{2}{3}", lastDim(getInput()),
                       getOffset(), lastDim(getResult()), typeSig(*this));
}
std::string SliceOp::getTileConfig() { return "program=row"; }
OperandValueRange SliceOp::getOperandValueRange(unsigned) { return anyValue(); }
int64_t SliceOp::getTokenRows() { return rows(getResult()); }
int64_t SliceOp::getNumPrograms() {
  return numel(getResult()) / lastDim(getResult());
}

//===----------------------------------------------------------------------===//
// rope
//===----------------------------------------------------------------------===//

kk::RopeParams kiln::kernel::ropeParams(RopeOp op) {
  // The rows being rotated: the result's shape, or with a cache, the
  // input's rows (the cache has `capacity` positions instead of `seq`).
  auto x = ranked(op.getResult());
  if (op.getCache()) {
    auto c = ranked(op.getCache());
    int64_t rows = (op.getInputStride() ? numel(op.getInput()) /
                                              op.getInputStride()
                                        : numel(op.getInput()) /
                                              lastDim(op.getInput()));
    int64_t seq = rows / (c.getDimSize(0) * c.getDimSize(2));
    x = RankedTensorType::get(
        {c.getDimSize(0), seq, c.getDimSize(2), c.getDimSize(3)},
        c.getElementType());
  }
  kk::RopeParams p;
  p.seq = x.getDimSize(1);
  p.heads = x.getDimSize(2);
  p.headDim = x.getDimSize(3);
  p.rotaryDim = op.getRotaryDim();
  p.theta = op.getTheta().convertToFloat();
  p.scaling = op.getScalingFactor().convertToFloat();
  p.interleaved = op.getInterleaved();
  p.yarnFactor = op.getYarnFactor().convertToFloat();
  p.yarnLow = op.getYarnLow().convertToFloat();
  p.yarnHigh = op.getYarnHigh().convertToFloat();
  p.mscale = op.getMscale().convertToFloat();
  p.hasStart = static_cast<bool>(op.getStart());
  p.inputStride = op.getInputStride();
  p.inputOffset = op.getInputOffset();
  if (op.getCache())
    p.cacheCapacity = ranked(op.getCache()).getDimSize(1);
  return p;
}

std::optional<unsigned> RopeOp::getInPlaceOperand() {
  if (!getCache())
    return std::nullopt;
  return getStart() ? 2 : 1; // input, [start], cache
}

LogicalResult RopeOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (ranked(getResult()).getRank() != 4)
    return emitOpError("result must be [batch, seq, heads, head_dim]");
  if (getCache()) {
    if (ranked(getCache()) != ranked(getResult()))
      return emitOpError("with a cache, the result is the cache");
    return success();
  }
  int64_t rows = numel(getResult()) / lastDim(getResult());
  if (getInputStride() == 0) {
    if (ranked(getInput()).getShape() != ranked(getResult()).getShape())
      return emitOpError("a contiguous input must have the result's shape");
  } else if (getInputOffset() < 0 ||
             getInputOffset() + lastDim(getResult()) > getInputStride() ||
             numel(getInput()) != rows * getInputStride()) {
    return emitOpError("strided input must hold one row of input_stride "
                       "elements per result row");
  }
  if (getRotaryDim() <= 0 || getRotaryDim() % 2 ||
      getRotaryDim() > lastDim(getResult()))
    return emitOpError("invalid rotary_dim");
  if (getYarnFactor().convertToFloat() > 1.0f &&
      !(getYarnHigh().convertToFloat() > getYarnLow().convertToFloat()))
    return emitOpError("YaRN needs yarn_high > yarn_low");
  return success();
}
std::string RopeOp::getKernelName() {
  kk::RopeParams p = ropeParams(*this);
  std::string f = llvm::formatv("{0:e}_{1:e}_{2:e}_{3:e}_{4:e}_{5:e}", p.theta,
                                p.scaling, p.yarnFactor, p.yarnLow, p.yarnHigh,
                                p.mscale);
  std::string strided =
      p.inputStride ? llvm::formatv("_in{0}o{1}", p.inputStride, p.inputOffset)
                          .str()
                    : std::string();
  if (p.cacheCapacity)
    strided += llvm::formatv("_cache{0}", p.cacheCapacity).str();
  return llvm::formatv("rope_s{0}_h{1}_d{2}_r{3}{4}{5}{6}_{7}{8}", p.seq,
                       p.heads, p.headDim, p.rotaryDim,
                       p.interleaved ? "_il" : "", p.hasStart ? "_st" : "",
                       strided, symbolSafe(f), typeSig(*this));
}
std::string RopeOp::getTileConfig() { return "program=(batch, seq, head) row"; }
OperandValueRange RopeOp::getOperandValueRange(unsigned operand) {
  // Without a cache the start only sets the rotation angles.
  if (getCache() && isOperand(*this, operand, getStart())) {
    kk::RopeParams p = ropeParams(*this);
    return cachePosition(p.cacheCapacity, p.seq);
  }
  return anyValue();
}
int64_t RopeOp::getTokenRows() { return ranked(getResult()).getDimSize(0) * ropeParams(*this).seq; }
int64_t RopeOp::getNumPrograms() {
  // One program per rotated (batch, seq, head) row.
  kk::RopeParams p = ropeParams(*this);
  return ranked(getResult()).getDimSize(0) * p.seq * p.heads;
}

//===----------------------------------------------------------------------===//
// attention
//===----------------------------------------------------------------------===//

/// The rotary parameters of a fused q rope (`q_rotation`, the rope op's
/// attribute names) over `dim` values; false when an entry is missing.
static bool rotationOf(DictionaryAttr d, int64_t dim, kk::RopeParams &p) {
  auto f = [&](StringRef name, double &out) {
    auto a = d.getAs<FloatAttr>(name);
    if (a)
      out = a.getValueAsDouble();
    return static_cast<bool>(a);
  };
  auto rd = d.getAs<IntegerAttr>("rotary_dim");
  auto il = d.getAs<BoolAttr>("interleaved");
  if (!rd || !il || !f("theta", p.theta) || !f("scaling_factor", p.scaling) ||
      !f("yarn_factor", p.yarnFactor) || !f("yarn_low", p.yarnLow) ||
      !f("yarn_high", p.yarnHigh) || !f("mscale", p.mscale))
    return false;
  p.rotaryDim = rd.getInt();
  p.interleaved = il.getValue();
  p.headDim = dim;
  return p.rotaryDim > 0 && p.rotaryDim <= dim && p.rotaryDim % 2 == 0;
}

/// Kernel-name suffix of a fused query rotation.
static std::string rotationSuffix(const kk::AttentionParams &p) {
  if (!p.qRotate)
    return "";
  const kk::RopeParams &r = p.qRope;
  std::string f = llvm::formatv("{0:e}_{1:e}_{2:e}_{3:e}_{4:e}_{5:e}", r.theta,
                                r.scaling, r.yarnFactor, r.yarnLow,
                                r.yarnHigh, r.mscale);
  return llvm::formatv("_rot{0}{1}_{2}", r.rotaryDim,
                       r.interleaved ? "il" : "", symbolSafe(f))
      .str();
}

kk::AttentionParams kiln::kernel::attentionParams(AttentionOp op) {
  auto q = ranked(op.getQ()), k = ranked(op.getK()), v = ranked(op.getV());
  kk::AttentionParams p;
  p.seq = q.getDimSize(1);
  p.heads = q.getDimSize(2);
  p.headDim = q.getDimSize(3);
  p.kvLen = k.getDimSize(1);
  p.kvHeads = k.getDimSize(2);
  p.valueDim = v.getDimSize(3);
  p.scale = op.getScale().convertToFloat();
  p.causal = op.getCausal();
  p.hasStart = static_cast<bool>(op.getStart());
  if (auto rot = op.getQRotationAttr())
    p.qRotate = rotationOf(rot, p.headDim, p.qRope);
  return p;
}

LogicalResult AttentionOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (ranked(getQ()).getRank() != 4 || ranked(getK()).getRank() != 4 ||
      ranked(getV()).getRank() != 4)
    return emitOpError("q, k, v must be [batch, len, heads, dim]");
  if (ranked(getQ()).getDimSize(2) % ranked(getK()).getDimSize(2))
    return emitOpError("q heads must be a multiple of kv heads");
  if (numel(getWorkspace()) != numel(getQ()) || !elem(getWorkspace()).isF32())
    return emitOpError("workspace must hold head_dim floats per (batch, seq, "
                       "head)");
  kk::RopeParams r;
  if (auto rot = getQRotationAttr())
    if (!rotationOf(rot, lastDim(getQ()), r))
      return emitOpError("q_rotation needs theta, rotary_dim (even, at most "
                         "head_dim), interleaved, scaling_factor, "
                         "yarn_factor, yarn_low, yarn_high and mscale");
  return success();
}
std::string AttentionOp::getKernelName() {
  kk::AttentionParams p = attentionParams(*this);
  std::string sc = llvm::formatv("{0:e}", p.scale);
  return llvm::formatv("attn_s{0}_t{1}_h{2}_kv{3}_d{4}_v{5}{6}{7}{8}_sc{9}{10}",
                       p.seq, p.kvLen, p.heads, p.kvHeads, p.headDim,
                       p.valueDim, p.causal ? "_causal" : "",
                       p.hasStart ? "_st" : "", rotationSuffix(p),
                       symbolSafe(sc), typeSig(*this));
}
std::string AttentionOp::getTileConfig() {
  return "program=(batch, seq, head); online softmax";
}
OperandValueRange AttentionOp::getOperandValueRange(unsigned operand) {
  // Queries at start + s, s < seq, over keys [0, kvLen).
  if (isOperand(*this, operand, getStart())) {
    kk::AttentionParams p = attentionParams(*this);
    return cachePosition(p.kvLen, p.seq);
  }
  return anyValue();
}
int64_t AttentionOp::getTokenRows() { return leadingTokens(getResult()); }
int64_t AttentionOp::getNumPrograms() {
  return numel(getResult()) / lastDim(getResult());
}

//===----------------------------------------------------------------------===//
// mla_attention
//===----------------------------------------------------------------------===//

/// Kernel-name suffix of the q_rope source and rotation.
static std::string qRopeSuffix(const kk::MLAParams &p) {
  std::string s;
  if (p.qRopeStride)
    s += llvm::formatv("_qr{0}o{1}", p.qRopeStride, p.qRopeOffset).str();
  return s + rotationSuffix(p);
}

/// The q_rope attributes shared by the MLA ops.
template <typename MLAOp>
static void qRopeParams(MLAOp op, kk::MLAParams &p) {
  p.ropeDim = lastDim(op.getKRope());
  p.qRopeStride = op.getQRopeStride();
  p.qRopeOffset = op.getQRopeOffset();
  if (auto rot = op.getQRotationAttr())
    p.qRotate = rotationOf(rot, p.ropeDim, p.qRope);
}

/// Checks the q_rope attributes shared by the MLA ops.
template <typename MLAOp>
static LogicalResult verifyQRope(MLAOp op) {
  kk::RopeParams r;
  if (auto rot = op.getQRotationAttr())
    if (!rotationOf(rot, lastDim(op.getKRope()), r))
      return op.emitOpError("q_rotation needs theta, rotary_dim (even, at "
                            "most the rope width), interleaved, "
                            "scaling_factor, yarn_factor, yarn_low, yarn_high "
                            "and mscale");
  int64_t dr = lastDim(op.getKRope());
  if (op.getQRopeStride() == 0 ? lastDim(op.getQRope()) != dr
                               : op.getQRopeOffset() + dr >
                                     op.getQRopeStride())
    return op.emitOpError("q_rope rows must hold rope_dim values (at "
                          "q_rope_offset of rows of q_rope_stride)");
  return success();
}

/// Parameters shared by mla_attention and mla_attention_quant.
template <typename MLAOp>
static kk::MLAParams mlaParamsOf(MLAOp op) {
  // [B, S, H, dv]; q_rope may be q itself (kiln-fuse-rope).
  auto out = ranked(op.getResult());
  auto c = ranked(op.getKvLatent());
  kk::MLAParams p;
  p.seq = out.getDimSize(1);
  p.heads = out.getDimSize(2);
  p.kvHeads = 1;
  p.kvLen = c.getDimSize(1);
  p.rank = c.getDimSize(2);
  p.valueDim = lastDim(op.getResult());
  // q_nope may be q itself read with a row stride (kiln-fuse-slices): take
  // d_nope from kv_b, [heads * (d_nope + d_v), rank].
  p.headDim = ranked(op.getKvB()).getDimSize(0) / p.heads - p.valueDim;
  p.scale = op.getScale().convertToFloat();
  p.causal = op.getCausal();
  p.hasStart = static_cast<bool>(op.getStart());
  p.kvbScale = static_cast<bool>(op.getKvBScale());
  p.latentScale = static_cast<bool>(op.getKvLatentScale());
  if (p.latentScale)
    p.latentTiles =
        numel(op.getKvLatentScale()) / (c.getDimSize(0) * c.getDimSize(1));
  p.qNopeStride = op.getQNopeStride();
  qRopeParams(op, p);
  return p;
}

/// The FP8 latent cache: e4m3 values with one f32 scale per tile of a row
/// (the tiles dividing the rank).
template <typename MLAOp> static LogicalResult verifyLatentScale(MLAOp op) {
  auto c = ranked(op.getKvLatent());
  bool fp8 = isa<Float8E4M3FNType>(c.getElementType());
  if (fp8 != static_cast<bool>(op.getKvLatentScale()))
    return op.emitOpError("an e4m3 kv_latent comes with kv_latent_scale, and "
                          "only it");
  if (!fp8)
    return success();
  int64_t tokens = c.getDimSize(0) * c.getDimSize(1);
  int64_t n = numel(op.getKvLatentScale());
  if (!elem(op.getKvLatentScale()).isF32() || n % tokens ||
      c.getDimSize(2) % (n / tokens))
    return op.emitOpError("kv_latent_scale must be f32 [batch, kv_len, "
                          "tiles], the tiles dividing the rank");
  return success();
}

kk::MLAParams kiln::kernel::mlaParams(MLAAttentionOp op) { return mlaParamsOf(op); }

LogicalResult MLAAttentionOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (failed(verifyQRope(*this)) || failed(verifyLatentScale(*this)))
    return failure();
  kk::MLAParams p = mlaParams(*this);
  if (numel(getWorkspace()) !=
      numel(getResult()) / p.valueDim *
          kk::mlaWorkspacePerProgram(p.seq, p.rank, p.ropeDim))
    return emitOpError("workspace must hold 2 x kv_lora_rank + rope_dim "
                       "floats per (batch, seq, head), twice that at seq 1");
  if (!elem(getWorkspace()).isF32())
    return emitOpError("workspace must be f32");
  return success();
}
std::string MLAAttentionOp::getKernelName() {
  kk::MLAParams p = mlaParams(*this);
  std::string sc = llvm::formatv("{0:e}", p.scale);
  return llvm::formatv("mla_s{0}_t{1}_h{2}_dn{3}_dr{4}_c{5}_v{6}{7}{8}_qs{9}{10}_sc{11}{12}",
                       p.seq, p.kvLen, p.heads, p.headDim, p.ropeDim, p.rank,
                       p.valueDim, p.causal ? "_causal" : "",
                       p.hasStart ? "_st" : "", p.qNopeStride, qRopeSuffix(p),
                       symbolSafe(sc), typeSig(*this));
  // typeSig includes the kv_b element type and the scale's when present.
}
std::string MLAAttentionOp::getTileConfig() {
  return "program=(batch, seq, head); absorbed; online softmax";
}
OperandValueRange MLAAttentionOp::getOperandValueRange(unsigned operand) {
  if (isOperand(*this, operand, getStart())) {
    kk::MLAParams p = mlaParams(*this);
    return cachePosition(p.kvLen, p.seq);
  }
  return anyValue();
}
int64_t MLAAttentionOp::getTokenRows() { return leadingTokens(getResult()); }
int64_t MLAAttentionOp::getNumPrograms() {
  return numel(getResult()) / lastDim(getResult());
}

//===----------------------------------------------------------------------===//
// latent_cache_write
//===----------------------------------------------------------------------===//

kk::RopeParams kiln::kernel::latentRopeParams(LatentCacheWriteOp op) {
  auto rc = ranked(op.getRopeCache());
  kk::RopeParams p;
  rotationOf(op.getRotation(), rc.getDimSize(3), p);
  p.seq = numel(op.getInput()) / op.getInputStride() / rc.getDimSize(0);
  p.heads = 1;
  p.hasStart = static_cast<bool>(op.getStart());
  p.inputStride = op.getInputStride();
  p.inputOffset = op.getRopeOffset();
  p.cacheCapacity = rc.getDimSize(1);
  return p;
}

/// Both results update their cache in place: latent -> latent_cache (2),
/// rope -> rope_cache (3).
std::optional<unsigned> LatentCacheWriteOp::getInPlaceOperandOf(unsigned r) {
  return r == 0 ? 2 : (r == 1 ? std::optional<unsigned>(3) : std::nullopt);
}

LogicalResult LatentCacheWriteOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto lc = ranked(getLatentCache()), rc = ranked(getRopeCache());
  if (lc.getRank() != 3 || rc.getRank() != 4 || rc.getDimSize(2) != 1 ||
      lc.getDimSize(0) != rc.getDimSize(0) ||
      lc.getDimSize(1) != rc.getDimSize(1) ||
      ranked(getLatent()) != lc || ranked(getRope()) != rc)
    return emitOpError("caches must be [batch, capacity, rank] and [batch, "
                       "capacity, 1, rope_dim], and the results the caches");
  int64_t rank = lc.getDimSize(2), dr = rc.getDimSize(3);
  int64_t stride = getInputStride();
  if (ranked(getWeight()).getRank() != 1 || lastDim(getWeight()) != rank)
    return emitOpError("weight must be [rank]");
  int64_t rows = numel(getInput()) / stride;
  if (numel(getInput()) % stride || rows % lc.getDimSize(0) ||
      getLatentOffset() < 0 || getLatentOffset() + rank > stride ||
      getRopeOffset() < 0 || getRopeOffset() + dr > stride)
    return emitOpError("input rows of input_stride must hold the latent at "
                       "latent_offset and the rope key at rope_offset");
  kk::RopeParams r;
  if (!rotationOf(getRotation(), dr, r))
    return emitOpError("rotation needs theta, rotary_dim (even, at most the "
                       "rope width), interleaved, scaling_factor, "
                       "yarn_factor, yarn_low, yarn_high and mscale");
  return success();
}
std::string LatentCacheWriteOp::getKernelName() {
  kk::RopeParams r = latentRopeParams(*this);
  auto lc = ranked(getLatentCache());
  std::string f = llvm::formatv("{0:e}_{1:e}_{2:e}_{3:e}_{4:e}_{5:e}_{6:e}",
                                getEpsilon().convertToFloat(), r.theta,
                                r.scaling, r.yarnFactor, r.yarnLow,
                                r.yarnHigh, r.mscale);
  return llvm::formatv(
      "latent_cache_write_c{0}_r{1}_in{2}o{3}o{4}_cache{5}x{6}{7}_rot{8}{9}_{10}{11}",
      lc.getDimSize(2), r.headDim, getInputStride(), getLatentOffset(),
      getRopeOffset(), lc.getDimSize(1), r.seq, r.hasStart ? "_st" : "",
      r.rotaryDim, r.interleaved ? "il" : "", symbolSafe(f), typeSig(*this));
}
std::string LatentCacheWriteOp::getTileConfig() {
  return "program=row; RMSNorm of the latent + rope of the key";
}
OperandValueRange LatentCacheWriteOp::getOperandValueRange(unsigned operand) {
  if (isOperand(*this, operand, getStart())) {
    kk::RopeParams r = latentRopeParams(*this);
    return cachePosition(r.cacheCapacity, r.seq);
  }
  return anyValue();
}
int64_t LatentCacheWriteOp::getTokenRows() { return getNumPrograms(); }
int64_t LatentCacheWriteOp::getNumPrograms() {
  return numel(getInput()) / getInputStride();
}

//===----------------------------------------------------------------------===//
// mla_naive
//===----------------------------------------------------------------------===//

kk::MLAParams kiln::kernel::mlaNaiveParams(MLANaiveOp op) {
  auto out = ranked(op.getResult());
  auto kv = ranked(op.getKv());
  kk::MLAParams p;
  p.seq = out.getDimSize(1);
  p.heads = out.getDimSize(2);
  p.kvHeads = 1;
  p.kvLen = kv.getDimSize(1);
  p.valueDim = lastDim(op.getResult());
  p.headDim = kv.getDimSize(3) - p.valueDim;
  p.scale = op.getScale().convertToFloat();
  p.causal = op.getCausal();
  p.hasStart = static_cast<bool>(op.getStart());
  p.qNopeStride = op.getQNopeStride();
  qRopeParams(op, p);
  return p;
}

LogicalResult MLANaiveOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto out = ranked(getResult()), kv = ranked(getKv()),
       kr = ranked(getKRope());
  if (out.getRank() != 4 || kv.getRank() != 4 || kr.getRank() != 3 ||
      kv.getDimSize(0) != out.getDimSize(0) ||
      kv.getDimSize(2) != out.getDimSize(2) ||
      kr.getDimSize(1) != kv.getDimSize(1) ||
      kv.getDimSize(3) <= lastDim(getResult()))
    return emitOpError("expected kv [B, T, H, dn + dv], k_rope [B, T, dr] "
                       "and a [B, S, H, dv] result");
  if (failed(verifyQRope(*this)))
    return failure();
  if (numel(getWorkspace()) != rows(getResult()) * kr.getDimSize(2) ||
      !elem(getWorkspace()).isF32())
    return emitOpError("workspace must hold rope_dim floats per (batch, seq, "
                       "head)");
  return success();
}
std::string MLANaiveOp::getKernelName() {
  kk::MLAParams p = mlaNaiveParams(*this);
  std::string sc = llvm::formatv("{0:e}", p.scale);
  return llvm::formatv("mla_naive_s{0}_t{1}_h{2}_dn{3}_dr{4}_v{5}{6}{7}_qs{8}{9}_sc{10}{11}",
                       p.seq, p.kvLen, p.heads, p.headDim, p.ropeDim,
                       p.valueDim, p.causal ? "_causal" : "",
                       p.hasStart ? "_st" : "", p.qNopeStride, qRopeSuffix(p),
                       symbolSafe(sc), typeSig(*this));
}
std::string MLANaiveOp::getTileConfig() {
  return "program=(batch, seq, head); naive; online softmax";
}
OperandValueRange MLANaiveOp::getOperandValueRange(unsigned operand) {
  if (isOperand(*this, operand, getStart())) {
    kk::MLAParams p = mlaNaiveParams(*this);
    return cachePosition(p.kvLen, p.seq);
  }
  return anyValue();
}
int64_t MLANaiveOp::getTokenRows() { return leadingTokens(getResult()); }
int64_t MLANaiveOp::getNumPrograms() {
  return numel(getResult()) / lastDim(getResult());
}

//===----------------------------------------------------------------------===//
// mla_attention_quant
//===----------------------------------------------------------------------===//

kk::MLAParams kiln::kernel::mlaQuantParams(MLAAttentionQuantOp op) {
  kk::MLAParams p = mlaParamsOf(op);
  p.quantAct = op.getAct();
  return p;
}

LogicalResult MLAAttentionQuantOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (lastDim(getResult()) % getAct() != 0)
    return emitOpError("v_head_dim must be a multiple of the activation tile");
  if (numel(getQuantized()) != numel(getResult()) ||
      numel(getQuantScale()) != numel(getResult()) / getAct())
    return emitOpError("quantized results must cover the output");
  if (failed(verifyLatentScale(*this)))
    return failure();
  return verifyQRope(*this);
}
std::string MLAAttentionQuantOp::getKernelName() {
  kk::MLAParams p = mlaQuantParams(*this);
  std::string sc = llvm::formatv("{0:e}", p.scale);
  return llvm::formatv(
      "mla_quant_s{0}_t{1}_h{2}_dn{3}_dr{4}_c{5}_v{6}{7}{8}_qs{9}{10}_sc{11}_a{12}{13}",
      p.seq, p.kvLen, p.heads, p.headDim, p.ropeDim, p.rank, p.valueDim,
      p.causal ? "_causal" : "", p.hasStart ? "_st" : "", p.qNopeStride,
      qRopeSuffix(p), symbolSafe(sc), p.quantAct, typeSig(*this));
}
std::string MLAAttentionQuantOp::getTileConfig() {
  return "program=(batch, seq, head); absorbed; online softmax; output "
         "quantized";
}
OperandValueRange MLAAttentionQuantOp::getOperandValueRange(unsigned operand) {
  if (isOperand(*this, operand, getStart())) {
    kk::MLAParams p = mlaQuantParams(*this);
    return cachePosition(p.kvLen, p.seq);
  }
  return anyValue();
}
int64_t MLAAttentionQuantOp::getTokenRows() { return leadingTokens(getResult()); }
int64_t MLAAttentionQuantOp::getNumPrograms() {
  return numel(getResult()) / lastDim(getResult());
}

//===----------------------------------------------------------------------===//
// moe_route, moe_up, moe_down
//===----------------------------------------------------------------------===//

kk::MoERouteParams kiln::kernel::routeParams(MoERouteOp op) {
  kk::MoERouteParams p;
  p.hidden = lastDim(op.getInput());
  p.experts = ranked(op.getRouter()).getDimSize(0);
  p.topK = op.getTopK();
  p.groups = op.getNGroup();
  p.topkGroup = op.getTopkGroup();
  p.sigmoid = op.getScoring() == "sigmoid";
  p.groupTop2Sum = op.getGroupScore() == "top2_sum";
  p.normTopK = op.getNormTopkProb();
  p.hasBias = static_cast<bool>(op.getCorrectionBias());
  p.scaling = op.getRoutedScalingFactor().convertToFloat();
  p.sharedExperts = op.getSharedExperts();
  p.blockM = op.getBlockM();
  return p;
}

SmallVector<Type> kiln::kernel::elemTypes(Operation *op) {
  SmallVector<Type> types;
  for (Value v : op->getOperands())
    types.push_back(elem(v));
  for (Value v : op->getResults())
    types.push_back(elem(v));
  return types;
}

kk::MoELayout MoERouteOp::getLayout() {
  kk::MoERouteParams p = routeParams(*this);
  return kk::MoELayout{numel(getInput()) / p.hidden, p.topK + p.sharedExperts,
                       p.experts + p.sharedExperts, p.blockM};
}

LogicalResult MoERouteOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  kk::MoERouteParams p = routeParams(*this);
  int64_t tokens = numel(getInput()) / p.hidden;
  if (p.experts % p.groups || p.topkGroup > p.groups || p.topK > p.experts ||
      p.topK > p.topkGroup * (p.experts / p.groups))
    return emitOpError("invalid routing configuration");
  if (auto seq = getSeqLen(); seq && tokens % *seq)
    return emitOpError() << "seq_len " << *seq << " must divide the "
                         << tokens << " tokens";
  kk::MoELayout l = getLayout();
  if (numel(getIds()) != tokens * p.topK ||
      numel(getWeights()) != tokens * p.topK ||
      numel(getWorkspace()) != tokens * (2 * p.experts + p.groups) + l.experts)
    return emitOpError("results must be [tokens, top_k] ids and weights and "
                       "a workspace of tokens x (2 x experts + n_group) + "
                       "experts + shared_experts elements");
  if (numel(getSortedToken()) != l.rows() ||
      numel(getBlockExpert()) != l.blocks() ||
      numel(getSlotRow()) != tokens * l.slots)
    return emitOpError() << "layout results must be sorted_token [" << l.rows()
                         << "], block_expert [" << l.blocks()
                         << "] and slot_row [" << tokens << ", " << l.slots
                         << "]";
  if (!elem(getIds()).isInteger(32) || !elem(getWeights()).isF32() ||
      !elem(getWorkspace()).isF32() || !elem(getSortedToken()).isInteger(32) ||
      !elem(getBlockExpert()).isInteger(32) ||
      !elem(getSlotRow()).isInteger(32))
    return emitOpError("ids and the layout must be i32, weights and "
                       "workspace f32");
  if (numel(getSync()) != 1 || !elem(getSync()).isInteger(32))
    return emitOpError("sync must be a one-element i32 counter");
  return success();
}
std::string MoERouteOp::getKernelName() {
  kk::MoERouteParams p = routeParams(*this);
  std::string sc = llvm::formatv("{0:e}", p.scaling);
  return llvm::formatv(
      "moe_route_d{0}_e{1}_k{2}_g{3}_tg{4}_{5}{6}{7}{8}_sc{9}_s{10}_bm{11}{12}",
      p.hidden, p.experts, p.topK, p.groups, p.topkGroup,
      p.sigmoid ? "sigmoid" : "softmax", p.groupTop2Sum ? "_top2" : "_max",
      p.normTopK ? "_norm" : "", p.hasBias ? "_bias" : "", symbolSafe(sc),
      p.sharedExperts, p.blockM, typeSig(*this));
}
std::string MoERouteOp::getTileConfig() {
  return llvm::formatv("program=token; block_m={0}", getBlockM());
}
int64_t MoERouteOp::getTokenRows() { return getNumPrograms(); }
int64_t MoERouteOp::getNumPrograms() {
  return numel(getInput()) / lastDim(getInput());
}
/// Scalars: the layout's tokens, the tokens routed (a request's; the
/// maximum here), the tokens per batch row routed, and the tokens per batch
/// row of the layout.
SmallVector<int64_t> MoERouteOp::getLaunchScalars() {
  int64_t tokens = getNumPrograms(), seq = getSeqLen().value_or(tokens);
  return {tokens, tokens, seq, seq};
}
SmallVector<std::pair<int64_t, int64_t>> MoERouteOp::getLaunchScalarRanges() {
  int64_t tokens = getNumPrograms(), seq = getSeqLen().value_or(tokens);
  return {{tokens, tokens}, {1, tokens}, {1, seq}, {seq, seq}};
}
std::pair<int, int> MoERouteOp::getTokenScalarSlots() { return {1, 2}; }
unsigned MoERouteOp::getNumKernelScalars() { return 4; }
/// `sync` counts the programs that routed their token: zero between
/// launches, in state memory.
OperandValueRange MoERouteOp::getOperandValueRange(unsigned operand) {
  if (isOperand(*this, operand, getSync()))
    return indexRange(0, 0, "the routing counter is zero between launches");
  return anyValue();
}
bool MoERouteOp::isStateOperand(unsigned operand) {
  return isOperand(*this, operand, getSync());
}

/// Checks a grouped expert GEMM's layout operands against its rows.
static LogicalResult verifyGrouped(Operation *op, Value sorted, Value blocks,
                                   int64_t blockM, int64_t rows) {
  if (numel(sorted) != rows || numel(blocks) * blockM != rows)
    return op->emitOpError() << "the contiguous layout must have " << rows
                             << " rows in blocks of " << blockM;
  return success();
}

/// Tile configuration of a grouped expert GEMM: blocks of `blockM` rows of
/// one expert x `tile` columns (`tileName`), K blocks of `act` in FP8.
static std::string groupedTileConfig(int64_t blockM, StringRef tileName,
                                     int64_t tile, int64_t act = 0) {
  std::string s = llvm::formatv("program=({0} rows of one expert, {1} cols); "
                                "block_m={0}; {2}={1}",
                                blockM, tile, tileName);
  if (act)
    s += llvm::formatv("; act {0}", act).str();
  return s;
}

/// The layout operands of a grouped expert GEMM: `sorted` (when it indexes
/// the `tokens` rows of the input; else only compared with -1) and
/// `blocks`, which indexes the `experts` entries of the weight tables.
static OperandValueRange groupedLayoutRange(Operation *op, unsigned operand,
                                            Value sorted, int64_t tokens,
                                            Value blocks, int64_t experts) {
  if (tokens > 0 && isOperand(op, operand, sorted))
    return indexRange(
        -1, tokens - 1,
        llvm::formatv("it indexes the {0} rows of the input (-1: padding)",
                      tokens));
  if (isOperand(op, operand, blocks))
    return indexRange(
        -1, experts - 1,
        llvm::formatv("it indexes {0} experts (-1: an unused block)",
                      experts));
  return anyValue();
}

/// Programs of a grouped expert GEMM: every block x ceil(n / tile).
static int64_t groupedPrograms(Value blockExpert, int64_t n, int64_t tile) {
  return numel(blockExpert) * ceilDiv(n, tile);
}

LogicalResult MoEUpOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto wg = ranked(getWGate());
  if (wg.getRank() != 3 || wg.getDimSize(2) != lastDim(getInput()) ||
      ranked(getWUp()).getShape() != wg.getShape())
    return emitOpError("expert weights must be [experts, ffn, hidden]");
  if (numel(getResult()) != numel(getSortedToken()) * wg.getDimSize(1))
    return emitOpError("result must be [rows, ffn]");
  return verifyGrouped(*this, getSortedToken(), getBlockExpert(), getBlockM(),
                       rows(getResult()));
}
std::string MoEUpOp::getKernelName() {
  auto wg = ranked(getWGate());
  return llvm::formatv("moe_up_d{0}_f{1}_bm{2}_tf{3}{4}", wg.getDimSize(2),
                       wg.getDimSize(1), getBlockM(), getTileF(),
                       typeSig(*this));
}
OperandValueRange MoEUpOp::getOperandValueRange(unsigned operand) {
  return groupedLayoutRange(*this, operand, getSortedToken(), rows(getInput()),
                            getBlockExpert(),
                            ranked(getWGate()).getDimSize(0));
}
std::string MoEUpOp::getTileConfig() {
  return groupedTileConfig(getBlockM(), "tile_f", getTileF());
}
int64_t MoEUpOp::getNumPrograms() {
  return groupedPrograms(getBlockExpert(),
                         ranked(getWGate()).getDimSize(1), getTileF());
}

LogicalResult MoEDownOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto wd = ranked(getWDown());
  if (wd.getRank() != 3 || wd.getDimSize(2) != lastDim(getAct()) ||
      wd.getDimSize(1) != lastDim(getResult()))
    return emitOpError("w_down must be [experts, hidden, ffn]");
  if (rows(getAct()) != rows(getResult()) || !elem(getResult()).isF32())
    return emitOpError("result must be f32 [rows, hidden]");
  return verifyGrouped(*this, getSortedToken(), getBlockExpert(), getBlockM(),
                       rows(getResult()));
}
std::string MoEDownOp::getKernelName() {
  auto wd = ranked(getWDown());
  return llvm::formatv("moe_down_d{0}_f{1}_bm{2}_td{3}{4}", wd.getDimSize(1),
                       wd.getDimSize(2), getBlockM(), getTileD(),
                       typeSig(*this));
}
OperandValueRange MoEDownOp::getOperandValueRange(unsigned operand) {
  return groupedLayoutRange(*this, operand, getSortedToken(), 0,
                            getBlockExpert(),
                            ranked(getWDown()).getDimSize(0));
}
std::string MoEDownOp::getTileConfig() {
  return groupedTileConfig(getBlockM(), "tile_d", getTileD());
}
int64_t MoEDownOp::getNumPrograms() {
  return groupedPrograms(getBlockExpert(),
                         ranked(getWDown()).getDimSize(1), getTileD());
}

LogicalResult MoECombineOp::verify() {
  if (failed(verifyStatic(*this)) ||
      failed(verifyAddends(*this, getAddends(), getResult())))
    return failure();
  int64_t tokens = rows(getResult());
  if (rows(getSlotRow()) != tokens || rows(getWeights()) != tokens ||
      lastDim(getSlotRow()) < lastDim(getWeights()) ||
      lastDim(getRows()) != lastDim(getResult()))
    return emitOpError("slot_row must be [tokens, slots], weights [tokens, "
                       "top_k] with top_k <= slots, rows [rows, hidden]");
  return success();
}
std::string MoECombineOp::getKernelName() {
  return llvm::formatv("moe_combine_d{0}_k{1}_s{2}_td{3}_add{4}{5}",
                       lastDim(getResult()), lastDim(getWeights()),
                       lastDim(getSlotRow()), getTileD(), getAddends().size(),
                       typeSig(*this));
}
OperandValueRange MoECombineOp::getOperandValueRange(unsigned operand) {
  int64_t n = rows(getRows());
  if (isOperand(*this, operand, getSlotRow()))
    return indexRange(
        0, n - 1,
        llvm::formatv("it indexes the {0} rows of the experts' outputs", n));
  return anyValue();
}
std::string MoECombineOp::getTileConfig() {
  return llvm::formatv("program=(token, {0} cols); tile_d={0}", getTileD());
}
int64_t MoECombineOp::getTokenRows() { return rows(getResult()); }
int64_t MoECombineOp::getNumPrograms() {
  return rows(getResult()) * ceilDiv(lastDim(getResult()), getTileD());
}

//===----------------------------------------------------------------------===//
// cache_write
//===----------------------------------------------------------------------===//

LogicalResult CacheWriteOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto c = ranked(getCache()), v = ranked(getValues());
  if (c.getRank() < 2 || v.getRank() != c.getRank() ||
      v.getDimSize(0) != c.getDimSize(0) ||
      v.getShape().drop_front(2) != c.getShape().drop_front(2))
    return emitOpError("values must match the cache but in the sequence "
                       "dimension");
  return success();
}
std::string CacheWriteOp::getKernelName() {
  auto c = ranked(getCache()), v = ranked(getValues());
  return llvm::formatv("cache_write_t{0}_s{1}_w{2}{3}{4}", c.getDimSize(1),
                       v.getDimSize(1), numel(getValues()) /
                           (v.getDimSize(0) * v.getDimSize(1)),
                       getStart() ? "_st" : "", typeSig(*this));
}
OperandValueRange CacheWriteOp::getOperandValueRange(unsigned operand) {
  if (isOperand(*this, operand, getStart()))
    return cachePosition(ranked(getCache()).getDimSize(1),
                         ranked(getValues()).getDimSize(1));
  return anyValue();
}
std::string CacheWriteOp::getTileConfig() {
  return "program=(batch, seq) row";
}
int64_t CacheWriteOp::getTokenRows() { return ranked(getValues()).getDimSize(0) * ranked(getValues()).getDimSize(1); }
int64_t CacheWriteOp::getNumPrograms() {
  auto v = ranked(getValues());
  return v.getDimSize(0) * v.getDimSize(1);
}
std::optional<unsigned> CacheWriteOp::getInPlaceOperand() { return 0; }

//===----------------------------------------------------------------------===//
// FP8
//===----------------------------------------------------------------------===//


LogicalResult QuantizeOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (!isa<Float8E4M3FNType>(elem(getResult())) || !elem(getScale()).isF32() ||
      numel(getScale()) != rows(getInput()) *
                               ceilDiv(lastDim(getInput()), getAct()))
    return emitOpError("results must be e4m3 values and f32 tile scales");
  return success();
}
std::string QuantizeOp::getKernelName() {
  return llvm::formatv("quantize_c{0}_a{1}{2}{3}{4}", lastDim(getInput()),
                       getAct(), getPow2Scale() ? "_p2" : "",
                       getFlushSubnormals() ? "_ftz" : "", typeSig(*this));
}
std::string QuantizeOp::getTileConfig() {
  return llvm::formatv("program=row; act tile {0}{1}{2}", getAct(),
                       getPow2Scale() ? "; power-of-two scales" : "",
                       getFlushSubnormals() ? "; subnormals to zero" : "");
}
int64_t QuantizeOp::getTokenRows() { return rows(getInput()); }
int64_t QuantizeOp::getNumPrograms() { return rows(getInput()); }

LogicalResult DequantizeOp::verify() { return verifyStatic(*this); }
std::string DequantizeOp::getKernelName() {
  return llvm::formatv("dequantize_c{0}_a{1}{2}", lastDim(getInput()),
                       getAct(), typeSig(*this));
}
std::string DequantizeOp::getTileConfig() { return "program=row"; }
int64_t DequantizeOp::getTokenRows() { return rows(getInput()); }
int64_t DequantizeOp::getNumPrograms() { return rows(getInput()); }

LogicalResult RMSNormQuantOp::verify() { return verifyStatic(*this); }
std::string RMSNormQuantOp::getKernelName() {
  std::string eps = llvm::formatv("{0:e}", getEpsilon().convertToFloat());
  return llvm::formatv("rms_norm_quant_c{0}_eps{1}_a{2}{3}",
                       lastDim(getInput()), symbolSafe(eps), getAct(),
                       typeSig(*this));
}
std::string RMSNormQuantOp::getTileConfig() {
  return llvm::formatv("program=row; act tile {0}", getAct());
}
int64_t RMSNormQuantOp::getTokenRows() { return rows(getInput()); }
int64_t RMSNormQuantOp::getNumPrograms() { return rows(getInput()); }

LogicalResult SwiGLUQuantOp::verify() { return verifyStatic(*this); }
std::string SwiGLUQuantOp::getKernelName() {
  return llvm::formatv("swiglu_quant_c{0}_a{1}{2}", lastDim(getGate()),
                       getAct(), typeSig(*this));
}
std::string SwiGLUQuantOp::getTileConfig() {
  return llvm::formatv("program=row; act tile {0}", getAct());
}
int64_t SwiGLUQuantOp::getTokenRows() { return rows(getGate()); }
int64_t SwiGLUQuantOp::getNumPrograms() { return rows(getGate()); }

/// Name of a block-scaled GEMM kernel over weight `w` ([N, K]).
static std::string fp8GemmName(StringRef prefix, Operation *op, Value w,
                               int64_t tileN, int64_t act, int64_t blockN) {
  auto t = ranked(w);
  return llvm::formatv("{0}_n{1}_k{2}_tn{3}_a{4}_bn{5}{6}", prefix,
                       t.getDimSize(0), t.getDimSize(1), tileN, act, blockN,
                       typeSig(op));
}

/// Programs of a row x tile_n grid over `input`'s rows and N columns.
static int64_t rowTilePrograms(Value input, int64_t n, int64_t tileN) {
  return rows(input) * ceilDiv(n, tileN);
}

LogicalResult GemmFP8Op::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto w = ranked(getWeight());
  if (w.getRank() != 2 || w.getDimSize(1) != lastDim(getInput()))
    return emitOpError("weight must be [N, K]");
  return verifyWeightScale(*this, getWeight(), getWeightScale(),
                           getWeightBlockN(), getAct(), "weight");
}
std::string GemmFP8Op::getKernelName() {
  return fp8GemmName("gemm_fp8", *this, getWeight(), getTileN(), getAct(),
                     getWeightBlockN());
}
std::string GemmFP8Op::getTileConfig() {
  return llvm::formatv("program=row x {0} cols; tile_n={0}; K block {1}",
                       getTileN(), getAct());
}
int64_t GemmFP8Op::getTokenRows() { return rows(getInput()); }
int64_t GemmFP8Op::getNumPrograms() {
  return rowTilePrograms(getInput(), ranked(getWeight()).getDimSize(0),
                         getTileN());
}

LogicalResult GemmDualFP8Op::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto w1 = ranked(getW1()), w2 = ranked(getW2());
  if (w1.getRank() != 2 || w2.getRank() != 2 ||
      w1.getDimSize(1) != lastDim(getInput()) ||
      w2.getDimSize(1) != lastDim(getInput()) ||
      lastDim(getResult1()) != w1.getDimSize(0) ||
      lastDim(getResult2()) != w2.getDimSize(0))
    return emitOpError("w1 and w2 must be [N1, K] and [N2, K]");
  if (failed(verifyWeightScale(*this, getW1(), getW1Scale(),
                               getWeightBlockN(), getAct(), "w1")) ||
      failed(verifyWeightScale(*this, getW2(), getW2Scale(),
                               getWeightBlockN(), getAct(), "w2")))
    return failure();
  return success();
}
std::string GemmDualFP8Op::getKernelName() {
  auto w1 = ranked(getW1()), w2 = ranked(getW2());
  return llvm::formatv("gemm_dual_fp8_n{0}_n{1}_k{2}_tn{3}_a{4}_bn{5}{6}",
                       w1.getDimSize(0), w2.getDimSize(0), w1.getDimSize(1),
                       getTileN(), getAct(), getWeightBlockN(),
                       typeSig(*this));
}
std::string GemmDualFP8Op::getTileConfig() {
  return llvm::formatv(
      "program=row x {0} combined cols; tile_n={0}; K block {1}", getTileN(),
      getAct());
}
int64_t GemmDualFP8Op::getTokenRows() { return rows(getInput()); }
int64_t GemmDualFP8Op::getNumPrograms() {
  return rowTilePrograms(
      getInput(), ranked(getW1()).getDimSize(0) + ranked(getW2()).getDimSize(0),
      getTileN());
}

LogicalResult GemmSwiGLUFP8Op::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  auto wg = ranked(getWGate());
  int64_t n = wg.getDimSize(0);
  if (wg.getRank() != 2 || ranked(getWUp()).getShape() != wg.getShape() ||
      wg.getDimSize(1) != lastDim(getInput()) || lastDim(getResult()) != n ||
      ranked(getWorkspace()).getShape() != ranked(getResult()).getShape())
    return emitOpError("w_gate and w_up must be [N, K] with the input's K; "
                       "result and workspace [M, N]");
  if (getTileN() % getAct() != 0 && getTileN() < n)
    return emitOpError("tile_n must be a multiple of act or cover the row");
  if (failed(verifyWeightScale(*this, getWGate(), getWGateScale(),
                               getWeightBlockN(), getAct(), "w_gate")) ||
      failed(verifyWeightScale(*this, getWUp(), getWUpScale(),
                               getWeightBlockN(), getAct(), "w_up")))
    return failure();
  return success();
}
std::string GemmSwiGLUFP8Op::getKernelName() {
  return fp8GemmName("gemm_swiglu_fp8", *this, getWGate(), getTileN(),
                     getAct(), getWeightBlockN());
}
std::string GemmSwiGLUFP8Op::getTileConfig() {
  return llvm::formatv("program=row x {0} cols; tile_n={0}; act {1}",
                       getTileN(), getAct());
}
int64_t GemmSwiGLUFP8Op::getTokenRows() { return rows(getInput()); }
int64_t GemmSwiGLUFP8Op::getNumPrograms() {
  return rowTilePrograms(getInput(), ranked(getWGate()).getDimSize(0),
                         getTileN());
}

LogicalResult MoEUpFP8Op::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  int64_t f = ranked(getWGate()).getDimSize(1);
  if (getTileF() % getAct() != 0 && getTileF() < f)
    return emitOpError("tile_f must be a multiple of act or cover the row");
  return verifyGrouped(*this, getSortedToken(), getBlockExpert(), getBlockM(),
                       rows(getResult()));
}
std::string MoEUpFP8Op::getKernelName() {
  auto wg = ranked(getWGate());
  return llvm::formatv("moe_up_fp8_d{0}_f{1}_bm{2}_tf{3}_a{4}{5}",
                       wg.getDimSize(2), wg.getDimSize(1), getBlockM(),
                       getTileF(), getAct(), typeSig(*this));
}
OperandValueRange MoEUpFP8Op::getOperandValueRange(unsigned operand) {
  return groupedLayoutRange(*this, operand, getSortedToken(),
                            rows(getInputQ()), getBlockExpert(),
                            ranked(getWGate()).getDimSize(0));
}
std::string MoEUpFP8Op::getTileConfig() {
  return groupedTileConfig(getBlockM(), "tile_f", getTileF(), getAct());
}
int64_t MoEUpFP8Op::getNumPrograms() {
  return groupedPrograms(getBlockExpert(),
                         ranked(getWGate()).getDimSize(1), getTileF());
}

LogicalResult MoEDownFP8Op::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  if (!elem(getResult()).isF32())
    return emitOpError("result must be f32 [rows, hidden]");
  return verifyGrouped(*this, getSortedToken(), getBlockExpert(), getBlockM(),
                       rows(getResult()));
}
std::string MoEDownFP8Op::getKernelName() {
  auto wd = ranked(getWDown());
  return llvm::formatv("moe_down_fp8_d{0}_f{1}_bm{2}_td{3}_a{4}{5}",
                       wd.getDimSize(1), wd.getDimSize(2), getBlockM(),
                       getTileD(), getAct(), typeSig(*this));
}
OperandValueRange MoEDownFP8Op::getOperandValueRange(unsigned operand) {
  return groupedLayoutRange(*this, operand, getSortedToken(), 0,
                            getBlockExpert(),
                            ranked(getWDown()).getDimSize(0));
}
std::string MoEDownFP8Op::getTileConfig() {
  return groupedTileConfig(getBlockM(), "tile_d", getTileD(), getAct());
}
int64_t MoEDownFP8Op::getNumPrograms() {
  return groupedPrograms(getBlockExpert(),
                         ranked(getWDown()).getDimSize(1), getTileD());
}

//===----------------------------------------------------------------------===//
// view
//===----------------------------------------------------------------------===//

LogicalResult ViewOp::verify() {
  if (failed(verifyStatic(*this)))
    return failure();
  // A view reinterprets its input's memory, all of it or a prefix (the
  // first positions of a batch-1 cache).
  if (numel(getResult()) > numel(getInput()) ||
      elem(getInput()) != elem(getResult()))
    return emitOpError("a view keeps the element type and at most the "
                       "element count");
  return success();
}

#define GET_OP_CLASSES
#include "kernel/IR/KernelOps.cpp.inc"
