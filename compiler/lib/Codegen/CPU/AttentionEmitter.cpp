//===- AttentionEmitter.cpp - Flash-style attention on AVX-512 ------------===//
//
// The optimized CPU emitter of `attention` (GQA), `mla_attention` /
// `mla_attention_quant` (MLA absorbed: W_UK folded into the query,
// attention over the latent cache) and `mla_naive` (MLA over per-head keys
// and values materialized by a GEMM).
//
// The entry keeps the reference's ABI and program space (pid = (b * seq +
// s) * heads + h) and computes its range [begin, end) as *blocks of query
// rows that read the same key and value rows*: the heads of one KV group
// (GQA; for MLA absorbed every head, since all heads read the same latent
// rows) at up to `sq` consecutive positions, at most 16 rows, restricted to
// the programs inside the range. A block walks its keys once, in blocks of
// 16 keys, up to the largest key limit of its rows (each row's limit is the
// reference's keyLimit: start + s + 1 when causal):
//
//   1. the 16 key rows (and value rows) are widened to f32 once into a
//      stack buffer (bf16 by a 16-bit shift, f16 by vcvtph2ps, the FP8
//      latent cache's e4m3 decoded and times its tile's scale), each key
//      segment padded with zeros to 16 lanes (MLA: latent then rope key);
//   2. per row, 16 zmm accumulators of q . k over the head dimension (FMAs,
//      16 lanes), summed across lanes by one transposition tree into a
//      vector of the 16 keys' scores, scaled, keys at or past the row's
//      limit set to -inf; the online softmax per block of keys: block max,
//      alpha = exp(m - m'), p = exp(s - m') with a polynomial exp
//      (VectorBuilder::exp), l = l alpha + sum p;
//   3. per pair of rows, acc = acc alpha + sum_j p_j v_j in register blocks
//      of 2 rows x 8 vectors (128 values), the probabilities broadcast.
//
// Then out = acc / l (GQA, naive), or for MLA out[e] = (W_UV[h, e, :] .
// acc) / l with the same dot-and-transpose reduction, and for
// mla_attention_quant the reference's row quantization. MLA absorbed's
// query q_lat = q_nope W_UK[h] is computed per row in registers, 8 vectors
// of the latent at a time, kv_b widened (or e4m3-decoded and scaled) as it
// is read. Rotations of a fused rope are the reference's scalar code.
//
// Every row's arithmetic is the same whichever rows share its block (its
// scores, masks, rescales and sums never mix lanes of other rows, and the
// key blocks start at 0, or for a split decode at the fixed `half`), so
// outputs do not depend on how the runtime splits the range over threads. A
// row's key blocks past its own limit leave it exactly unchanged (alpha =
// exp(0) = 1, p = 0).
//
//===----------------------------------------------------------------------===//
#include "Emitter.h"
#include "GemmKernels.h"
#include "Vector.h"

#include "kernel/IR/KernelDialect.h"
#include "kernel/IR/KernelParams.h"
#include "kiln/Kernels/Kernels.h"
#include "kiln/Kernels/Program.h"
#include "plan_support.h" // runtime/schema: entry point phase symbols

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "llvm/Support/FormatVariadic.h"

#include <limits>

using namespace mlir;

namespace kiln::cpu {

namespace {

using kernels::ProgramBuilder;

constexpr int64_t kMaxRows = 16;    ///< query rows per block
constexpr int64_t kMaxWidth = 4096; ///< padded key / value row limit
constexpr int64_t kAmxKeys = 32;    ///< keys per block of blockAmx
/// MLA absorbed decode (one position per row) runs in three phases
/// (AttnCodegen::emitRange): a block of heads whose key limit is at least
/// kSplitMinKeys has its keys split into kSplitChunks ranges.
constexpr int64_t kSplitMinKeys = 1024;
constexpr int64_t kSplitChunks = 2;
/// MLA absorbed over the FP8 latent cache on AMX (e4m3 codes, one
/// power-of-two scale s_t per token, no subnormal codes): the staged codes
/// are their values x 2^-120 in bf16 (AttnCodegen::stageFP8Latent), so the
/// queries' latent part is packed x 2^60, each key's latent score tile
/// (the rope part, from the bf16 rope cache, in a tile of its own) x s_t
/// 2^60, the probabilities x s_t 2^60 before their bf16 rounding, and the
/// accumulators (then the true ones x 2^-60) x 2^60 at the end: all exact
/// powers of two, every product a normal fp32 (the tiles flush products
/// below 2^-126: true values below 2^-66 here).
constexpr float kFP8QueryScale = 0x1p60f;

enum class Form { GQA, Naive, Absorbed };

/// What a kernel computes, in the terms of the block loop.
struct AttnSpec {
  Form form = Form::GQA;
  kernels::MLAParams a; ///< AttentionParams part for GQA
  SmallVector<Type> types; ///< element type per buffer
  // Buffers.
  unsigned q = 0;       ///< GQA q / MLA q_nope
  unsigned qRope = 1;   ///< MLA q_rope
  unsigned k = 1, v = 2; ///< GQA k, v; naive kv (k); absorbed latent (k)
  unsigned kRope = 3;   ///< MLA k_rope
  unsigned kvb = 4;     ///< absorbed kv_b
  int kvbScale = -1;    ///< absorbed kv_b block scales
  int latScale = -1;    ///< absorbed: the FP8 latent cache's tile scales
  int start = -1;
  unsigned out = 0;
  int ws = -1; ///< absorbed: the workspace (wsPerRow floats per row)
  int quantQ = -1, quantS = -1;
  // Shapes. Key rows are segment 0 (len0) then segment 1 (len1, MLA's rope
  // key), each padded to 16 lanes.
  int64_t len0 = 0, len1 = 0, dkPad = 0;
  int64_t vLen = 0, vPad = 0; ///< accumulated value row (absorbed: rank)
  int64_t outLen = 0;
  int64_t groupHeads = 1; ///< heads of a block (hc)
  int64_t sq = 1;         ///< positions of a block
  int64_t groups = 1;
  int64_t gqaRatio = 1;

  // Vectors: `lanes` f32 lanes (16: zmm; 8: ymm), as many keys per
  // online-softmax step; value register blocks of 2 rows x accVecs.
  int64_t lanes = 16, accVecs = 8;
  /// MLA absorbed on AMX-BF16 tiles (--cpu-gemm-precision=bf16; bf16
  /// caches, rank and rope dims multiples of 32): AttnCodegen::blockAmx.
  bool amx = false;
  /// MLA absorbed by vdpbf16ps (--cpu-gemm-precision=bf16 on an AVX-512-BF16
  /// target without AMX; bf16 or FP8 latent cache, bf16 rope cache, rank
  /// and rope dims multiples of 32): the f32 form's blocks, the queries,
  /// keys, probabilities and values as bf16 pairs (AttnCodegen::dpScores,
  /// dpAccumulate).
  bool dp = false;
  /// MLA absorbed at one position per row (decode kernels, seq = 1), every
  /// head group full: run in three phases (AttnCodegen::emitRange), long
  /// key ranges split, the staged queries and partial rows in the block's
  /// workspace.
  bool split = false;
  /// MLA absorbed over several positions with an e4m3 kv_b (FP8 prefill):
  /// blocks of one head at up to 16 positions, so that the head's W_UK and
  /// W_UV are decoded once per block (into AttnCodegen::kvbBuf) rather than
  /// once per row.
  bool headMajor = false;

  int64_t pad(int64_t n) const { return (n + lanes - 1) / lanes * lanes; }
  int64_t off1() const { return pad(len0); }
  bool valueIsKey() const { return form == Form::Absorbed; }
  /// Floats of one split chunk's partial state: the block's accumulators
  /// (16 rows of vPad, in the layout of AttnCodegen::acc), then the rows'
  /// running maxima and sums (16 each).
  int64_t splitSlot() const { return 16 * vPad + 2 * 16; }
  int64_t wsPerRow() const {
    return kernels::mlaWorkspacePerProgram(a.seq, a.rank, a.ropeDim);
  }
  /// split: a block's workspace holds its rows' staged queries (groupHeads
  /// rows of dkPad), then kSplitChunks partial states.
  int64_t stagedFloats() const { return groupHeads * dkPad; }
  int64_t rankPad() const { return pad(a.rank); }
};

FailureOr<AttnSpec> specOf(Operation *op, int64_t lanes, std::string &why) {
  AttnSpec s;
  s.lanes = lanes;
  s.accVecs = lanes == 16 ? 8 : 4;
  s.types = kernel::elemTypes(op);
  auto bad = [&](const std::string &w) {
    why = w;
    return failure();
  };
  if (auto at = dyn_cast<kernel::AttentionOp>(op)) {
    s.form = Form::GQA;
    static_cast<kernels::AttentionParams &>(s.a) = kernel::attentionParams(at);
    s.q = 0;
    s.k = 1;
    s.v = 2;
    s.start = s.a.hasStart ? 3 : -1;
    s.out = s.a.hasStart ? 4 : 3;
    s.len0 = s.a.headDim;
    s.vLen = s.a.valueDim;
    s.outLen = s.a.valueDim;
    s.gqaRatio = s.a.heads / s.a.kvHeads;
    // A block's heads lie inside one KV group.
    s.groupHeads = 1;
    for (int64_t d = 1; d <= std::min(s.gqaRatio, kMaxRows); ++d)
      if (s.gqaRatio % d == 0)
        s.groupHeads = d;
  } else if (auto na = dyn_cast<kernel::MLANaiveOp>(op)) {
    s.form = Form::Naive;
    s.a = kernel::mlaNaiveParams(na);
    s.q = 0;
    s.qRope = 1;
    s.k = 2;
    s.kRope = 3;
    s.start = s.a.hasStart ? 4 : -1;
    s.out = s.a.hasStart ? 5 : 4;
    s.len0 = s.a.headDim;
    s.len1 = s.a.ropeDim;
    s.vLen = s.a.valueDim;
    s.outLen = s.a.valueDim;
    s.groupHeads = 1;
  } else if (isa<kernel::MLAAttentionOp, kernel::MLAAttentionQuantOp>(op)) {
    s.form = Form::Absorbed;
    s.a = isa<kernel::MLAAttentionOp>(op)
              ? kernel::mlaParams(cast<kernel::MLAAttentionOp>(op))
              : kernel::mlaQuantParams(cast<kernel::MLAAttentionQuantOp>(op));
    s.q = 0;
    s.qRope = 1;
    s.k = 2;
    s.kRope = 3;
    s.kvb = 4;
    unsigned next = 5;
    if (s.a.kvbScale)
      s.kvbScale = next++;
    if (s.a.latentScale)
      s.latScale = next++;
    if (s.a.hasStart)
      s.start = next++;
    s.out = next;
    s.ws = next + 1;
    if (s.a.quantAct > 0) {
      s.quantQ = next + 2;
      s.quantS = next + 3;
    }
    s.len0 = s.a.rank;
    s.len1 = s.a.ropeDim;
    s.vLen = s.a.rank;
    s.outLen = s.a.valueDim;
    s.groupHeads = std::min(s.a.heads, kMaxRows);
    if (s.kvbScale >= 0 && s.a.seq > 1) {
      s.headMajor = true;
      s.groupHeads = 1;
    }
  } else {
    return bad("not an attention kernel");
  }
  s.dkPad = s.pad(s.len0) + s.pad(s.len1);
  s.vPad = s.pad(s.vLen);
  s.sq = std::max<int64_t>(1, kMaxRows / s.groupHeads);
  s.groups = (s.a.heads + s.groupHeads - 1) / s.groupHeads;
  s.split = s.form == Form::Absorbed && s.a.seq == 1 &&
            s.a.heads % s.groupHeads == 0 &&
            s.groupHeads * s.wsPerRow() >=
                s.stagedFloats() + kSplitChunks * s.splitSlot();
  if (!s.types[s.out].isF32())
    return bad("the output is not f32");
  auto stored = [](Type t) { return isStoredFloat(t); };
  // The FP8 latent cache (e4m3 with tile scales) only on AMX (blockAmx).
  bool fp8Latent = s.latScale >= 0 && isa<Float8E4M3FNType>(s.types[s.k]);
  if (!stored(s.types[s.q]) || (!stored(s.types[s.k]) && !fp8Latent) ||
      (s.form == Form::GQA && !stored(s.types[s.v])) ||
      (s.form != Form::GQA &&
       (!stored(s.types[s.qRope]) || !stored(s.types[s.kRope]))))
    return bad("operands other than f32, bf16 or f16");
  if (s.form == Form::Absorbed) {
    Type w = s.types[s.kvb];
    bool e4m3 = isa<Float8E4M3FNType>(w);
    if (!(stored(w) || (e4m3 && s.kvbScale >= 0)))
      return bad("kv_b is neither f32/bf16/f16 nor scaled e4m3");
  }
  if (s.dkPad > kMaxWidth || s.vPad > kMaxWidth)
    return bad("rows wider than 4096 values");
  return s;
}

class AttnCodegen {
public:
  AttnCodegen(const AttnSpec &spec, OpBuilder &b, Location loc,
              ArrayRef<Value> buffers)
      : s(spec), b(b), loc(loc), p(b, loc), v(b, loc),
        buf(buffers.begin(), buffers.end()), kLanes(spec.lanes),
        kKeyBlock(spec.lanes), kAccVecs(spec.accVecs) {}

