//===- MoE.cpp - Mixture-of-experts routing and expert kernels ------------===//
//
// Routing is one kernel with one program per token: the gate GEMM, scoring
// (sigmoid or softmax), the correction bias (selection only), group-limited
// selection, top-k, normalization and scaling; the last program to finish
// then permutes the tokens into the experts' contiguous layout (segments
// padded to the GEMM's block). Experts run as grouped GEMMs over that
// layout, reading pointer tables of the checkpoint's per-expert weights:
// gate+up with SwiGLU, then down; the combine kernel gathers each token's
// rows back, weighted, with the shared experts and the residual.
//
//===----------------------------------------------------------------------===//
#include "kiln/Kernels/Kernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

#include <limits>

using namespace mlir;

namespace kiln::kernels {

namespace {

/// Index and value of the maximum of v(i) over [0, n) among i with
/// eligible(i); the lowest index wins ties. Returns {index, value}.
std::pair<Value, Value>
argmax(ProgramBuilder &p, int64_t n, function_ref<Value(Value)> value,
       function_ref<Value(Value, Value)> eligible) {
  Value negInf = p.f32(-std::numeric_limits<float>::infinity());
  SmallVector<Value> r = p.forLoop(
      p.i64(0), p.i64(n), p.i64(1), ValueRange{p.i64(-1), negInf},
      [&](Value i, ValueRange it) {
        Value v = value(i);
        Value better = p.fgt(v, it[1]);
        // The first eligible candidate is taken even at -inf.
        Value first = arith::CmpIOp::create(p.builder(), p.location(),
                                            arith::CmpIPredicate::slt, it[0],
                                            p.i64(0));
        Value take = p.andI(eligible(i, v),
                            arith::OrIOp::create(p.builder(), p.location(),
                                                 better, first));
        return SmallVector<Value>{p.select(take, i, it[0]),
                                  p.select(take, v, it[1])};
      });
  return {r[0], r[1]};
}

} // namespace

void emitMoERouteProgram(OpBuilder &b, const ProgramArgs &args,
                         const MoERouteParams &m, ArrayRef<Type> types) {
  // types: x, router, [bias], sync, ids, weights, workspace, sorted_token,
  // block_expert, slot_row
  ProgramBuilder p(b, args.loc);
  Type f32 = b.getF32Type();
  unsigned i = 0;
  Value x = args.buffers[i], router = args.buffers[i + 1];
  Type xT = types[0], rT = types[1];
  i = 2;
  Value bias;
  Type biasT;
  if (m.hasBias) {
    bias = args.buffers[i];
    biasT = types[i];
    ++i;
  }
  Value sync = args.buffers[i++];
  Value ids = args.buffers[i], wts = args.buffers[i + 1];
  Type idT = types[i], wT = types[i + 1];
  Value ws = args.buffers[i + 2];
  Value sortedTok = args.buffers[i + 3], blockExp = args.buffers[i + 4],
        slotRow = args.buffers[i + 5];
  Type sortedT = types[i + 3], blockT = types[i + 4], slotT = types[i + 5];
  const int64_t E = m.experts, G = m.groups, perGroup = E / G;
  Value t = args.pid;
  Value wsBase = p.mul(t, p.i64(2 * E + G));
  Value scoreAt = wsBase, choiceAt = p.add(wsBase, p.i64(E)),
        groupAt = p.add(wsBase, p.i64(2 * E));
  Value c0 = p.i64(0), c1 = p.i64(1), cE = p.i64(E);
  Value xBase = p.mul(t, p.i64(m.hidden));
  const float inf = std::numeric_limits<float>::infinity();

  // Router logits and scores.
  p.forLoop(c0, cE, c1, [&](Value e) {
    Value logit = p.dot(x, xT, xBase, router, rT, p.mul(e, p.i64(m.hidden)),
                        m.hidden);
    p.store(m.sigmoid ? p.sigmoid(logit) : logit, ws, f32, p.add(scoreAt, e));
  });
  if (!m.sigmoid) {
    Value mx = p.forLoop(c0, cE, c1, ValueRange{p.f32(-inf)},
                         [&](Value e, ValueRange it) {
                           return SmallVector<Value>{p.fmax(
                               it[0], p.load(ws, f32, p.add(scoreAt, e)))};
                         })[0];
    Value sum = p.forLoop(c0, cE, c1, ValueRange{p.f32(0.0f)},
                          [&](Value e, ValueRange it) {
                            Value ex = p.exp(p.fsub(
                                p.load(ws, f32, p.add(scoreAt, e)), mx));
                            p.store(ex, ws, f32, p.add(scoreAt, e));
                            return SmallVector<Value>{p.fadd(it[0], ex)};
                          })[0];
    p.forLoop(c0, cE, c1, [&](Value e) {
      Value s = p.load(ws, f32, p.add(scoreAt, e));
      p.store(p.fdiv(s, sum), ws, f32, p.add(scoreAt, e));
    });
  }
  // Selection scores: score + correction bias.
  p.forLoop(c0, cE, c1, [&](Value e) {
    Value s = p.load(ws, f32, p.add(scoreAt, e));
    if (m.hasBias)
      s = p.fadd(s, p.load(bias, biasT, e));
    p.store(s, ws, f32, p.add(choiceAt, e));
  });
  if (G > 1) {
    // Group scores: sum of the top two (or the max) of each group.
    p.forLoop(c0, p.i64(G), c1, [&](Value g) {
      Value g0 = p.mul(g, p.i64(perGroup));
      SmallVector<Value> top = p.forLoop(
          c0, p.i64(perGroup), c1, ValueRange{p.f32(-inf), p.f32(-inf)},
          [&](Value j, ValueRange it) {
            Value v = p.load(ws, f32, p.add(choiceAt, p.add(g0, j)));
            Value gtFirst = p.fgt(v, it[0]);
            Value newFirst = p.select(gtFirst, v, it[0]);
            Value newSecond = p.select(gtFirst, it[0], p.fmax(v, it[1]));
            return SmallVector<Value>{newFirst, newSecond};
          });
      Value gs = m.groupTop2Sum ? p.fadd(top[0], top[1]) : top[0];
      p.store(gs, ws, f32, p.add(groupAt, g));
    });
    // Keep the best topk_group groups: a kept group's score becomes +inf.
    p.forLoop(c0, p.i64(m.topkGroup), c1, [&](Value) {
      auto [best, v] = argmax(
          p, G, [&](Value g) { return p.load(ws, f32, p.add(groupAt, g)); },
          [&](Value, Value v) { return p.flt(v, p.f32(inf)); });
      (void)v;
      // No eligible group (NaN scores) leaves best at -1: stay in bounds.
      p.store(p.f32(inf), ws, f32, p.add(groupAt, p.select(p.lt(best, c0), c0, best)));
    });
    // Experts of other groups are excluded (-inf, as DeepSeek's reference
    // inference code masks them).
    p.forLoop(c0, cE, c1, [&](Value e) {
      Value g = p.divs(e, p.i64(perGroup));
      Value kept = p.feq(p.load(ws, f32, p.add(groupAt, g)), p.f32(inf));
      Value s = p.load(ws, f32, p.add(choiceAt, e));
      p.store(p.select(kept, s, p.f32(-inf)), ws, f32, p.add(choiceAt, e));
    });
  }
  // Top-k; a chosen expert's selection score becomes -inf.
  Value outBase = p.mul(t, p.i64(m.topK));
  Value total = p.forLoop(
      c0, p.i64(m.topK), c1, ValueRange{p.f32(0.0f)},
      [&](Value k, ValueRange it) {
        auto [best, v] = argmax(
            p, E, [&](Value e) { return p.load(ws, f32, p.add(choiceAt, e)); },
            [&](Value, Value v) { return p.fgt(v, p.f32(-inf)); });
        (void)v;
        // No eligible expert (NaN scores) leaves best at -1, which is
        // stored as the id (the permutation counts it as expert 0); the
        // workspace is read and written in bounds.
        Value at = p.select(p.lt(best, c0), c0, best);
        p.store(p.f32(-inf), ws, f32, p.add(choiceAt, at));
        Value w = p.load(ws, f32, p.add(scoreAt, at));
        p.store(arith::TruncIOp::create(b, args.loc, idT, best), ids, idT,
                p.add(outBase, k));
        p.store(w, wts, wT, p.add(outBase, k));
        return SmallVector<Value>{p.fadd(it[0], w)};
      })[0];
  Value factor = p.f32(static_cast<float>(m.scaling));
  if (m.normTopK)
    factor = p.fdiv(factor, p.fadd(total, p.f32(1e-20f)));
  p.forLoop(c0, p.i64(m.topK), c1, [&](Value k) {
    Value w = p.load(wts, wT, p.add(outBase, k));
    p.store(p.fmul(w, factor), wts, wT, p.add(outBase, k));
  });

  // The token permutation, by the last program to finish routing: its
  // acquire-release increment of `sync` makes every other program's ids
  // visible to it.
  // The token counts are launch scalars, so one kernel serves every batch:
  // the layout's tokens (the plan's maximum), the tokens routed (those a
  // request gives: only their programs run) and, of each batch row's
  // `seqMax` tokens, the first `seqGiven`.
  const int64_t K = m.topK, slots = K + m.sharedExperts,
                experts = E + m.sharedExperts, BM = m.blockM;
  Value tokens = args.scalars[0], routedTokens = args.scalars[1],
        seqGiven = args.scalars[2], seqMax = args.scalars[3];
  Value rowsGiven = p.divs(routedTokens, seqGiven);
  auto given = [&](Value tok) {
    return p.andI(p.lt(p.rems(tok, seqMax), seqGiven),
                  p.lt(p.divs(tok, seqMax), rowsGiven));
  };
  Value old = p.atomicAddI32(sync, c0, c1);
  p.ifThen(p.eq(old, p.add(routedTokens, p.i64(-1))), [&] {
    // MoELayout::rows() and blocks(), at run time.
    Value used = p.mul(tokens, p.i64(slots));
    Value rows = p.mul(
        p.ceilDivI(p.add(used, p.mul(p.minI(p.i64(experts), used),
                                     p.i64(BM - 1))),
                   BM),
        p.i64(BM));
    Value blocks = p.divs(rows, p.i64(BM));
    Type i32 = b.getI32Type();
    // Per-expert counters (then cursors) after the per-token workspace.
    Value cnt = p.mul(tokens, p.i64(2 * E + G));
    auto counter = [&](Value e) { return p.add(cnt, e); };
    Value cExp = p.i64(experts);
    p.forLoop(c0, cExp, c1, [&](Value e) {
      p.storeInt(c0, ws, i32, counter(e));
    });
    // An id of -1 (no eligible expert: NaN scores) counts as expert 0, so
    // that garbage in cannot write out of bounds.
    auto routedExpert = [&](Value s) {
      Value e = p.load(ids, idT, s);
      return p.select(p.lt(e, c0), c0, e);
    };
    p.forLoop(c0, p.mul(tokens, p.i64(K)), c1, [&](Value s) {
      p.ifThen(given(p.divs(s, p.i64(K))), [&] {
        Value e = routedExpert(s);
        p.storeInt(p.add(p.load(ws, i32, counter(e)), c1), ws, i32,
                   counter(e));
      });
    });
    p.forLoop(cE, cExp, c1,
              [&](Value e) { p.storeInt(routedTokens, ws, i32, counter(e)); });
    // Segment starts (padded to BM); each block of a segment is the
    // segment's expert's; the counter becomes the segment's cursor.
    Value end = p.forLoop(
        c0, cExp, c1, ValueRange{c0}, [&](Value e, ValueRange it) {
          Value padded = p.mul(p.ceilDivI(p.load(ws, i32, counter(e)), BM),
                               p.i64(BM));
          Value b0 = p.divs(it[0], p.i64(BM));
          p.forLoop(b0, p.add(b0, p.divs(padded, p.i64(BM))), c1,
                    [&](Value blk) { p.storeInt(e, blockExp, blockT, blk); });
          p.storeInt(it[0], ws, i32, counter(e));
          return SmallVector<Value>{p.add(it[0], padded)};
        })[0];
    p.forLoop(p.divs(end, p.i64(BM)), blocks, c1,
              [&](Value blk) { p.storeInt(p.i64(-1), blockExp, blockT, blk); });
    p.forLoop(c0, rows, c1,
              [&](Value r) { p.storeInt(p.i64(-1), sortedTok, sortedT, r); });
    // Scatter, token-major: rows within a segment follow token order.
    p.forLoop(c0, tokens, c1, [&](Value tok) {
      p.ifThen(given(tok), [&] {
      p.forLoop(c0, p.i64(slots), c1, [&](Value k) {
        Value routed = p.lt(k, p.i64(K));
        Value idx = p.add(p.mul(tok, p.i64(K)), p.minI(k, p.i64(K - 1)));
        Value e = p.select(routed, routedExpert(idx),
                           p.add(cE, p.add(k, p.i64(-K))));
        Value r = p.load(ws, i32, counter(e));
        p.storeInt(p.add(r, c1), ws, i32, counter(e));
        p.storeInt(tok, sortedTok, sortedT, r);
        p.storeInt(r, slotRow, slotT, p.add(p.mul(tok, p.i64(slots)), k));
      });
      });
    });
    p.storeInt(c0, sync, i32, c0);
  });
}

void forEachGroupedRow(
    ProgramBuilder &p, const ProgramArgs &args, int64_t blockM, int64_t n,
    int64_t tile, unsigned sortedBuffer, ArrayRef<Type> types,
    function_ref<void(Value, Value, Value, Value, Value)> row) {
  ProgramBuilder::ColumnTile ct = p.columnTile(args.pid, n, tile);
  Value blk = ct.row, begin = ct.begin, end = ct.end;
  Value e = p.load(args.buffers[sortedBuffer + 1], types[sortedBuffer + 1],
                   blk);
  p.ifThen(p.lt(p.i64(-1), e), [&] {
    Value r0 = p.mul(blk, p.i64(blockM));
    p.forLoop(r0, p.add(r0, p.i64(blockM)), p.i64(1), [&](Value r) {
      Value t = p.load(args.buffers[sortedBuffer], types[sortedBuffer], r);
      p.ifThen(p.lt(p.i64(-1), t), [&] { row(r, t, e, begin, end); });
    });
  });
}

void emitMoEUpProgram(OpBuilder &b, const ProgramArgs &args, int64_t hidden,
                      int64_t ffn, int64_t blockM, int64_t tileF,
                      ArrayRef<Type> types) {
  // types: x, sorted_token, block_expert, w_gate, w_up, act
  ProgramBuilder p(b, args.loc);
  forEachGroupedRow(p, args, blockM, ffn, tileF, 1, types,
                    [&](Value r, Value t, Value e, Value f0, Value f1) {
    Value wg = p.loadPtr(args.buffers[3], e);
    Value wu = p.loadPtr(args.buffers[4], e);
    Value xBase = p.mul(t, p.i64(hidden));
    p.forLoop(f0, f1, p.i64(1), [&](Value f) {
      Value wBase = p.mul(f, p.i64(hidden));
      Value g = p.dot(args.buffers[0], types[0], xBase, wg, types[3], wBase,
                      hidden);
      Value u = p.dot(args.buffers[0], types[0], xBase, wu, types[4], wBase,
                      hidden);
      p.store(p.fmul(p.fmul(g, p.sigmoid(g)), u), args.buffers[5], types[5],
              p.add(p.mul(r, p.i64(ffn)), f));
    });
  });
}

void emitMoEDownProgram(OpBuilder &b, const ProgramArgs &args, int64_t hidden,
                        int64_t ffn, int64_t blockM, int64_t tileD,
                        ArrayRef<Type> types) {
  // types: act, sorted_token, block_expert, w_down, rows
  ProgramBuilder p(b, args.loc);
  forEachGroupedRow(p, args, blockM, hidden, tileD, 1, types,
                    [&](Value r, Value, Value e, Value d0, Value d1) {
    Value wd = p.loadPtr(args.buffers[3], e);
    p.forLoop(d0, d1, p.i64(1), [&](Value d) {
      Value y = p.dot(args.buffers[0], types[0], p.mul(r, p.i64(ffn)), wd,
                      types[3], p.mul(d, p.i64(ffn)), ffn);
      p.store(y, args.buffers[4], types[4], p.add(p.mul(r, p.i64(hidden)), d));
    });
  });
}

void emitMoECombineProgram(OpBuilder &b, const ProgramArgs &args,
                           int64_t hidden, int64_t topK, int64_t slots,
                           int64_t tileD, ArrayRef<Type> types,
                           unsigned numAddends) {
  // types: rows, slot_row, weights, [addends], y
  ProgramBuilder p(b, args.loc);
  ProgramBuilder::ColumnTile ct = p.columnTile(args.pid, hidden, tileD);
  Value t = ct.row, d0 = ct.begin, d1 = ct.end;
  Value c0 = p.i64(0), c1 = p.i64(1);
  unsigned out = 3 + numAddends;
  p.forLoop(d0, d1, c1, [&](Value d) {
    auto rowValue = [&](Value k) {
      Value r = p.load(args.buffers[1], types[1],
                       p.add(p.mul(t, p.i64(slots)), k));
      return p.load(args.buffers[0], types[0],
                    p.add(p.mul(r, p.i64(hidden)), d));
    };
    Value acc = p.forLoop(
        c0, p.i64(topK), c1, ValueRange{p.f32(0.0f)},
        [&](Value k, ValueRange it) {
          Value w = p.load(args.buffers[2], types[2],
                           p.add(p.mul(t, p.i64(topK)), k));
          return SmallVector<Value>{p.fadd(it[0], p.fmul(w, rowValue(k)))};
        })[0];
    acc = p.forLoop(p.i64(topK), p.i64(slots), c1, ValueRange{acc},
                    [&](Value k, ValueRange it) {
                      return SmallVector<Value>{p.fadd(it[0], rowValue(k))};
                    })[0];
    Value idx = p.add(p.mul(t, p.i64(hidden)), d);
    acc = addAddends(p, args, 3, numAddends, types[out], acc, idx);
    p.store(acc, args.buffers[out], types[out], idx);
  });
}

} // namespace kiln::kernels
