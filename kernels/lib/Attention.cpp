//===- Attention.cpp - Rotary embedding, GQA and MLA attention kernels ----===//
//
// Attention kernels run one program per (batch, query position, head). The
// softmax is computed online (running max and sum, rescaling the
// accumulator), so the score matrix is never materialized; the accumulator
// is the output row itself (or, for MLA, a per-program workspace).
//
//===----------------------------------------------------------------------===//
#include "kiln/Kernels/Kernels.h"

#include "mlir/Dialect/SCF/IR/SCF.h"

#include <cmath>
#include <limits>

using namespace mlir;

namespace kiln::kernels {

namespace {

struct RowIndex {
  Value head, seq, batch;
};

RowIndex decomposeRow(ProgramBuilder &p, Value row, int64_t seq,
                      int64_t heads) {
  Value bs = p.divs(row, p.i64(heads));
  return {p.rems(row, p.i64(heads)), p.rems(bs, p.i64(seq)),
          p.divs(bs, p.i64(seq))};
}

/// Number of keys query (b, s) attends to.
Value keyLimit(ProgramBuilder &p, const AttentionParams &a, Value start,
               Value s) {
  Value kv = p.i64(a.kvLen);
  if (a.causal)
    return p.minI(p.add(p.add(start, s), p.i64(1)), kv);
  if (a.hasStart)
    return p.minI(p.add(start, p.i64(a.seq)), kv);
  return kv;
}

/// One online-softmax step: returns {m', l', alpha, prob}.
std::array<Value, 4> onlineStep(ProgramBuilder &p, Value m, Value l,
                                Value score) {
  Value mNew = p.fmax(m, score);
  Value alpha = p.exp(p.fsub(m, mNew));
  Value prob = p.exp(p.fsub(score, mNew));
  Value lNew = p.fadd(p.fmul(l, alpha), prob);
  return {mNew, lNew, alpha, prob};
}

/// acc[accBase + i] = acc[accBase + i] * alpha + prob * src[srcBase + i]
/// for i < n: the online-softmax rescale-and-accumulate of one key's values.
void rescaleAccumulate(ProgramBuilder &p, Value acc, Type accT, Value accBase,
                       Value src, Type srcT, Value srcBase, int64_t n,
                       Value alpha, Value prob) {
  p.forLoop(p.i64(0), p.i64(n), p.i64(1), [&](Value i) {
    Value o = p.load(acc, accT, p.add(accBase, i));
    Value v = p.load(src, srcT, p.add(srcBase, i));
    p.store(p.fadd(p.fmul(o, alpha), p.fmul(prob, v)), acc, accT,
            p.add(accBase, i));
  });
}

/// out[base + i] = 0 for i < n: the accumulator before the first key.
void zeroRow(ProgramBuilder &p, Value out, Type outT, Value base, int64_t n) {
  p.forLoop(p.i64(0), p.i64(n), p.i64(1), [&](Value d) {
    p.store(p.f32(0.0f), out, outT, p.add(base, d));
  });
}

/// out[base + i] /= l for i < n: the softmax denominator, after the last key.
void normalizeRow(ProgramBuilder &p, Value out, Type outT, Value base,
                  int64_t n, Value l) {
  Value invL = p.fdiv(p.f32(1.0f), l);
  p.forLoop(p.i64(0), p.i64(n), p.i64(1), [&](Value d) {
    Value o = p.load(out, outT, p.add(base, d));
    p.store(p.fmul(o, invL), out, outT, p.add(base, d));
  });
}

} // namespace

void emitRotation(ProgramBuilder &p, const RopeParams &rp, Value pos,
                  function_ref<Value(Value)> load,
                  function_ref<void(Value, Value)> store) {
  OpBuilder &b = p.builder();
  int64_t half = rp.rotaryDim / 2;
  double logTheta = std::log(rp.theta);
  p.forLoop(p.i64(0), p.i64(half), p.i64(1), [&](Value i) {
    Value fi = p.sitofp(i, b.getF64Type());
    // inv_freq = theta^(-2i/d) / scaling, in f64.
    Value inv = p.exp(p.fmul(fi, p.f64(-2.0 * logTheta / rp.rotaryDim)));
    if (rp.scaling != 1.0)
      inv = p.fdiv(inv, p.f64(rp.scaling));
    if (rp.yarnFactor > 1.0) {
      // YaRN: ramp from extrapolation (ramp 0) to interpolation (ramp 1).
      Value ramp = p.fdiv(p.fsub(fi, p.f64(rp.yarnLow)),
                          p.f64(rp.yarnHigh - rp.yarnLow));
      ramp = p.fmin(p.fmax(ramp, p.f64(0.0)), p.f64(1.0));
      Value interp = p.fdiv(inv, p.f64(rp.yarnFactor));
      inv = p.fadd(p.fmul(interp, ramp),
                   p.fmul(inv, p.fsub(p.f64(1.0), ramp)));
    }
    Value angle = p.fmul(pos, inv);
    Value c = p.toF32(p.fmul(p.cos(angle), p.f64(rp.mscale)));
    Value s = p.toF32(p.fmul(p.sin(angle), p.f64(rp.mscale)));
    Value ia = rp.interleaved ? p.mul(i, p.i64(2)) : i;
    Value ib = rp.interleaved ? p.add(ia, p.i64(1)) : p.add(i, p.i64(half));
    Value xa = load(ia), xb = load(ib);
    store(ia, p.fsub(p.fmul(xa, c), p.fmul(xb, s)));
    store(ib, p.fadd(p.fmul(xb, c), p.fmul(xa, s)));
  });
  if (rp.rotaryDim < rp.headDim)
    p.forLoop(p.i64(rp.rotaryDim), p.i64(rp.headDim), p.i64(1),
              [&](Value d) { store(d, load(d)); });
}

void emitRopeProgram(OpBuilder &b, const ProgramArgs &args,
                     const RopeParams &rp, Type xType, Type startType,
                     Type outType) {
  ProgramBuilder p(b, args.loc);
  RowIndex r = decomposeRow(p, args.pid, rp.seq, rp.heads);
  Value x = args.buffers[0];
  Value out = args.buffers.back();
  Value start = rp.hasStart ? p.load(args.buffers[1], startType, r.batch)
                            : p.i64(0);
  Value pos = p.sitofp(p.add(start, r.seq), b.getF64Type());
  Value base = p.mul(args.pid, p.i64(rp.headDim));
  Value inBaseRow = base;
  Value inCache;
  if (rp.cacheCapacity > 0) {
    // Row (b, s, h) goes to row (b, start + s, h) of the cache.
    Value row = p.add(start, r.seq);
    inCache = p.lt(row, p.i64(rp.cacheCapacity));
    base = p.mul(p.add(p.mul(p.add(p.mul(r.batch, p.i64(rp.cacheCapacity)),
                                   row),
                             p.i64(rp.heads)),
                       r.head),
                 p.i64(rp.headDim));
  }
  Value inBase = rp.inputStride
                     ? p.add(p.mul(args.pid, p.i64(rp.inputStride)),
                             p.i64(rp.inputOffset))
                     : inBaseRow;
  OpBuilder::InsertionGuard guard(b);
  if (inCache) {
    auto ifOp = scf::IfOp::create(b, args.loc, inCache, false);
    b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
  }
  emitRotation(
      p, rp, pos, [&](Value i) { return p.load(x, xType, p.add(inBase, i)); },
      [&](Value i, Value v) { p.store(v, out, outType, p.add(base, i)); });
}

void emitAttentionProgram(OpBuilder &b, const ProgramArgs &args,
                          const AttentionParams &a, Type qType, Type kType,
                          Type vType, Type startType, Type outType) {
  ProgramBuilder p(b, args.loc);
  RowIndex r = decomposeRow(p, args.pid, a.seq, a.heads);
  Value q = args.buffers[0], k = args.buffers[1], v = args.buffers[2];
  Value out = args.buffers[a.hasStart ? 4 : 3];
  Value ws = args.buffers[a.hasStart ? 5 : 4];
  Value start = a.hasStart ? p.load(args.buffers[3], startType, r.batch)
                           : p.i64(0);
  Value limit = keyLimit(p, a, start, r.seq);
  Value kvHead = p.divs(r.head, p.i64(a.heads / a.kvHeads));
  Value qBase = p.mul(args.pid, p.i64(a.headDim));
  // The query row, staged (and rotated) once; the key loop reads it there.
  {
    Type f32 = b.getF32Type();
    auto load = [&](Value i) { return p.load(q, qType, p.add(qBase, i)); };
    auto store = [&](Value i, Value x) {
      p.store(x, ws, f32, p.add(qBase, i));
    };
    if (a.qRotate)
      emitRotation(p, a.qRope, p.sitofp(p.add(start, r.seq), b.getF64Type()),
                   load, store);
    else
      p.forLoop(p.i64(0), p.i64(a.headDim), p.i64(1),
                [&](Value i) { store(i, load(i)); });
  }
  Value oBase = p.mul(args.pid, p.i64(a.valueDim));
  Value c0 = p.i64(0), c1 = p.i64(1), cDv = p.i64(a.valueDim);
  zeroRow(p, out, outType, oBase, a.valueDim);
  Value negInf = p.f32(-std::numeric_limits<float>::infinity());
  SmallVector<Value> ml = p.forLoop(
      c0, limit, c1, ValueRange{negInf, p.f32(0.0f)},
      [&](Value j, ValueRange it) {
        Value kvRow = p.add(p.mul(p.add(p.mul(r.batch, p.i64(a.kvLen)), j),
                                  p.i64(a.kvHeads)),
                            kvHead);
        Value score = p.dot(ws, b.getF32Type(), qBase, k, kType,
                            p.mul(kvRow, p.i64(a.headDim)), a.headDim);
        score = p.fmul(score, p.f32(static_cast<float>(a.scale)));
        auto [m, l, alpha, prob] = onlineStep(p, it[0], it[1], score);
        rescaleAccumulate(p, out, outType, oBase, v, vType,
                          p.mul(kvRow, cDv), a.valueDim, alpha, prob);
        return SmallVector<Value>{m, l};
      });
  normalizeRow(p, out, outType, oBase, a.valueDim, ml[1]);
}

namespace {
/// Copies the program's q_rope row into ws[stage, stage + ropeDim), rotated
/// when rope is fused into the MLA kernel.
void stageQRope(ProgramBuilder &p, const MLAParams &a, Value qr, Type qrT,
                Value pid, Value start, Value seqPos, Value ws, Value stage) {
  Type f32 = p.builder().getF32Type();
  Value src = a.qRopeStride ? p.add(p.mul(pid, p.i64(a.qRopeStride)),
                                    p.i64(a.qRopeOffset))
                            : p.mul(pid, p.i64(a.ropeDim));
  auto load = [&](Value i) { return p.load(qr, qrT, p.add(src, i)); };
  auto store = [&](Value i, Value v) { p.store(v, ws, f32, p.add(stage, i)); };
  if (!a.qRotate) {
    p.forLoop(p.i64(0), p.i64(a.ropeDim), p.i64(1),
              [&](Value i) { store(i, load(i)); });
    return;
  }
  Value pos = p.sitofp(p.add(start, seqPos), p.builder().getF64Type());
  emitRotation(p, a.qRope, pos, load, store);
}
} // namespace

void emitMLANaiveProgram(OpBuilder &b, const ProgramArgs &args,
                         const MLAParams &a, ArrayRef<Type> types) {
  // types: q_nope, q_rope, kv, k_rope, [start], out
  ProgramBuilder p(b, args.loc);
  RowIndex r = decomposeRow(p, args.pid, a.seq, a.heads);
  Value qn = args.buffers[0], qr = args.buffers[1], kv = args.buffers[2],
        kr = args.buffers[3];
  unsigned outIdx = a.hasStart ? 5 : 4;
  Value out = args.buffers[outIdx], ws = args.buffers[outIdx + 1];
  Type outT = types[outIdx];
  Value start =
      a.hasStart ? p.load(args.buffers[4], types[4], r.batch) : p.i64(0);
  Value limit = keyLimit(p, a, start, r.seq);
  int64_t rowW = a.headDim + a.valueDim;
  Value qnBase =
      p.mul(args.pid, p.i64(a.qNopeStride ? a.qNopeStride : a.headDim));
  Value qrBase = p.mul(args.pid, p.i64(a.ropeDim));
  stageQRope(p, a, qr, types[1], args.pid, start, r.seq, ws, qrBase);
  Value oBase = p.mul(args.pid, p.i64(a.valueDim));
  Value c0 = p.i64(0), c1 = p.i64(1);
  zeroRow(p, out, outT, oBase, a.valueDim);
  Value negInf = p.f32(-std::numeric_limits<float>::infinity());
  SmallVector<Value> ml = p.forLoop(
      c0, limit, c1, ValueRange{negInf, p.f32(0.0f)},
      [&](Value j, ValueRange it) {
        Value tok = p.add(p.mul(r.batch, p.i64(a.kvLen)), j);
        Value kvBase =
            p.mul(p.add(p.mul(tok, p.i64(a.heads)), r.head), p.i64(rowW));
        Value score =
            p.fadd(p.dot(qn, types[0], qnBase, kv, types[2], kvBase, a.headDim),
                   p.dot(ws, b.getF32Type(), qrBase, kr, types[3],
                         p.mul(tok, p.i64(a.ropeDim)), a.ropeDim));
        score = p.fmul(score, p.f32(static_cast<float>(a.scale)));
        auto [m, l, alpha, prob] = onlineStep(p, it[0], it[1], score);
        rescaleAccumulate(p, out, outT, oBase, kv, types[2],
                          p.add(kvBase, p.i64(a.headDim)), a.valueDim, alpha,
                          prob);
        return SmallVector<Value>{m, l};
      });
  normalizeRow(p, out, outT, oBase, a.valueDim, ml[1]);
}

void emitMLAProgram(OpBuilder &b, const ProgramArgs &args, const MLAParams &a,
                    ArrayRef<Type> types) {
  // types: q_nope, q_rope, latent, k_rope, kv_b, [kv_b_scale],
  // [latent_scale], [start], out, workspace
  ProgramBuilder p(b, args.loc);
  RowIndex r = decomposeRow(p, args.pid, a.seq, a.heads);
  Value qn = args.buffers[0], qr = args.buffers[1];
  Value lat = args.buffers[2], kr = args.buffers[3];
  Value wkvb = args.buffers[4];
  Type qnT = types[0], qrT = types[1], latT = types[2], krT = types[3],
       wT = types[4];
  unsigned next = 5;
  Value wScale = a.kvbScale ? args.buffers[next++] : Value();
  Value latScale = a.latentScale ? args.buffers[next++] : Value();
  unsigned startIdx = next;
  if (a.hasStart)
    ++next;
  Value out = args.buffers[next], ws = args.buffers[next + 1];
  Type outT = types[next];
  Type f32 = b.getF32Type();
  Value start = a.hasStart
                    ? p.load(args.buffers[startIdx], types[startIdx], r.batch)
                    : p.i64(0);
  Value limit = keyLimit(p, a, start, r.seq);
  int64_t rowW = a.headDim + a.valueDim;
  int64_t colBlocks = (a.rank + 127) / 128;
  Value c0 = p.i64(0), c1 = p.i64(1), cC = p.i64(a.rank);
  // kv_b[row, col], dequantized when block-quantized.
  auto weight = [&](Value row, Value col) {
    Value w = p.load(wkvb, wT, p.add(p.mul(row, cC), col));
    if (!a.kvbScale)
      return w;
    Value blk = p.add(p.mul(p.divs(row, p.i64(128)), p.i64(colBlocks)),
                      p.divs(col, p.i64(128)));
    return p.fmul(w, p.load(wScale, f32, blk));
  };
  Value wsBase = p.mul(args.pid, p.i64(2 * a.rank + a.ropeDim));
  Value oLat = p.add(wsBase, cC);
  Value qnBase =
      p.mul(args.pid, p.i64(a.qNopeStride ? a.qNopeStride : a.headDim));
  Value qrStage = p.add(oLat, cC);
  stageQRope(p, a, qr, qrT, args.pid, start, r.seq, ws, qrStage);
  Value headRow = p.mul(r.head, p.i64(rowW));
  // q_lat[c] = sum_d q_nope[d] * W_UK[h, d, c]; o_lat = 0.
  p.forLoop(c0, cC, c1, [&](Value c) {
    Value acc = p.forLoop(c0, p.i64(a.headDim), c1, ValueRange{p.f32(0.0f)},
                          [&](Value d, ValueRange it) {
                            Value x = p.load(qn, qnT, p.add(qnBase, d));
                            Value w = weight(p.add(headRow, d), c);
                            return SmallVector<Value>{
                                p.fadd(it[0], p.fmul(x, w), true)};
                          })[0];
    p.store(acc, ws, f32, p.add(wsBase, c));
    p.store(p.f32(0.0f), ws, f32, p.add(oLat, c));
  });
  Value negInf = p.f32(-std::numeric_limits<float>::infinity());
  SmallVector<Value> ml = p.forLoop(
      c0, limit, c1, ValueRange{negInf, p.f32(0.0f)},
      [&](Value j, ValueRange it) {
        Value tok = p.add(p.mul(r.batch, p.i64(a.kvLen)), j);
        Value latBase = p.mul(tok, cC);
        // The FP8 latent cache: value x its tile's scale.
        int64_t tiles = a.latentTiles, tileW = tiles ? a.rank / tiles : 0;
        auto tileScale = [&](int64_t t) {
          return p.load(latScale, f32,
                        p.add(p.mul(tok, p.i64(tiles)), p.i64(t)));
        };
        Value score;
        if (!a.latentScale) {
          score = p.dot(ws, f32, wsBase, lat, latT, latBase, a.rank);
        } else {
          score = p.f32(0.0f);
          for (int64_t t = 0; t < tiles; ++t) {
            int64_t c0t = t * tileW, n = tileW;
            Value d = p.dot(ws, f32, p.add(wsBase, p.i64(c0t)), lat, latT,
                            p.add(latBase, p.i64(c0t)), n);
            score = p.fadd(score, p.fmul(d, tileScale(t)));
          }
        }
        score = p.fadd(score, p.dot(ws, f32, qrStage, kr, krT,
                                    p.mul(tok, p.i64(a.ropeDim)), a.ropeDim));
        score = p.fmul(score, p.f32(static_cast<float>(a.scale)));
        auto [m, l, alpha, prob] = onlineStep(p, it[0], it[1], score);
        if (!a.latentScale) {
          rescaleAccumulate(p, ws, f32, oLat, lat, latT, latBase, a.rank, alpha,
                            prob);
        } else {
          for (int64_t t = 0; t < tiles; ++t) {
            int64_t c0t = t * tileW, n = tileW;
            rescaleAccumulate(p, ws, f32, p.add(oLat, p.i64(c0t)), lat, latT,
                              p.add(latBase, p.i64(c0t)), n, alpha,
                              p.fmul(prob, tileScale(t)));
          }
        }
        return SmallVector<Value>{m, l};
      });
  Value invL = p.fdiv(p.f32(1.0f), ml[1]);
  // out[e] = (sum_c W_UV[h, e, c] * o_lat[c]) / l.
  Value oBase = p.mul(args.pid, p.i64(a.valueDim));
  p.forLoop(c0, p.i64(a.valueDim), c1, [&](Value e) {
    Value row = p.add(p.add(headRow, p.i64(a.headDim)), e);
    Value acc = p.forLoop(c0, cC, c1, ValueRange{p.f32(0.0f)},
                          [&](Value c, ValueRange it) {
                            Value o = p.load(ws, f32, p.add(oLat, c));
                            return SmallVector<Value>{
                                p.fadd(it[0], p.fmul(weight(row, c), o), true)};
                          })[0];
    p.store(p.fmul(acc, invL), out, outT, p.add(oBase, e));
  });
  if (a.quantAct > 0) {
    // Each head's output row is whole tiles of o_proj's input row.
    Value q = args.buffers[next + 2], s = args.buffers[next + 3];
    emitRowQuantize(
        p, a.valueDim, a.quantAct,
        [&](Value e) { return p.load(out, outT, p.add(oBase, e)); }, q,
        types[next + 2], oBase, s,
        p.mul(args.pid, p.i64(a.valueDim / a.quantAct)));
  }
}

} // namespace kiln::kernels