  /// Stack buffers, at the start of the helper's entry block.
  void allocate(func::FuncOp fn) {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&fn.getBody().front());
    auto ptrTy = LLVM::LLVMPointerType::get(b.getContext());
    auto alloc = [&](Type t, int64_t n) {
      Value c = LLVM::ConstantOp::create(b, loc, b.getI64Type(),
                                         b.getI64IntegerAttr(n));
      return LLVM::AllocaOp::create(b, loc, ptrTy, t, c, 64).getResult();
    };
    Type f32 = b.getF32Type(), i64 = b.getI64Type();
    qs = alloc(f32, kMaxRows * s.dkPad);
    acc = alloc(f32, kMaxRows * s.vPad);
    if (s.amx) {
      Type i8 = b.getI8Type();
      qt = alloc(i8, s.dkPad / 32 * 1024);
      scoreT = alloc(i8, 2 * 1024);
      if (s.latScale >= 0)
        ropeScoreT = alloc(i8, 2 * 1024);
      probT = alloc(i8, 1024);
      valueT = alloc(i8, 2 * 1024);
      stage = alloc(i8, kAmxKeys * s.dkPad * 2);
      lim32 = alloc(b.getI32Type(), kMaxRows);
    } else {
      kc = alloc(f32, kKeyBlock * s.dkPad);
      vc = s.valueIsKey() ? kc : alloc(f32, kKeyBlock * s.vPad);
      prob = alloc(f32, kMaxRows * kKeyBlock);
      if (s.dp) {
        Type i8 = b.getI8Type();
        qb = alloc(i8, kMaxRows * s.dkPad * 2);
        probB = alloc(i8, kMaxRows * 64);
        vi = alloc(i8, kKeyBlock * s.vPad * 2);
        dots = alloc(i8, kMaxRows * kKeyBlock * 64);
      }
    }
    if (s.a.qRotate)
      rot = alloc(f32, s.sq * s.a.qRope.headDim);
    if (s.headMajor)
      kvbBuf = alloc(f32, std::max(s.a.headDim, s.a.valueDim) * s.rankPad());
    rowM = alloc(f32, kMaxRows);
    rowL = alloc(f32, kMaxRows);
    rowAlpha = alloc(f32, kMaxRows);
    rowPid = alloc(i64, kMaxRows);
    rowS = alloc(i64, kMaxRows);
    rowH = alloc(i64, kMaxRows);
    rowLim = alloc(i64, kMaxRows);
  }

  /// Programs [begin, end) as blocks of rows; for a split kernel, phase
  /// `phase` of three, each run over every range before the next starts
  /// (CpuEmitter::phases), so that no program ever waits for another:
  ///   0. the range's rows' queries absorbed (stageQuery: q_nope W_UK) into
  ///      the block's workspace;
  ///   1. a block of at least kSplitMinKeys keys: its keys split at `half`
  ///      (a multiple of 32, about lim / 2) into chunk 0 = [0, half) and
  ///      chunk 1 = [half, lim), chunk c run for all the block's rows by
  ///      whichever range holds program pid0 + c * groupHeads / 2 (two
  ///      threads splitting the heads take one chunk each), its
  ///      accumulators, maxima and sums left in the block's slot c; a
  ///      shorter block: the range's rows over all keys, finished;
  ///   2. a split block's rows of the range merged in a fixed order, M =
  ///      max(m0, m1), e_c = exp(m_c - M), acc = acc0 e0 + acc1 e1, l = l0
  ///      e0 + l1 e1, and finished (W_UV acc / l).
  /// The same arithmetic however the runtime splits the programs.
  void emitRange(Value begin, Value end, unsigned phase = 0) {
    const kernels::MLAParams &a = s.a;
    Value one = p.i64(1), cH = p.i64(a.heads), cSeq = p.i64(a.seq);
    Value bsFirst = p.divs(begin, cH);
    Value bsLast = p.divs(sub(end, one), cH);
    Value bFirst = p.divs(bsFirst, cSeq), bLast = p.divs(bsLast, cSeq);
    p.forLoop(bFirst, p.add(bLast, one), one, [&](Value bi) {
      Value bs0 = p.mul(bi, cSeq);
      Value sBegin = p.select(p.eq(bi, bFirst), sub(bsFirst, bs0), p.i64(0));
      Value sEnd = p.select(p.eq(bi, bLast), p.add(sub(bsLast, bs0), one),
                            cSeq);
      Value start = s.start >= 0
                        ? p.load(buf[s.start], s.types[s.start], bi)
                        : p.i64(0);
      p.forLoop(sBegin, sEnd, p.i64(s.sq), [&](Value s0) {
        Value s1 = p.minI(p.add(s0, p.i64(s.sq)), sEnd);
        // Every head group of these positions rotates with the same table
        // (queries are staged in phase 0 only).
        if (s.a.qRotate && (!s.split || phase == 0))
          rotationTables(start, s0, s1);
        p.forLoop(p.i64(0), p.i64(s.groups), one, [&](Value g) {
          // The range's rows of the group over all their keys, finished;
          // `prepare` first (the split kernel's staged queries into qs).
          auto whole = [&](function_ref<void(Value)> prepare = {}) {
            Value rows = collectRows(begin, end, bi, s0, s1, g);
            p.ifThen(p.lt(p.i64(0), rows), [&] {
              if (prepare)
                prepare(rows);
              if (s.amx)
                blockAmx(bi, start, rows, s0);
              else
                block(bi, g, start, rows, s0, s1);
            });
          };
          if (!s.split) {
            whole();
            return;
          }
          // seq = 1: every row of the block sees the same keys.
          Value lim = keyLimit(start, p.i64(0));
          Value cut = p.lt(p.i64(kSplitMinKeys - 1), lim);
          Value pid0 =
              p.add(p.mul(bi, p.i64(s.a.heads)), p.mul(g, p.i64(s.groupHeads)));
          Value wsBase = p.mul(pid0, p.i64(s.wsPerRow()));
          if (phase == 0) {
            stageRows(begin, end, bi, g, start, pid0, wsBase);
            return;
          }
          if (phase == 2) {
            p.ifThen(cut, [&] { mergeRows(begin, end, bi, g, pid0, wsBase); });
            return;
          }
          auto ifOp = scf::IfOp::create(b, loc, cut, /*withElse=*/true);
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(ifOp.thenBlock());
          splitBlock(begin, end, bi, g, start, lim, pid0, wsBase);
          b.setInsertionPointToStart(ifOp.elseBlock());
          whole([&](Value rows) { loadStaged(rows, pid0, wsBase); });
        });
      });
    });
  }

private:
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value maxI(Value x, Value y) { return arith::MaxSIOp::create(b, loc, x, y); }
  Type f32() { return b.getF32Type(); }
  Type i64() { return b.getI64Type(); }
  Value vload(Value ptr, Value idx) { return v.load(ptr, f32(), idx, kLanes); }
  void vstore(Value x, Value ptr, Value idx) { v.store(x, ptr, f32(), idx); }
  Value zeros() { return v.splat(0.0f, kLanes); }

  /// Stores the first `active` lanes of `x` to f32 buffer `ptr` at `idx`.
  void storeActive(Value x, Value ptr, Value idx, int64_t active) {
    if (active >= kLanes) {
      vstore(x, ptr, idx);
      return;
    }
    SmallVector<bool> bits(kLanes, false);
    for (int64_t i = 0; i < active; ++i)
      bits[i] = true;
    auto mt = VectorType::get({kLanes}, b.getI1Type());
    Value mask =
        arith::ConstantOp::create(b, loc, DenseElementsAttr::get(mt, bits));
    auto ptrTy = LLVM::LLVMPointerType::get(b.getContext());
    Value addr =
        LLVM::GEPOp::create(b, loc, ptrTy, f32(), ptr, ValueRange{idx});
    LLVM::MaskedStoreOp::create(b, loc, x, addr, mask, 4);
  }

  /// Rows (s, h) of positions [s0, s1) and head group g whose programs are
  /// in [begin, end), into the row tables; returns their count.
  Value collectRows(Value begin, Value end, Value bi, Value s0, Value s1,
                    Value g) {
    const kernels::MLAParams &a = s.a;
    Value one = p.i64(1);
    return p.forLoop(
        s0, s1, one, ValueRange{p.i64(0)},
        [&](Value si, ValueRange it) {
          return SmallVector<Value>{p.forLoop(
              p.i64(0), p.i64(s.groupHeads), one, ValueRange{it[0]},
              [&](Value hh, ValueRange it2) {
                Value h = p.add(p.mul(g, p.i64(s.groupHeads)), hh);
                Value pid = p.add(
                    p.mul(p.add(p.mul(bi, p.i64(a.seq)), si), p.i64(a.heads)),
                    h);
                Value ok = p.andI(
                    p.andI(p.lt(h, p.i64(a.heads)),
                           p.lt(pid, end)),
                    arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge,
                                          pid, begin));
                p.ifThen(ok, [&] {
                  p.storeInt(pid, rowPid, i64(), it2[0]);
                  p.storeInt(si, rowS, i64(), it2[0]);
                  p.storeInt(h, rowH, i64(), it2[0]);
                });
                return SmallVector<Value>{
                    p.select(ok, p.add(it2[0], one), it2[0])};
              })[0]};
        })[0];
  }

  /// Number of keys the query at position s sees (the reference's keyLimit).
  Value keyLimit(Value start, Value si) {
    const kernels::MLAParams &a = s.a;
    Value kv = p.i64(a.kvLen);
    if (a.causal)
      return p.minI(p.add(p.add(start, si), p.i64(1)), kv);
    if (a.hasStart)
      return p.minI(p.add(start, p.i64(a.seq)), kv);
    return kv;
  }

  /// Element offsets of key row j's segments and of its value row, and its
  /// token (the row of the batch's cache: bi x kvLen + j).
  struct KeyRow {
    Value seg0, seg1, value, tok;
  };
  KeyRow keyRow(Value bi, Value g, Value j) {
    const kernels::MLAParams &a = s.a;
    Value tok = p.add(p.mul(bi, p.i64(a.kvLen)), j);
    KeyRow r;
    r.tok = tok;
    switch (s.form) {
    case Form::GQA: {
      Value kvh = p.divs(p.mul(g, p.i64(s.groupHeads)), p.i64(s.gqaRatio));
      Value row = p.add(p.mul(tok, p.i64(a.kvHeads)), kvh);
      r.seg0 = p.mul(row, p.i64(a.headDim));
      r.value = p.mul(row, p.i64(a.valueDim));
      break;
    }
    case Form::Naive: {
      // One head per group (groupHeads = 1): h = g.
      Value row = p.add(p.mul(tok, p.i64(a.heads)), g);
      r.seg0 = p.mul(row, p.i64(a.headDim + a.valueDim));
      r.seg1 = p.mul(tok, p.i64(a.ropeDim));
      r.value = p.add(r.seg0, p.i64(a.headDim));
      break;
    }
    case Form::Absorbed:
      r.seg0 = p.mul(tok, p.i64(a.rank));
      r.seg1 = p.mul(tok, p.i64(a.ropeDim));
      break;
    }
    return r;
  }

  /// Widens `len` elements of `src` (of `type`) from `srcIdx` into f32 at
  /// `dst` + dstIdx, zero-padded to 16 lanes.
  void widenRow(Value src, Type type, Value srcIdx, int64_t len, Value dst,
                Value dstIdx) {
    for (int64_t c = 0; c < len; c += kLanes) {
      int64_t active = std::min(kLanes, len - c);
      Value x = v.load(src, type, p.add(srcIdx, p.i64(c)), kLanes,
                       active < kLanes ? active : -1);
      vstore(x, dst, p.add(dstIdx, p.i64(c)));
    }
  }

  /// The FP8 latent cache's scale of token `tok`'s tile `tile`.
  Value latentTileScale(Value tok, int64_t tile) {
    return p.load(buf[s.latScale], f32(),
                  p.add(p.mul(tok, p.i64(s.a.latentTiles)), p.i64(tile)));
  }

  /// The FP8 latent cache's row of token `tok` (e4m3 codes from `srcIdx`)
  /// dequantized into kc at dstIdx: each code decoded exactly
  /// (VectorBuilder::decodeE4M3) and multiplied by its tile's scale, once
  /// per key block for all its rows; the scores and values that follow are
  /// the f32 form's over those values. Tiles are whole vectors (specOf).
  void widenFP8Latent(Value tok, Value srcIdx, Value dstIdx) {
    const kernels::MLAParams &a = s.a;
    int64_t tileW = a.rank / a.latentTiles;
    Value scale;
    for (int64_t c = 0; c < a.rank; c += kLanes) {
      if (c % tileW == 0)
        scale = v.broadcast(latentTileScale(tok, c / tileW), kLanes);
      Value x = v.load(buf[s.k], s.types[s.k], p.add(srcIdx, p.i64(c)), kLanes);
      vstore(v.mul(x, scale), kc, p.add(dstIdx, p.i64(c)));
    }
  }

  /// Copies (rotating when the kernel fuses rope) a query segment of `len`
  /// elements into qs at qIdx.
  void stageSegment(Value src, Type type, Value srcIdx, int64_t len,
                    Value qIdx, bool rotate, const kernels::RopeParams &rope,
                    Value start, Value si) {
    if (!rotate) {
      widenRow(src, type, srcIdx, len, qs, qIdx);
      return;
    }
    // The reference's rotation with the block's cos / sin table of this
    // position (rotationTables): the same f32 products and sums.
    Value tab = p.mul(sub(si, blockS0), p.i64(rope.headDim));
    int64_t half = rope.rotaryDim / 2;
    p.forLoop(p.i64(0), p.i64(half), p.i64(1), [&](Value i) {
      Value ia = rope.interleaved ? p.mul(i, p.i64(2)) : i;
      Value ib = rope.interleaved ? p.add(ia, p.i64(1)) : p.add(i, p.i64(half));
      Value c = p.load(rot, f32(), p.add(tab, ia));
      Value sn = p.load(rot, f32(), p.add(tab, ib));
      Value xa = p.load(src, type, p.add(srcIdx, ia));
      Value xb = p.load(src, type, p.add(srcIdx, ib));
      p.store(p.fsub(p.fmul(xa, c), p.fmul(xb, sn)), qs, f32(),
              p.add(qIdx, ia));
      p.store(p.fadd(p.fmul(xb, c), p.fmul(xa, sn)), qs, f32(),
              p.add(qIdx, ib));
    });
    p.forLoop(p.i64(rope.rotaryDim), p.i64(len), p.i64(1), [&](Value d) {
      p.store(p.load(src, type, p.add(srcIdx, d)), qs, f32(), p.add(qIdx, d));
    });
  }

  /// Per position s0 + t of the block, t < s1 - s0: the cos / sin of every
  /// rotary pair (cos at the pair's first element, sin at its second), as
  /// the reference computes them: its own rotation applied to the pairs
  /// (1, 0), which gives (1 c - 0 s, 0 c + 1 s) = (c, s) exactly. Computed
  /// once per run of positions for all its head groups, rather than once
  /// per row (libm's f64 cos and sin).
  void rotationTables(Value start, Value s0, Value s1) {
    const kernels::RopeParams &rope = s.a.qRope;
    int64_t half = rope.rotaryDim / 2;
    p.forLoop(s0, s1, p.i64(1), [&](Value si) {
      Value tab = p.mul(sub(si, s0), p.i64(rope.headDim));
      Value pos = p.sitofp(p.add(start, si), b.getF64Type());
      kernels::emitRotation(
          p, rope, pos,
          [&](Value i) {
            Value first = rope.interleaved
                              ? p.eq(p.rems(i, p.i64(2)), p.i64(0))
                              : p.lt(i, p.i64(half));
            return p.select(first, p.f32(1.0f), p.f32(0.0f));
          },
          [&](Value i, Value x) { p.store(x, rot, f32(), p.add(tab, i)); });
    });
  }

  /// kv_b[row, col .. col + 16) as f32 (dequantized by its block scale;
  /// col a multiple of 16), only the first `active` lanes read.
  Value kvbVector(Value row, Value col, int64_t active) {
    const kernels::MLAParams &a = s.a;
    if (kvbRow0)
      return v.load(kvbBuf, f32(),
                    p.add(p.mul(sub(row, kvbRow0), p.i64(s.rankPad())), col),
                    kLanes, active < kLanes ? active : -1);
    if (s.kvbScale < 0)
      return v.load(buf[s.kvb], s.types[s.kvb],
                    p.add(p.mul(row, p.i64(a.rank)), col), kLanes,
                    active < kLanes ? active : -1);
    return v.mul(kvbUnscaled(row, col, active),
                 v.broadcast(kvbBlockScale(row, col), kLanes));
  }

  /// An e4m3 kv_b's [row, col .. col + 16) through f16, x 2^-8 and not yet
  /// scaled (kvbVector = this x kvbBlockScale). The compiler refuses
  /// weights with NaN codes, which this reads as finite.
  Value kvbUnscaled(Value row, Value col, int64_t active) {
    Value idx = p.add(p.mul(row, p.i64(s.a.rank)), col);
    Value raw = v.loadRaw(buf[s.kvb], s.types[s.kvb], idx, kLanes,
                          active < kLanes ? active : -1);
    return arith::ExtFOp::create(b, loc, v.f32Vec(kLanes),
                                 v.e4m3ToF16Scaled(raw));
  }

  /// Whether an e4m3 kv_b has every head's rows [first, first + n) in one
  /// 128-row scale block (DeepSeek's 128 + 128 rows per head), so that one
  /// scale covers each 128 of their columns.
  bool kvbRowsShareScale(int64_t first, int64_t n) const {
    return s.kvbScale >= 0 && !kvbRow0 &&
           (s.a.headDim + s.a.valueDim) % 128 == 0 &&
           first / 128 == (first + n - 1) / 128;
  }

  /// The scale of kv_b's 128 x 128 block holding [row, col], x 2^8.
  Value kvbBlockScale(Value row, Value col) {
    int64_t colBlocks = (s.a.rank + 127) / 128;
    Value blk = p.add(p.mul(p.divs(row, p.i64(128)), p.i64(colBlocks)),
                      p.divs(col, p.i64(128)));
    return p.fmul(p.load(buf[s.kvbScale], f32(), blk), p.f32(256.0f));
  }

  /// headMajor: rows [first, first + n) of head h's part of kv_b (W_UK:
  /// 0, headDim; W_UV: headDim, valueDim) dequantized into kvbBuf, which
  /// kvbVector then reads: the same f32 values it computes from kv_b.
  void loadHeadRows(Value h, int64_t first, int64_t n) {
    const kernels::MLAParams &a = s.a;
    kvbRow0 = {};
    Value row0 = p.add(p.mul(h, p.i64(a.headDim + a.valueDim)), p.i64(first));
    p.forLoop(p.i64(0), p.i64(n), p.i64(1), [&](Value d) {
      Value dst = p.mul(d, p.i64(s.rankPad()));
      for (int64_t c = 0; c < a.rank; c += kLanes)
        vstore(kvbVector(p.add(row0, d), p.i64(c),
                         std::min(kLanes, a.rank - c)),
               kvbBuf, p.add(dst, p.i64(c)));
    });
    kvbRow0 = row0;
  }

  /// Row r's query (f32, zero-padded) into qs[r].
  void stageQuery(Value r, Value pid, Value si, Value h, Value start) {
    const kernels::MLAParams &a = s.a;
    Value qIdx = p.mul(r, p.i64(s.dkPad));
    for (int64_t c = 0; c < s.dkPad; c += kLanes)
      vstore(zeros(), qs, p.add(qIdx, p.i64(c)));
    if (s.form == Form::GQA) {
      stageSegment(buf[s.q], s.types[s.q], p.mul(pid, p.i64(a.headDim)),
                   a.headDim, qIdx, a.qRotate, a.qRope, start, si);
      return;
    }
    // MLA: q_rope (strided in q itself, rotated when rope is fused) after
    // segment 0.
    Value ropeSrc = a.qRopeStride ? p.add(p.mul(pid, p.i64(a.qRopeStride)),
                                          p.i64(a.qRopeOffset))
                                  : p.mul(pid, p.i64(a.ropeDim));
    stageSegment(buf[s.qRope], s.types[s.qRope], ropeSrc, a.ropeDim,
                 p.add(qIdx, p.i64(s.off1())), a.qRotate, a.qRope, start, si);
    Value qnBase =
        p.mul(pid, p.i64(a.qNopeStride ? a.qNopeStride : a.headDim));
    if (s.form == Form::Naive) {
      widenRow(buf[s.q], s.types[s.q], qnBase, a.headDim, qs, qIdx);
      return;
    }
    // Absorbed: q_lat[c] = sum_d q_nope[d] W_UK[h, d, c], 8 vectors of c at
    // a time over the whole of d. An e4m3 W_UK whose head's rows lie in one
    // 128-row scale block (DeepSeek's 128 + 128 rows per head) has one scale
    // per 128 of c: the sums of the unscaled values, then that scale once.
    Value headRow = p.mul(h, p.i64(a.headDim + a.valueDim));
    bool oneScale = kvbRowsShareScale(0, a.headDim);
    for (int64_t c0 = 0; c0 < a.rank; c0 += 8 * kLanes) {
      int64_t nv = std::min<int64_t>(8, (a.rank - c0 + kLanes - 1) / kLanes);
      SmallVector<Value> init(nv, zeros());
      auto weights = [&](Value row, int64_t k) {
        int64_t c = c0 + k * kLanes, active = std::min(kLanes, a.rank - c);
        return oneScale ? kvbUnscaled(row, p.i64(c), active)
                        : kvbVector(row, p.i64(c), active);
      };
      SmallVector<Value> sums = p.forLoop(
          p.i64(0), p.i64(a.headDim), p.i64(1), init,
          [&](Value d, ValueRange it) {
            Value x = v.broadcast(
                p.load(buf[s.q], s.types[s.q], p.add(qnBase, d)), kLanes);
            Value row = p.add(headRow, d);
            SmallVector<Value> next;
            for (int64_t k = 0; k < nv; ++k)
              next.push_back(v.fma(x, weights(row, k), it[k]));
            return next;
          });
      Value scale = oneScale
                        ? v.broadcast(kvbBlockScale(headRow, p.i64(c0)), kLanes)
                        : Value();
      for (int64_t k = 0; k < nv; ++k)
        vstore(oneScale ? v.mul(sums[k], scale) : sums[k], qs,
               p.add(qIdx, p.i64(c0 + k * kLanes)));
    }
  }

  /// A vector whose lane i is the sum of the lanes of in[i] (16 vectors):
  /// a tree of two-source shuffles and adds (30 shuffles, 15 adds). The
  /// same tree for every lane, whatever the other lanes hold.
  Value transposeReduce(ArrayRef<Value> in) {
    assert(int64_t(in.size()) == kLanes && "one vector per lane");
    // Which input each output lane ends up summing, simulated once.
    SmallVector<SmallVector<int64_t>> label;
    for (int64_t i = 0; i < kLanes; ++i)
      label.push_back(SmallVector<int64_t>(kLanes, i));
    auto masks = [&](int64_t w, SmallVector<int64_t> &lo,
                    SmallVector<int64_t> &hi) {
      lo.clear();
      hi.clear();
      for (int64_t l = 0; l < kLanes; ++l) {
        int64_t q = l % (2 * w), base = l - q;
        lo.push_back(q < w ? base + q : kLanes + base + q - w);
        hi.push_back(q < w ? base + q + w : kLanes + base + q);
      }
    };
    SmallVector<int64_t> lo, hi;
    for (int64_t w = kLanes / 2; w >= 1; w /= 2) {
      masks(w, lo, hi);
      SmallVector<SmallVector<int64_t>> next;
      for (size_t i = 0; i + 1 < label.size(); i += 2) {
        SmallVector<int64_t> l(kLanes);
        for (int64_t j = 0; j < kLanes; ++j)
          l[j] = lo[j] < kLanes ? label[i][lo[j]] : label[i + 1][lo[j] - kLanes];
        next.push_back(l);
      }
      label = std::move(next);
    }
    // Lane j sums input label[0][j]: place in[j] there.
    SmallVector<Value> cur(kLanes);
    for (int64_t j = 0; j < kLanes; ++j)
      cur[label[0][j]] = in[j];
    for (int64_t w = kLanes / 2; w >= 1; w /= 2) {
      masks(w, lo, hi);
      SmallVector<Value> next;
      for (size_t i = 0; i + 1 < cur.size(); i += 2) {
        Value x = vector::ShuffleOp::create(b, loc, cur[i], cur[i + 1], lo);
        Value y = vector::ShuffleOp::create(b, loc, cur[i], cur[i + 1], hi);
        next.push_back(v.add(x, y));
      }
      cur = std::move(next);
    }
    return cur[0];
  }

  /// 16 dot products: lane i = sum_c x(c) . y(i, c, 16) over `chunks`
  /// vectors, then, when `tail` > 0, one more chunk of which y reads
  /// `tail` lanes; each accumulated in c order, then transposeReduce.
  Value dots16(int64_t chunks, int64_t tail, function_ref<Value(Value)> x,
               function_ref<Value(int64_t, Value, int64_t)> y) {
    SmallVector<Value> init(kLanes, zeros());
    auto step = [&](Value c, ValueRange it, int64_t active) {
      Value xv = x(c);
      SmallVector<Value> next;
      for (int64_t i = 0; i < kLanes; ++i)
        next.push_back(v.fma(xv, y(i, c, active), it[i]));
      return next;
    };
    SmallVector<Value> sums;
    if (chunks <= 8) {
      sums = init;
      for (int64_t c = 0; c < chunks; ++c)
        sums = step(p.i64(c), sums, kLanes);
    } else {
      sums = p.forLoop(p.i64(0), p.i64(chunks), p.i64(1), init,
                       [&](Value c, ValueRange it) {
                         return step(c, it, kLanes);
                       });
    }
    if (tail > 0)
      sums = step(p.i64(chunks), sums, tail);
    return transposeReduce(sums);
  }

  //===------------------------------------------------------------------===//
  // dp: MLA absorbed by vdpbf16ps (AttnSpec::dp)
  //===------------------------------------------------------------------===//

  VectorType i16x32() { return VectorType::get({32}, b.getI16Type()); }

  /// The block's staged queries (qs, f32) rounded to bf16 into qb, once
  /// per block.
  void dpPackQueries(Value rows) {
    p.forLoop(p.i64(0), rows, p.i64(1), [&](Value r) {
      Value base = p.mul(r, p.i64(s.dkPad));
      for (int64_t c = 0; c < s.dkPad; c += 32) {
        Value x = v.concat(vload(qs, p.add(base, p.i64(c))),
                           vload(qs, p.add(base, p.i64(c + 16))));
        v.storeBits(arith::TruncFOp::create(b, loc, v.bf16Pairs(), x), qb,
                    p.mul(p.add(base, p.i64(c)), p.i64(2)));
      }
    });
    // dpScores reads whole quads of rows: the rest of the last one zero.
    Value zeroBits = v.splatInt(i16x32(), 0);
    Value quadEnd = p.mul(p.divs(p.add(rows, p.i64(3)), p.i64(4)), p.i64(4));
    p.forLoop(rows, quadEnd, p.i64(1), [&](Value r) {
      for (int64_t c = 0; c < s.dkPad; c += 32)
        v.storeBits(zeroBits, qb,
                    p.mul(p.add(p.mul(r, p.i64(s.dkPad)), p.i64(c)), p.i64(2)));
    });
  }

  /// Keys [j0, j0 + nk) of batch bi as bf16 rows of kc (latent, then rope
  /// key; dkPad values each), rows nk..15 zero: bf16 caches copied, the
  /// FP8 latent decoded and scaled (exact in bf16: 4 significant bits
  /// times a power of two).
  void dpStageKeys(Value bi, Value j0, Value nk) {
    const kernels::MLAParams &a = s.a;
    Value zero = p.i64(0), one = p.i64(1);
    auto byteAt = [&](Value jj, int64_t c) {
      return p.mul(p.add(p.mul(jj, p.i64(s.dkPad)), p.i64(c)), p.i64(2));
    };
    p.forLoop(zero, nk, one, [&](Value jj) {
      // g: the absorbed form's one group.
      KeyRow kr = keyRow(bi, zero, p.add(j0, jj));
      if (s.latScale >= 0) {
        // code x 2^-120 (fp8LatentBits) widened, x 2^120, x its tile's
        // scale: exact, then exact in bf16 (4 significant bits).
        int64_t tileW = a.rank / a.latentTiles;
        SmallVector<Value> tileScales(a.latentTiles);
        auto scale = [&](int64_t c) {
          Value &sc = tileScales[c / tileW];
          if (!sc)
            sc = v.broadcast(latentTileScale(kr.tok, c / tileW), 16);
          return sc;
        };
        auto f32x32 = VectorType::get({32}, f32());
        for (int64_t c = 0; c < a.rank; c += 32) {
          Value x = arith::ExtFOp::create(
              b, loc, f32x32,
              vector::BitCastOp::create(b, loc, v.bf16Pairs(),
                                        fp8LatentBits(p.add(kr.seg0, p.i64(c))))
                  .getResult());
          Value sc = tileW % 32 == 0 ? v.concat(scale(c), scale(c))
                                     : v.concat(scale(c), scale(c + 16));
          x = v.mul(v.mul(x, v.splat(0x1p120f, 32)), sc);
          v.storeBits(arith::TruncFOp::create(b, loc, v.bf16Pairs(), x), kc,
                      byteAt(jj, c));
        }
      } else {
        for (int64_t c = 0; c < a.rank; c += 32)
          v.storeBits(
              v.loadRaw(buf[s.k], s.types[s.k], p.add(kr.seg0, p.i64(c)), 32),
              kc, byteAt(jj, c));
      }
      for (int64_t c = 0; c < a.ropeDim; c += 32)
        v.storeBits(v.loadRaw(buf[s.kRope], s.types[s.kRope],
                              p.add(kr.seg1, p.i64(c)), 32),
                    kc, byteAt(jj, a.rank + c));
    });
    Value zeroBits = v.splatInt(i16x32(), 0);
    p.forLoop(nk, p.i64(kKeyBlock), one, [&](Value jj) {
      for (int64_t c = 0; c < s.dkPad; c += 32)
        v.storeBits(zeroBits, kc, byteAt(jj, c));
    });
  }

  /// The scores of rows [0, rows) against kc's 16 keys, row r's vector of
  /// 16 into prob[r] (scoreRow reads it there): register blocks of 4 rows x
  /// 4 keys, 16 vdpbf16ps accumulators over the dkPad / 32 pairs of 16
  /// lanes (8 loads per 16 products), left in dots (row r, key j: vector r
  /// * 16 + j); then per row the transposition tree over its 16.
  void dpScores(Value rows) {
    Value zero = p.i64(0), one = p.i64(1);
    auto f32x16 = v.f32Vec(16);
    Value quads = p.divs(p.add(rows, p.i64(3)), p.i64(4));
    p.forLoop(zero, quads, one, [&](Value qd) {
      Value r0 = p.mul(qd, p.i64(4));
      for (int64_t g = 0; g < kKeyBlock; g += 4) {
        SmallVector<Value> init(16, zeros());
        SmallVector<Value> sums = p.forLoop(
            zero, p.i64(s.dkPad / 32), one, init, [&](Value c, ValueRange it) {
              Value off = p.mul(c, p.i64(64));
              SmallVector<Value> xs, ys, next;
              for (int64_t i = 0; i < 4; ++i)
                xs.push_back(v.loadBits(
                    qb,
                    p.add(p.mul(p.add(r0, p.i64(i)), p.i64(s.dkPad * 2)), off),
                    v.bf16Pairs()));
              for (int64_t j = 0; j < 4; ++j)
                ys.push_back(
                    v.loadBits(kc, p.add(p.i64((g + j) * s.dkPad * 2), off),
                               v.bf16Pairs()));
              for (int64_t i = 0; i < 4; ++i)
                for (int64_t j = 0; j < 4; ++j)
                  next.push_back(v.dpbf16(it[i * 4 + j], xs[i], ys[j]));
              return next;
            });
        for (int64_t i = 0; i < 4; ++i)
          for (int64_t j = 0; j < 4; ++j)
            v.storeBits(sums[i * 4 + j], dots,
                        p.mul(p.add(p.mul(p.add(r0, p.i64(i)), p.i64(16)),
                                    p.i64(g + j)),
                              p.i64(64)));
      }
    });
    p.forLoop(zero, rows, one, [&](Value r) {
      SmallVector<Value> in;
      for (int64_t j = 0; j < kKeyBlock; ++j)
        in.push_back(v.loadBits(
            dots, p.mul(p.add(p.mul(r, p.i64(16)), p.i64(j)), p.i64(64)),
            f32x16));
      vstore(transposeReduce(in), prob, p.mul(r, p.i64(kKeyBlock)));
    });
  }

  /// kc's latent rows (the values) by key pairs into vi: pair jp's chunk k
  /// (64 bytes at (jp * vPad / 16 + k) * 64) holds (v_2jp[e], v_2jp+1[e])
  /// for the 16 values e of chunk k, vdpbf16ps's pairs.
  void dpInterleaveValues(Value nk) {
    int64_t chunks = s.vPad / 16;
    SmallVector<int64_t> lo, hi;
    for (int64_t e = 0; e < 16; ++e) {
      lo.append({e, 32 + e});
      hi.append({16 + e, 48 + e});
    }
    Value pairs = p.divs(p.add(nk, p.i64(1)), p.i64(2));
    p.forLoop(p.i64(0), pairs, p.i64(1), [&](Value jp) {
      Value even = p.mul(p.mul(jp, p.i64(2 * s.dkPad)), p.i64(2));
      Value odd = p.add(even, p.i64(s.dkPad * 2));
      Value out = p.mul(jp, p.i64(chunks * 64));
      for (int64_t c = 0; c < s.a.rank; c += 32) {
        Value x = v.loadBits(kc, p.add(even, p.i64(2 * c)), i16x32());
        Value y = v.loadBits(kc, p.add(odd, p.i64(2 * c)), i16x32());
        v.storeBits(vector::ShuffleOp::create(b, loc, x, y, lo), vi,
                    p.add(out, p.i64(c / 16 * 64)));
        v.storeBits(vector::ShuffleOp::create(b, loc, x, y, hi), vi,
                    p.add(out, p.i64((c / 16 + 1) * 64)));
      }
    });
  }

  /// acc[r .. r + nr) = acc alpha + sum over key pairs of (p_2jp, p_2jp+1)
  /// . (v_2jp, v_2jp+1) by vdpbf16ps, in register blocks of nr rows x 8
  /// vectors; the pair of p broadcast from probB.
  void dpAccumulate(Value r, int64_t nr, Value nk) {
    int64_t chunks = s.vPad / 16;
    Value pairs = p.divs(p.add(nk, p.i64(1)), p.i64(2));
    accumulateBlocked(
        r, nr, nk, kKeyBlock / 2, pairs,
        [&](int64_t c0, int64_t nv, Value jp, ValueRange it) {
          SmallVector<Value> next(it.begin(), it.end());
          Value vBase = p.mul(jp, p.i64(chunks * 64));
          SmallVector<Value> vals;
          for (int64_t k = 0; k < nv; ++k)
            vals.push_back(v.loadBits(vi, p.add(vBase, p.i64((c0 + k) * 64)),
                                      v.bf16Pairs()));
          for (int64_t i = 0; i < nr; ++i) {
            Value row = p.add(r, p.i64(i));
            Value pb = v.broadcastPair(
                probB, p.add(p.mul(row, p.i64(64)), p.mul(jp, p.i64(4))));
            for (int64_t k = 0; k < nv; ++k)
              next[i * nv + k] = v.dpbf16(next[i * nv + k], pb, vals[k]);
          }
          return next;
        });
  }

  /// Scores of row r against keys [j0, j0 + 16) and its online-softmax
  /// step: p into prob[r], alpha, m and l into the row tables.
  void scoreRow(Value r, Value j0) {
    Value qIdx = p.mul(r, p.i64(s.dkPad));
    Value sc =
        s.dp ? vload(prob, p.mul(r, p.i64(kKeyBlock)))
             : dots16(
                   s.dkPad / kLanes, 0,
                   [&](Value c) {
                     return vload(qs, p.add(qIdx, p.mul(c, p.i64(kLanes))));
                   },
                   [&](int64_t i, Value c, int64_t) {
                     return vload(kc, p.add(p.i64(i * s.dkPad),
                                            p.mul(c, p.i64(kLanes))));
                   });
    sc = v.mul(sc, v.splat(static_cast<float>(s.a.scale), kLanes));
    // Keys at or past the row's limit: -inf.
    auto i32v = VectorType::get({kLanes}, b.getI32Type());
    SmallVector<int32_t> iota;
    for (int32_t i = 0; i < kLanes; ++i)
      iota.push_back(i);
    Value lanes = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(i32v, ArrayRef<int32_t>(iota)));
    Value room = p.minI(maxI(sub(p.load(rowLim, i64(), r), j0), p.i64(0)),
                        p.i64(kLanes));
    Value roomV = vector::BroadcastOp::create(
        b, loc, i32v,
        arith::TruncIOp::create(b, loc, b.getI32Type(), room));
    Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt,
                                        lanes, roomV);
    Value negInf = v.splat(-std::numeric_limits<float>::infinity(), kLanes);
    sc = arith::SelectOp::create(b, loc, valid, sc, negInf);
    Value blockMax = vector::ReductionOp::create(
        b, loc, vector::CombiningKind::MAXIMUMF, sc);
    Value m = p.load(rowM, f32(), r);
    Value mNew = p.fmax(m, blockMax);
    Value mNewV = v.broadcast(mNew, kLanes);
    Value alphaV = v.exp(
        arith::SubFOp::create(b, loc, v.broadcast(m, kLanes), mNewV));
    Value alpha = vector::ExtractOp::create(b, loc, alphaV,
                                            ArrayRef<int64_t>{0});
    Value pr = v.exp(arith::SubFOp::create(b, loc, sc, mNewV));
    Value l = p.fadd(p.fmul(p.load(rowL, f32(), r), alpha), v.reduceAdd(pr));
    vstore(pr, prob, p.mul(r, p.i64(kKeyBlock)));
    if (s.dp)
      v.storeBits(v.toBF16Pairs(pr), probB, p.mul(r, p.i64(64)));
    p.store(mNew, rowM, f32(), r);
    p.store(l, rowL, f32(), r);
    p.store(alpha, rowAlpha, f32(), r);
  }

  /// acc[r .. r + nr) = acc alpha + sum_{jj < nk} p[jj] v[jj], in register
  /// blocks of nr rows x 8 vectors.
  void accumulateRows(Value r, int64_t nr, Value nk) {
    if (s.dp) {
      dpAccumulate(r, nr, nk);
      return;
    }
    int64_t vStride = s.valueIsKey() ? s.dkPad : s.vPad;
    accumulateBlocked(
        r, nr, nk, kKeyBlock, nk,
        [&](int64_t c0, int64_t nv, Value jj, ValueRange it) {
          SmallVector<Value> next(it.begin(), it.end());
          Value vBase = p.mul(jj, p.i64(vStride));
          SmallVector<Value> vals;
          for (int64_t k = 0; k < nv; ++k)
            vals.push_back(vload(vc, p.add(vBase, p.i64((c0 + k) * kLanes))));
          for (int64_t i = 0; i < nr; ++i) {
            Value row = p.add(r, p.i64(i));
            Value pb = v.broadcast(
                p.load(prob, f32(), p.add(p.mul(row, p.i64(kKeyBlock)), jj)),
                kLanes);
            for (int64_t k = 0; k < nv; ++k)
              next[i * nv + k] = v.fma(pb, vals[k], next[i * nv + k]);
          }
          return next;
        });
  }

  /// The value accumulation's register blocking: for each run of up to
  /// kAccVecs vectors of the rows' accumulators (from vector c0, nv of
  /// them), acc alpha, then `step` (c0, nv, i, the nr x nv running sums) for
  /// i < steps (unrolled for a whole block of keys, nk = kKeyBlock, when
  /// there are `fullSteps`; else a loop: the same operations in the same
  /// order), stored back.
  void accumulateBlocked(
      Value r, int64_t nr, Value nk, int64_t fullSteps, Value steps,
      function_ref<SmallVector<Value>(int64_t, int64_t, Value, ValueRange)>
          step) {
    int64_t nvTotal = s.vPad / kLanes;
    for (int64_t c0 = 0; c0 < nvTotal; c0 += kAccVecs) {
      int64_t nv = std::min(kAccVecs, nvTotal - c0);
      SmallVector<Value> init;
      for (int64_t i = 0; i < nr; ++i) {
        Value row = p.add(r, p.i64(i));
        Value alpha = v.broadcast(p.load(rowAlpha, f32(), row), kLanes);
        for (int64_t k = 0; k < nv; ++k)
          init.push_back(v.mul(accChunk(row, p.i64(c0 + k)), alpha));
      }
      auto body = [&](Value i, ValueRange it) { return step(c0, nv, i, it); };
      SmallVector<Type> types(init.size(), init.front().getType());
      auto full = scf::IfOp::create(b, loc, types, p.eq(nk, p.i64(kKeyBlock)),
                                    /*withElseRegion=*/true);
      {
        OpBuilder::InsertionGuard g(b);
        b.setInsertionPointToStart(full.thenBlock());
        SmallVector<Value> it = init;
        for (int64_t i = 0; i < fullSteps; ++i)
          it = body(p.i64(i), it);
        scf::YieldOp::create(b, loc, it);
        b.setInsertionPointToStart(full.elseBlock());
        scf::YieldOp::create(b, loc,
                             p.forLoop(p.i64(0), steps, p.i64(1), init, body));
      }
      SmallVector<Value> sums(full.getResults());
      for (int64_t i = 0; i < nr; ++i) {
        Value row = p.add(r, p.i64(i));
        for (int64_t k = 0; k < nv; ++k)
          vstore(sums[i * nv + k], acc, accIndex(row, p.i64(c0 + k)));
      }
    }
  }

  /// The output row of row r: acc / l, or for MLA absorbed W_UV acc / l
  /// (then quantized for mla_attention_quant).
  void finishRow(Value r) {
    Value pid = p.load(rowPid, i64(), r);
    // The FP8 latent cache's accumulators are the true ones x 2^-60.
    float accScale = s.amx && s.latScale >= 0 ? kFP8QueryScale : 1.0f;
    Value invL = p.fdiv(p.f32(accScale), p.load(rowL, f32(), r));
    Value invLV = v.broadcast(invL, kLanes);
    Value oBase = p.mul(pid, p.i64(s.outLen));
    if (s.form != Form::Absorbed) {
      for (int64_t c = 0; c < s.outLen; c += kLanes)
        storeActive(v.mul(accChunk(r, p.i64(c / kLanes)), invLV),
                    buf[s.out], p.add(oBase, p.i64(c)),
                    std::min(kLanes, s.outLen - c));
      return;
    }
    projectRow(r, [&](int64_t e0, Value o) {
      storeActive(v.mul(o, invLV), buf[s.out], p.add(oBase, p.i64(e0)),
                  std::min(kLanes, s.a.valueDim - e0));
    });
    quantizeRow(pid);
  }

  /// MLA absorbed: W_UV acc of row r (not yet divided by l), `kLanes`
  /// output values at a time: emit(e0, values e0 ..).
  void projectRow(Value r, function_ref<void(int64_t, Value)> emit) {
    const kernels::MLAParams &a = s.a;
    Value h = p.load(rowH, i64(), r);
    Value vRow0 = p.add(p.mul(h, p.i64(a.headDim + a.valueDim)),
                        p.i64(a.headDim));
    // An e4m3 W_UV whose head's rows lie in one 128-row scale block: the
    // scale of each 128 of c applied to the accumulator's chunk (shared by
    // the 16 rows) rather than to every weight.
    bool oneScale = kvbRowsShareScale(a.headDim, a.valueDim);
    for (int64_t e0 = 0; e0 < a.valueDim; e0 += kLanes) {
      Value o = dots16(
          a.rank / kLanes, a.rank % kLanes,
          [&](Value c) {
            Value x = accChunk(r, c);
            return oneScale
                       ? v.mul(x,
                               v.broadcast(kvbBlockScale(
                                               vRow0, p.mul(c, p.i64(kLanes))),
                                           kLanes))
                       : x;
          },
          [&](int64_t i, Value c, int64_t active) {
            // Rows past v_head_dim (a partial last group) repeat the last.
            Value row = p.add(vRow0, p.i64(std::min(e0 + i, a.valueDim - 1)));
            Value col = p.mul(c, p.i64(kLanes));
            return oneScale ? kvbUnscaled(row, col, active)
                            : kvbVector(row, col, active);
          });
      emit(e0, o);
    }
  }

  /// mla_attention_quant: the reference's quantization of output row pid.
  void quantizeRow(Value pid) {
    const kernels::MLAParams &a = s.a;
    if (a.quantAct <= 0)
      return;
    Value oBase = p.mul(pid, p.i64(s.outLen));
    kernels::emitRowQuantize(
        p, a.valueDim, a.quantAct,
        [&](Value e) { return p.load(buf[s.out], f32(), p.add(oBase, e)); },
        buf[s.quantQ], s.types[s.quantQ], oBase, buf[s.quantS],
        p.mul(pid, p.i64(a.valueDim / a.quantAct)));
  }

  /// The end of a block: its rows' outputs, or with `partial` (the block's
  /// accumulators already there) the rows' maxima and sums after them.
  void finishBlock(Value rows, Value partial) {
    if (!partial) {
      p.forLoop(p.i64(0), rows, p.i64(1), [&](Value r) { finishRow(r); });
      return;
    }
    Value ml = p.add(partial, p.i64(16 * s.vPad));
    for (int64_t i = 0; i < 16; i += kLanes) {
      vstore(vload(rowM, p.i64(i)), buf[s.ws], p.add(ml, p.i64(i)));
      vstore(vload(rowL, p.i64(i)), buf[s.ws], p.add(ml, p.i64(16 + i)));
    }
  }

  /// then() where `cond` is null or true.
  void onlyIf(Value cond, function_ref<void()> then) {
    if (cond)
      p.ifThen(cond, then);
    else
      then();
  }

  /// The block's staged queries (split): row r of the group at r * dkPad.
  Value stagedQueries(Value wsBase) {
    return v.byteAddr(buf[s.ws], p.mul(wsBase, p.i64(4)));
  }
  /// The float offset of the block's split slot c in the workspace.
  Value slotOf(Value wsBase, int64_t c) {
    return p.add(wsBase, p.i64(s.stagedFloats() + c * s.splitSlot()));
  }

  /// Phase 0 of a split kernel: the queries of the range's rows of head
  /// group g absorbed into the block's staged rows (row pid - pid0).
  void stageRows(Value begin, Value end, Value bi, Value g, Value start,
                 Value pid0, Value wsBase) {
    Value zero = p.i64(0), one = p.i64(1);
    Value rows = collectRows(begin, end, bi, zero, one, g);
    Value local = qs;
    qs = stagedQueries(wsBase);
    blockS0 = zero; // rot's row 0: position 0
    p.forLoop(zero, rows, one, [&](Value r) {
      Value pid = p.load(rowPid, i64(), r);
      stageQuery(sub(pid, pid0), pid, p.load(rowS, i64(), r),
                 p.load(rowH, i64(), r), start);
    });
    qs = local;
  }

  /// Rows [0, rows) of the row tables' staged queries into qs.
  void loadStaged(Value rows, Value pid0, Value wsBase) {
    Value staged = stagedQueries(wsBase);
    p.forLoop(p.i64(0), rows, p.i64(1), [&](Value r) {
      Value src = p.mul(sub(p.load(rowPid, i64(), r), pid0), p.i64(s.dkPad));
      Value dst = p.mul(r, p.i64(s.dkPad));
      for (int64_t c = 0; c < s.dkPad; c += kLanes)
        vstore(vload(staged, p.add(src, p.i64(c))), qs, p.add(dst, p.i64(c)));
    });
  }

  /// Phase 1 of a split kernel, head group g of batch row bi whose rows all
  /// see `lim` >= kSplitMinKeys keys: the chunks this range owns
  /// (emitRange), each over all the group's rows.
  void splitBlock(Value begin, Value end, Value bi, Value g, Value start,
                  Value lim, Value pid0, Value wsBase) {
    Value zero = p.i64(0), one = p.i64(1);
    Value half = p.mul(p.divs(p.add(lim, p.i64(63)), p.i64(64)), p.i64(32));
    Value owned[kSplitChunks];
    for (int64_t c = 0; c < kSplitChunks; ++c) {
      Value owner = p.add(pid0, p.i64(c * s.groupHeads / kSplitChunks));
      owned[c] = p.andI(p.lt(owner, end),
                        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge,
                                              owner, begin));
    }
    for (int64_t c = 0; c < kSplitChunks; ++c) {
      p.ifThen(owned[c], [&] {
        Value rows = collectRows(pid0, p.add(pid0, p.i64(s.groupHeads)), bi,
                                 zero, one, g);
        // Chunk 1 after chunk 0 in this range: the queries are loaded (and
        // on AMX packed).
        Value reload = c == 0 ? Value()
                              : arith::XOrIOp::create(
                                    b, loc, owned[0],
                                    arith::ConstantIntOp::create(b, loc, 1, 1));
        onlyIf(reload, [&] { loadStaged(rows, pid0, wsBase); });
        Value kb = c == 0 ? zero : half, ke = c == 0 ? half : lim;
        Value slot = slotOf(wsBase, c);
        Value local = acc;
        acc = v.byteAddr(buf[s.ws], p.mul(slot, p.i64(4)));
        if (s.amx)
          blockAmx(bi, start, rows, zero, kb, ke, slot, reload);
        else
          block(bi, g, start, rows, zero, one, kb, ke, slot);
        acc = local;
      });
    }
  }

  /// Phase 2 of a split kernel: the range's rows of head group g, merged
  /// from the two slots into slot 0, then finished.
  void mergeRows(Value begin, Value end, Value bi, Value g, Value pid0,
                 Value wsBase) {
    static_assert(kSplitChunks == 2, "mergeRows merges two partial states");
    Value zero = p.i64(0), one = p.i64(1);
    // Every row of the group in the tables (row r = pid0 + r), the range's
    // [r0, r1) merged.
    collectRows(pid0, p.add(pid0, p.i64(s.groupHeads)), bi, zero, one, g);
    Value r0 = sub(maxI(begin, pid0), pid0);
    Value r1 = sub(p.minI(end, p.add(pid0, p.i64(s.groupHeads))), pid0);
    Value acc0 = v.byteAddr(buf[s.ws], p.mul(slotOf(wsBase, 0), p.i64(4)));
    Value acc1 = v.byteAddr(buf[s.ws], p.mul(slotOf(wsBase, 1), p.i64(4)));
    int64_t ml = 16 * s.vPad;
    Value local = acc;
    acc = acc0;
    p.forLoop(r0, r1, one, [&](Value r) {
      Value m0 = p.load(acc0, f32(), p.add(r, p.i64(ml)));
      Value m1 = p.load(acc1, f32(), p.add(r, p.i64(ml)));
      Value l0 = p.load(acc0, f32(), p.add(r, p.i64(ml + 16)));
      Value l1 = p.load(acc1, f32(), p.add(r, p.i64(ml + 16)));
      Value m = p.fmax(m0, m1);
      Value e0 = v.exp(v.broadcast(p.fsub(m0, m), kLanes));
      Value e1 = v.exp(v.broadcast(p.fsub(m1, m), kLanes));
      auto lane0 = [&](Value x) {
        return vector::ExtractOp::create(b, loc, x, ArrayRef<int64_t>{0})
            .getResult();
      };
      p.store(p.fadd(p.fmul(l0, lane0(e0)), p.fmul(l1, lane0(e1))), rowL,
              f32(), r);
      for (int64_t c = 0; c < s.vPad / kLanes; ++c) {
        Value idx = accIndex(r, p.i64(c));
        Value x = v.add(v.mul(vload(acc0, idx), e0), v.mul(vload(acc1, idx), e1));
        vstore(x, acc0, idx);
      }
      finishRow(r);
    });
    acc = local;
  }

  /// One block: rows [0, rows) of the row tables, batch bi, head group g,
  /// keys [keyBegin, keyEnd) (null: from 0 to the rows' largest limit).
  /// With `partial` (a float offset into the workspace), the rows' partial
  /// state is stored there (finishBlock) instead of their outputs. The rows'
  /// queries are staged here, or for a split kernel already in qs.
  void block(Value bi, Value g, Value start, Value rows, Value s0, Value s1,
             Value keyBegin = {}, Value keyEnd = {}, Value partial = {}) {
    Value zero = p.i64(0), one = p.i64(1);
    float negInf = -std::numeric_limits<float>::infinity();
    blockS0 = s0;
    if (s.headMajor)
      loadHeadRows(p.load(rowH, i64(), zero), 0, s.a.headDim);
    p.forLoop(zero, rows, one, [&](Value r) {
      Value si = p.load(rowS, i64(), r);
      if (!s.split)
        stageQuery(r, p.load(rowPid, i64(), r), si, p.load(rowH, i64(), r),
                   start);
      for (int64_t c = 0; c < s.vPad; c += kLanes)
        vstore(zeros(), acc, p.add(p.mul(r, p.i64(s.vPad)), p.i64(c)));
      p.storeInt(keyLimit(start, si), rowLim, i64(), r);
      p.store(p.f32(negInf), rowM, f32(), r);
      p.store(p.f32(0.0f), rowL, f32(), r);
    });
    if (s.dp)
      dpPackQueries(rows);
    Value maxLim =
        p.forLoop(zero, rows, one, ValueRange{zero}, [&](Value r, ValueRange it) {
          return SmallVector<Value>{maxI(it[0], p.load(rowLim, i64(), r))};
        })[0];
    Value kEnd = keyEnd ? keyEnd : maxLim;
    p.forLoop(keyBegin ? keyBegin : zero, kEnd, p.i64(kKeyBlock), [&](Value j0) {
      Value nk = p.minI(sub(kEnd, j0), p.i64(kKeyBlock));
      // Keys (and values) of the block, widened once for all rows (dp:
      // staged as bf16, the values then interleaved by key pairs).
      if (s.dp)
        dpStageKeys(bi, j0, nk);
      else
        p.forLoop(zero, nk, one, [&](Value jj) {
          KeyRow kr = keyRow(bi, g, p.add(j0, jj));
          Value dst = p.mul(jj, p.i64(s.dkPad));
          if (s.latScale >= 0)
            widenFP8Latent(kr.tok, kr.seg0, dst);
          else
            widenRow(buf[s.k], s.types[s.k], kr.seg0, s.len0, kc, dst);
          if (s.len1)
            widenRow(buf[s.kRope], s.types[s.kRope], kr.seg1, s.len1, kc,
                     p.add(dst, p.i64(s.off1())));
          if (!s.valueIsKey()) {
            unsigned vb = s.form == Form::GQA ? s.v : s.k;
            widenRow(buf[vb], s.types[vb], kr.value, s.vLen, vc,
                     p.mul(jj, p.i64(s.vPad)));
          }
        });
      if (s.dp)
        dpScores(rows);
      p.forLoop(zero, rows, one, [&](Value r) { scoreRow(r, j0); });
      if (s.dp)
        dpInterleaveValues(nk);
      Value pairs = p.divs(rows, p.i64(2));
      p.forLoop(zero, pairs, one, [&](Value i) {
        accumulateRows(p.mul(i, p.i64(2)), 2, nk);
      });
      p.ifThen(p.eq(p.rems(rows, p.i64(2)), one), [&] {
        accumulateRows(sub(rows, one), 1, nk);
      });
    });
    if (s.headMajor)
      loadHeadRows(p.load(rowH, i64(), zero), s.a.headDim, s.a.valueDim);
    finishBlock(rows, partial);
    kvbRow0 = {};
  }

  /// Lanes [16c, 16c + 16) of row r's accumulator: row-major [row][vPad],
  /// or with AMX C tiles of 16 rows x 16 values (tile c, its row r).
  Value accChunk(Value r, Value c) { return vload(acc, accIndex(r, c)); }
  Value accIndex(Value r, Value c) {
    if (s.amx)
      return p.add(p.mul(c, p.i64(256)), p.mul(r, p.i64(16)));
    return p.add(p.mul(r, p.i64(s.vPad)), p.mul(c, p.i64(kLanes)));
  }

  /// A vector's lanes combined by a balanced tree of `op` (the same tree
  /// for every lane).
  Value tree(SmallVector<Value> xs, function_ref<Value(Value, Value)> op) {
    while (xs.size() > 1) {
      SmallVector<Value> next;
      for (size_t i = 0; i + 1 < xs.size(); i += 2)
        next.push_back(op(xs[i], xs[i + 1]));
      if (xs.size() % 2)
        next.push_back(xs.back());
      xs = std::move(next);
    }
    return xs.front();
  }

  /// 32 codes of the FP8 latent cache from element `index` as the bf16 bits
  /// of their values x 2^-120 (vector<32 x i16>): sign-extended, << 4 and
  /// masked into bf16's sign, exponent and mantissa fields. Exact for every
  /// code but the subnormals (0x01-0x07, which the cache never holds: its
  /// quantization flushes them) and NaN.
  Value fp8LatentBits(Value index) {
    auto i16x32 = VectorType::get({32}, b.getI16Type());
    Value bytes = v.loadRaw(buf[s.k], b.getType<Float8E4M3FNType>(), index, 32);
    Value w = arith::ShLIOp::create(
        b, loc, arith::ExtSIOp::create(b, loc, i16x32, bytes),
        v.splatInt(i16x32, 4));
    return arith::AndIOp::create(b, loc, w, v.splatInt(i16x32, 0x87F0));
  }

  /// The FP8 latent cache's keys [tok0, tok0 + nk) into `stage` as bf16 rows
  /// (rows nk..31 zero): each e4m3 code sign-extended, shifted and masked
  /// into bf16's sign, exponent and mantissa fields, which is the code's
  /// value x 2^-120 (normal for every nonzero code: the cache holds no
  /// subnormal codes; its token scale is applied to the scores and the
  /// probabilities, kFP8QueryScale below). Three instructions per 32 values.
  void stageFP8Latent(Value tok0, Value nk) {
    const kernels::MLAParams &a = s.a;
    Value zero = p.i64(0), one = p.i64(1);
    auto i16x32 = VectorType::get({32}, b.getI16Type());
    auto rowAt = [&](Value jj, int64_t c) {
      return p.add(p.mul(jj, p.i64(a.rank * 2)), p.i64(2 * c));
    };
    p.forLoop(zero, nk, one, [&](Value jj) {
      Value tok = p.add(tok0, jj);
      for (int64_t c = 0; c < a.rank; c += 32)
        v.storeBits(fp8LatentBits(p.add(p.mul(tok, p.i64(a.rank)), p.i64(c))),
                    stage, rowAt(jj, c));
    });
    Value zeroBits = v.splatInt(i16x32, 0);
    p.forLoop(nk, p.i64(kAmxKeys), one, [&](Value jj) {
      for (int64_t c = 0; c < a.rank; c += 32)
        v.storeBits(zeroBits, stage, rowAt(jj, c));
    });
  }

  /// One block of MLA absorbed on AMX-BF16 tiles: rows [0, rows) of the
  /// row tables (at most 16: one tile's rows, the lanes of every vector
  /// below), batch bi. Per block of 32 keys:
  ///   1. scores S^T = K Q^T: the keys' latent and rope rows are A tiles
  ///      read from the cache as stored (16 keys x 32 values, the row
  ///      stride of the cache; a partial last block from a zero-padded
  ///      copy), the query, rounded to bf16 once per block, the packed B
  ///      tiles; two C tiles of 16 keys x 16 rows, so that each key's
  ///      scores of all rows are one vector;
  ///   2. the online softmax on those vectors (lane = row): block max, alpha
  ///      = exp(m - m'), p = exp(s - m'), l = l alpha + sum p, the
  ///      accumulators rescaled only when some alpha is not 1;
  ///   3. acc += P V: P rounded to bf16 and transposed into one A tile (16
  ///      rows x 32 keys), the values (the latent rows) interleaved by key
  ///      pairs into B tiles of 16 values, the accumulators C tiles in
  ///      memory (16 rows x 16 values each).
  /// Lanes past `rows` hold zero queries and the block's key limit (finite
  /// scores, never stored).
  /// Keys, partial, queries: as block's; `repack` null or true: the
  /// queries packed into qt (false: qt holds them from the block before).
  void blockAmx(Value bi, Value start, Value rows, Value s0,
                Value keyBegin = {}, Value keyEnd = {}, Value partial = {},
                Value repack = {}) {
    const kernels::MLAParams &a = s.a;
    Value zero = p.i64(0), one = p.i64(1), c64 = p.i64(64);
    float negInf = -std::numeric_limits<float>::infinity();
    blockS0 = s0;
    int64_t latSteps = a.rank / 32, ropeSteps = a.ropeDim / 32;
    int64_t vTiles = s.vPad / 16;
    auto i32x16 = VectorType::get({16}, b.getI32Type());
    auto i16x32 = VectorType::get({32}, b.getI16Type());
    auto f32x16 = v.f32Vec(16);
    Type bf16 = b.getBF16Type();
    if (s.headMajor)
      loadHeadRows(p.load(rowH, i64(), zero), 0, a.headDim);
    p.forLoop(zero, rows, one, [&](Value r) {
      Value si = p.load(rowS, i64(), r);
      if (!s.split)
        stageQuery(r, p.load(rowPid, i64(), r), si, p.load(rowH, i64(), r),
                   start);
      p.storeInt(keyLimit(start, si), rowLim, i64(), r);
    });
    Value maxLim =
        p.forLoop(zero, rows, one, ValueRange{zero}, [&](Value r, ValueRange it) {
          return SmallVector<Value>{maxI(it[0], p.load(rowLim, i64(), r))};
        })[0];
    p.forLoop(zero, p.i64(16), one, [&](Value r) {
      Value lim = p.select(p.lt(r, rows), p.load(rowLim, i64(), r), maxLim);
      p.storeInt(lim, lim32, b.getI32Type(), r);
    });
    // The query as bf16 B tiles: tile st row i lane r = row r's pair
    // (32 st + 2i, 32 st + 2i + 1).
    Value zeroPairs = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(i32x16, b.getI32IntegerAttr(0)));
    onlyIf(repack, [&] {
      p.forLoop(zero, p.i64(latSteps + ropeSteps), one, [&](Value st) {
        SmallVector<Value> pairs;
        Value qScale;
        if (s.latScale >= 0)
          qScale = v.broadcast(p.select(p.lt(st, p.i64(latSteps)),
                                        p.f32(kFP8QueryScale), p.f32(1.0f)),
                               32);
        for (int64_t r = 0; r < 16; ++r) {
          Value idx = p.add(p.i64(r * s.dkPad), p.mul(st, p.i64(32)));
          Value x = v.concat(vload(qs, idx), vload(qs, p.add(idx, p.i64(16))));
          if (qScale)
            x = v.mul(x, qScale);
          pairs.push_back(
              p.select(p.lt(p.i64(r), rows), v.toBF16Pairs(x), zeroPairs));
        }
        v.storeTransposedTile(pairs, qt, p.mul(st, p.i64(1024)));
      });
    });
    p.forLoop(zero, p.i64(vTiles), one, [&](Value t) {
      v.tileStore(v.byteAddr(acc, p.mul(t, p.i64(1024))), c64, v.tileZero());
    });
    v.storeBits(v.splat(negInf, 16), rowM, zero);
    v.storeBits(v.splat(0.0f, 16), rowL, zero);

    Value latStride = p.i64(a.rank * 2), ropeStride = p.i64(a.ropeDim * 2);
    Value stageRope = p.i64(kAmxKeys * a.rank * 2);
    Value kEnd = keyEnd ? keyEnd : maxLim;
    bool fp8 = s.latScale >= 0;
    p.forLoop(keyBegin ? keyBegin : zero, kEnd, p.i64(kAmxKeys), [&](Value j0) {
      Value nk = p.minI(sub(kEnd, j0), p.i64(kAmxKeys));
      Value tok0 = p.add(p.mul(bi, p.i64(a.kvLen)), j0);
      Value full = p.eq(nk, p.i64(kAmxKeys));
      if (fp8)
        stageFP8Latent(tok0, nk);
      // A partial block: its keys copied, zero-padded to 32 rows.
      p.ifThen(p.lt(nk, p.i64(kAmxKeys)), [&] {
        Value zeroBits = arith::ConstantOp::create(
            b, loc, DenseElementsAttr::get(i16x32, b.getI16IntegerAttr(0)));
        p.forLoop(zero, p.i64(kAmxKeys), one, [&](Value jj) {
          Value valid = p.lt(jj, nk);
          Value tok = p.add(tok0, p.select(valid, jj, zero));
          auto copy = [&](unsigned src, int64_t len, Value dst) {
            for (int64_t c = 0; c < len; c += 32) {
              Value x = v.loadRaw(buf[src], bf16,
                                  p.add(p.mul(tok, p.i64(len)), p.i64(c)), 32);
              v.storeBits(p.select(valid, x, zeroBits), stage,
                          p.add(dst, p.i64(2 * c)));
            }
          };
          if (!fp8)
            copy(s.k, a.rank, p.mul(jj, latStride));
          copy(s.kRope, a.ropeDim, p.add(stageRope, p.mul(jj, ropeStride)));
        });
      });
      Value lat =
          fp8 ? stage
              : p.select(full, v.byteAddr(buf[s.k], p.mul(tok0, latStride)),
                         stage);
      Value rope =
          p.select(full, v.byteAddr(buf[s.kRope], p.mul(tok0, ropeStride)),
                   v.byteAddr(stage, stageRope));

      // 1. Scores of keys [j0, j0 + 16) and [j0 + 16, j0 + 32), two C
      // tiles over the K steps (latent, then rope). AMX tile registers are
      // not renamed: a load into a register waits for the products still
      // reading it, so each step's operands (the query's B tile, the two
      // key halves' A tiles) are loaded one step ahead, into registers other
      // than the current step's (2 + 3 + 3 tiles live).
      auto operands = [&](Value st) {
        Value isLat = p.lt(st, p.i64(latSteps));
        Value base = p.select(isLat, lat, rope);
        Value stride = p.select(isLat, latStride, ropeStride);
        Value col = p.select(isLat, st, sub(st, p.i64(latSteps)));
        SmallVector<Value> t = {
            v.tileLoad(v.byteAddr(qt, p.mul(st, p.i64(1024))), c64)};
        for (int64_t h = 0; h < 2; ++h)
          t.push_back(
              v.tileLoad(v.byteAddr(base, p.add(p.mul(p.i64(16 * h), stride),
                                                p.mul(col, c64))),
                         stride));
        return t;
      };
      // Steps [first, first + count) into two C tiles stored at `dst`.
      auto scoreSteps = [&](int64_t first, int64_t count, Value dst) {
        SmallVector<Value> init = {v.tileZero(), v.tileZero()};
        init.append(operands(p.i64(first)));
        SmallVector<Value> sc =
            p.forLoop(p.i64(first), p.i64(first + count - 1), one, init,
                      [&](Value st, ValueRange it) {
                        SmallVector<Value> next = operands(p.add(st, one));
                        SmallVector<Value> out;
                        for (int64_t h = 0; h < 2; ++h)
                          out.push_back(v.tileDot(it[h], it[3 + h], it[2]));
                        out.append(next);
                        return out;
                      });
        for (int64_t h = 0; h < 2; ++h)
          v.tileStore(v.byteAddr(dst, p.i64(h * 1024)), c64,
                      v.tileDot(sc[h], sc[3 + h], sc[2]));
      };
      // The FP8 cache's latent scores are scaled per key: the rope part
      // (unscaled) in tiles of its own.
      if (fp8) {
        scoreSteps(0, latSteps, scoreT);
        scoreSteps(latSteps, ropeSteps, ropeScoreT);
      } else {
        scoreSteps(0, latSteps + ropeSteps, scoreT);
      }
      // Per key of the FP8 cache: its scale s_t x 2^60 (keys past the
      // block's last read its last one's).
      SmallVector<Value> keyScale;
      if (fp8) {
        Value last = p.add(tok0, sub(nk, one));
        for (int64_t k = 0; k < kAmxKeys; ++k)
          keyScale.push_back(v.broadcast(
              p.fmul(latentTileScale(p.minI(p.add(tok0, p.i64(k)), last), 0),
                     p.f32(kFP8QueryScale)),
              16));
      }

      // 2. The online softmax, one vector of rows per key.
      Value scale = v.splat(static_cast<float>(a.scale), 16);
      Value limV = v.loadBits(lim32, zero, i32x16);
      Value j032 = arith::TruncIOp::create(b, loc, b.getI32Type(), j0);
      Value neg = v.splat(negInf, 16);
      SmallVector<Value> scores;
      for (int64_t k = 0; k < kAmxKeys; ++k) {
        Value x = v.loadBits(scoreT, p.i64(k * 64), f32x16);
        if (fp8)
          x = v.add(v.mul(x, keyScale[k]),
                    v.loadBits(ropeScoreT, p.i64(k * 64), f32x16));
        x = v.mul(x, scale);
        Value key = vector::BroadcastOp::create(
            b, loc, i32x16,
            arith::AddIOp::create(
                b, loc, j032,
                arith::ConstantIntOp::create(b, loc, b.getI32Type(), k)));
        Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt,
                                            key, limV);
        scores.push_back(arith::SelectOp::create(b, loc, valid, x, neg));
      }
      auto vmax = [&](Value x, Value y) {
        return arith::MaximumFOp::create(b, loc, x, y).getResult();
      };
      Value mOld = v.loadBits(rowM, zero, f32x16);
      Value mNew = vmax(mOld, tree(scores, vmax));
      Value alpha = v.exp(arith::SubFOp::create(b, loc, mOld, mNew));
      SmallVector<Value> probs;
      for (Value x : scores)
        probs.push_back(v.exp(arith::SubFOp::create(b, loc, x, mNew)));
      Value sum = tree(probs, [&](Value x, Value y) { return v.add(x, y); });
      Value l = v.add(v.mul(v.loadBits(rowL, zero, f32x16), alpha), sum);
      v.storeBits(mNew, rowM, zero);
      v.storeBits(l, rowL, zero);
      if (fp8)
        for (int64_t k = 0; k < kAmxKeys; ++k)
          probs[k] = v.mul(probs[k], keyScale[k]);
      // P as one A tile: row r = its 16 pairs of keys (2i, 2i + 1).
      SmallVector<int64_t> interleave;
      for (int64_t i = 0; i < 16; ++i)
        interleave.append({i, 16 + i});
      SmallVector<Value> pairs;
      for (int64_t i = 0; i < 16; ++i)
        pairs.push_back(v.toBF16Pairs(vector::ShuffleOp::create(
            b, loc, probs[2 * i], probs[2 * i + 1], interleave)));
      v.storeTransposedTile(pairs, probT, zero);
      // acc *= alpha, when the running maximum rose in some lane.
      Value rose = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::ONE,
                                         alpha, v.splat(1.0f, 16));
      Value any = vector::ReductionOp::create(b, loc, vector::CombiningKind::OR,
                                              rose);
      p.ifThen(any, [&] {
        SmallVector<Value> perRow;
        for (int64_t r = 0; r < 16; ++r)
          perRow.push_back(v.broadcast(
              vector::ExtractOp::create(b, loc, alpha, ArrayRef<int64_t>{r}),
              16));
        p.forLoop(zero, p.i64(vTiles), one, [&](Value t) {
          for (int64_t r = 0; r < 16; ++r) {
            Value at = p.add(p.mul(t, p.i64(1024)), p.i64(r * 64));
            v.storeBits(v.mul(v.loadBits(acc, at, f32x16), perRow[r]), acc,
                        at);
          }
        });
      });

      // 3. acc += P V, 32 values at a time: keys 2i and 2i + 1's values
      // 32 c .. 32 c + 31 interleaved into two B tiles (row i of each: 16
      // values' key pairs) in a 2 KiB buffer that stays in L1, then the
      // two accumulator tiles' products.
      SmallVector<int64_t> lo, hi;
      for (int64_t n = 0; n < 16; ++n) {
        lo.append({n, 32 + n});
        hi.append({16 + n, 48 + n});
      }
      Value pTile = v.tileLoad(probT, c64);
      p.forLoop(zero, p.i64(a.rank / 32), one, [&](Value c2) {
        Value col = p.mul(c2, p.i64(32));
        for (int64_t i = 0; i < 16; ++i) {
          Value ka = v.loadRaw(lat, bf16, p.add(p.i64(2 * i * a.rank), col), 32);
          Value kb =
              v.loadRaw(lat, bf16, p.add(p.i64((2 * i + 1) * a.rank), col), 32);
          v.storeBits(vector::ShuffleOp::create(b, loc, ka, kb, lo), valueT,
                      p.i64(i * 64));
          v.storeBits(vector::ShuffleOp::create(b, loc, ka, kb, hi), valueT,
                      p.i64(1024 + i * 64));
        }
        SmallVector<Value> at, c, vals;
        for (int64_t h = 0; h < 2; ++h) {
          at.push_back(v.byteAddr(
              acc, p.mul(p.add(p.mul(c2, p.i64(2)), p.i64(h)), p.i64(1024))));
          c.push_back(v.tileLoad(at.back(), c64));
          vals.push_back(v.tileLoad(v.byteAddr(valueT, p.i64(h * 1024)), c64));
        }
        for (int64_t h = 0; h < 2; ++h)
          v.tileStore(at[h], c64, v.tileDot(c[h], pTile, vals[h]));
      });
    });
    if (s.headMajor)
      loadHeadRows(p.load(rowH, i64(), zero), s.a.headDim, s.a.valueDim);
    finishBlock(rows, partial);
    kvbRow0 = {};
  }

  const AttnSpec &s;
  OpBuilder &b;
  Location loc;
  ProgramBuilder p;
  VectorBuilder v;
  SmallVector<Value> buf;
  /// dp: the block's queries as bf16 rows (dkPad each), its key rows as
  /// bf16 in kc, the probabilities as bf16 pairs, the values by key pairs.
  Value qb, probB, vi, dots;
  Value qs, kc, vc, acc, prob, rowM, rowL, rowAlpha, rowPid, rowS, rowH,
      rowLim, rot;
  // blockAmx's: the packed query (B tiles), two score tiles, the
  // probabilities (A tile), the values (B tiles), a tail block's keys, the
  // lanes' key limits (i32).
  Value qt, scoreT, probT, valueT, stage, lim32;
  /// The FP8 latent cache's rope score tiles (blockAmx).
  Value ropeScoreT;
  /// headMajor: rows [kvbRow0, kvbRow0 + n) of kv_b, dequantized to f32
  /// (rows of rankPad); kvbVector reads them while kvbRow0 is set.
  Value kvbBuf, kvbRow0;
  Value blockS0; ///< the current block's first position (rot's row 0)
  /// Lanes per vector, keys per block (= lanes: one score vector per row),
  /// value vectors per register block.
  const int64_t kLanes, kKeyBlock, kAccVecs;
};

class AttentionEmitter : public CpuEmitter {
public:
  AttentionEmitter(AttnSpec spec, bool zmm) : s(std::move(spec)), zmm(zmm) {}

  unsigned phases() const override { return s.split ? 3 : 1; }

  std::string describe() const override {
    std::string split =
        s.split ? llvm::formatv("; three phases: queries absorbed per head, "
                                "then keys (from {0} on a block's keys split "
                                "in {1} ranges run by different programs), "
                                "then the ranges merged and W_UV per head",
                                kSplitMinKeys, kSplitChunks)
                      .str()
                : "";
    std::string heads =
        s.headMajor ? "; blocks of one head (its e4m3 W_UK and W_UV decoded "
                      "once per block)"
                    : "";
    std::string fp8 =
        s.latScale < 0 ? ""
        : s.amx ? "; the FP8 latent cache staged as bf16 x 2^-120, its token "
                  "scales on the scores and probabilities"
                : "; the FP8 latent cache dequantized as it is widened";
    return describeForm() + heads + fp8 + split;
  }

  std::string describeForm() const {
    if (s.amx)
      return llvm::formatv(
          "amx-bf16 mla absorbed: blocks of <= {0} query rows ({1} heads x "
          "{2} positions), keys in blocks of {3}: scores K Q^T on AMX tiles "
          "(the cache's rows as A tiles, the query rounded to bf16), online "
          "softmax per block with the rows as lanes, values P V on AMX tiles "
          "(p rounded to bf16, the latent rows interleaved by key pairs)",
          kMaxRows, s.groupHeads, s.sq, kAmxKeys);
    if (s.dp)
      return llvm::formatv(
          "avx512-bf16 mla absorbed: blocks of <= {0} query rows ({1} heads x "
          "{2} positions), keys in blocks of 16 staged as bf16: scores by "
          "vdpbf16ps (the query rounded to bf16) + transpose tree, online "
          "softmax per block, values P V by vdpbf16ps (p rounded to bf16, the "
          "latent rows interleaved by key pairs) in 2 rows x {3} vectors",
          kMaxRows, s.groupHeads, s.sq, s.accVecs);
    const char *form = s.form == Form::GQA     ? "gqa"
                       : s.form == Form::Naive ? "mla naive"
                                               : "mla absorbed";
    return llvm::formatv(
        "{6} fp32 {0}: blocks of <= {1} query rows ({2} heads x {3} "
        "positions) reading each K/V row once, keys in blocks of {4} (widened "
        "once, online softmax per block, polynomial exp), scores by {7}-lane "
        "dots + transpose tree, values in 2 rows x {5} vectors",
        form, kMaxRows, s.groupHeads, s.sq, s.lanes, s.accVecs,
        zmm ? "avx512" : "avx2 (8-lane ymm vectors)", s.lanes);
  }

  void emitEntry(OpBuilder &b, ModuleOp module, const KernelRecord &kernel,
                 const EntryArgs &args) override {
    Location loc = args.loc;
    unsigned nb = args.buffers.size();
    func::FuncOp fn = makeHelper(
        module, loc,
        plan::EntryPhaseSymbol(kernel.name, args.phase) + ".blocks", nb);
    {
      Body body = bodyOf(fn, nb);
      AttnCodegen cg(s, body.b, loc, body.buffers);
      cg.allocate(fn);
      cg.emitRange(body.r0, body.r1, args.phase);
    }
    Value zero = arith::ConstantIntOp::create(b, loc, b.getI64Type(), 0);
    ProgramBuilder p(b, loc);
    p.ifThen(p.lt(args.begin, args.end), [&] {
      callHelper(b, loc, fn, args.buffers, args.begin, args.end, zero, zero);
    });
  }

private:
  AttnSpec s;
  bool zmm;
};

} // namespace

std::unique_ptr<CpuEmitter>
makeAttentionEmitter(const KernelRecord &kernel,
                     const CpuCodegenOptions &options, const CpuTarget &target,
                     std::string &why) {
  // 16-lane vectors (zmm) on AVX-512; on an AVX2 + FMA target the same code
  // in 8 lanes (ymm: keys in blocks of 8), so such hosts stay off the
  // scalar path.
  if (!target.avx512 && !target.avx2fma) {
    why = "neither AVX-512 nor AVX2 + FMA on the target CPU";
    return nullptr;
  }
  FailureOr<AttnSpec> spec =
      specOf(kernel.representative, target.avx512 ? 16 : 8, why);
  if (failed(spec))
    return nullptr;
  // AMX tiles for MLA absorbed under the bf16 precision: the query and the
  // probabilities rounded to bf16 (the cache already is), fp32 sums.
  const kernels::MLAParams &a = spec->a;
  bool fp8Latent = spec->latScale >= 0;
  spec->amx =
      spec->form == Form::Absorbed &&
      options.gemmPrecision == CpuGemmPrecision::BF16 && target.amxBF16 &&
      (spec->types[spec->k].isBF16() || (fp8Latent && a.latentTiles == 1)) &&
      spec->types[spec->kRope].isBF16() && a.rank % 32 == 0 &&
      a.ropeDim % 32 == 0;
  // Without AMX, under the same precision and on the same operands, the f32
  // form's blocks by vdpbf16ps: the same roundings of q and p to bf16.
  spec->dp = !spec->amx && spec->form == Form::Absorbed &&
             options.gemmPrecision == CpuGemmPrecision::BF16 &&
             target.avx512bf16 && spec->lanes == 16 &&
             (spec->types[spec->k].isBF16() || fp8Latent) &&
             spec->types[spec->kRope].isBF16() && a.rank % 32 == 0 &&
             a.ropeDim % 32 == 0;
  // Off AMX the FP8 latent is dequantized as it is widened, a vector at a
  // time under one tile's scale.
  if (fp8Latent && !spec->amx && (a.rank / a.latentTiles) % spec->lanes) {
    why = "the FP8 latent cache's scale tiles are not whole vectors (" +
          std::to_string(a.rank / a.latentTiles) + " values)";
    return nullptr;
  }
  return std::make_unique<AttentionEmitter>(std::move(*spec), target.avx512);
}

} // namespace kiln::cpu
