//===- FP8.cpp - FP8 block quantization kernels ---------------------------===//
//
// DeepSeek-V3's scheme, exactly: activations quantized dynamically per row
// in 1 x act tiles (s = max(amax, 1e-4) / 448, round to nearest even,
// saturate at 448), fused into the producing kernel; GEMMs sum e4m3 products
// in fp32 per K block and promote with both scales.
//
//===----------------------------------------------------------------------===//
#include "kiln/Kernels/Kernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

using namespace mlir;

namespace kiln::kernels {

namespace {
int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
} // namespace

void emitRowQuantize(ProgramBuilder &p, int64_t cols, int64_t act,
                     function_ref<Value(Value)> value, Value q, Type qType,
                     Value qBase, Value s, Value sBase, bool pow2Scale,
                     bool flushSubnormals) {
  Type f32 = p.builder().getF32Type();
  Value c1 = p.i64(1);
  p.forLoop(p.i64(0), p.i64(ceilDiv(cols, act)), c1, [&](Value tile) {
    Value k0 = p.mul(tile, p.i64(act));
    Value k1 = p.minI(p.add(k0, p.i64(act)), p.i64(cols));
    Value amax = p.forLoop(k0, k1, c1, ValueRange{p.f32(0.0f)},
                           [&](Value k, ValueRange it) {
                             return SmallVector<Value>{
                                 p.fmax(it[0], p.fabs(value(k)))};
                           })[0];
    Value scale = p.fdiv(p.fmax(amax, p.f32(1e-4f)), p.f32(448.0f));
    if (pow2Scale)
      scale = p.roundUpPow2(scale);
    p.store(scale, s, f32, p.add(sBase, tile));
    p.forLoop(k0, k1, c1, [&](Value k) {
      Value y = p.fdiv(value(k), scale);
      // Below 15 x 2^-10 (the midpoint of e4m3's largest subnormal, 7 x
      // 2^-9, and its smallest normal, 2^-6) a value rounds to a subnormal.
      if (flushSubnormals)
        y = p.select(p.flt(p.fabs(y), p.f32(15.0f / 1024.0f)), p.f32(0.0f), y);
      p.store(y, q, qType, p.add(qBase, k));
    });
  });
}

void emitQuantizeProgram(OpBuilder &b, const ProgramArgs &args, int64_t cols,
                         int64_t act, Type xType, Type qType, bool pow2Scale,
                         bool flushSubnormals) {
  ProgramBuilder p(b, args.loc);
  Value base = p.mul(args.pid, p.i64(cols));
  emitRowQuantize(
      p, cols, act,
      [&](Value k) { return p.load(args.buffers[0], xType, p.add(base, k)); },
      args.buffers[1], qType, base, args.buffers[2],
      p.mul(args.pid, p.i64(ceilDiv(cols, act))), pow2Scale, flushSubnormals);
}

void emitDequantizeProgram(OpBuilder &b, const ProgramArgs &args, int64_t cols,
                           int64_t act, Type qType, Type xType) {
  ProgramBuilder p(b, args.loc);
  Value base = p.mul(args.pid, p.i64(cols));
  Value sBase = p.mul(args.pid, p.i64(ceilDiv(cols, act)));
  p.forLoop(p.i64(0), p.i64(cols), p.i64(1), [&](Value k) {
    Value sc = p.load(args.buffers[1], b.getF32Type(),
                      p.add(sBase, p.divs(k, p.i64(act))));
    Value v = p.load(args.buffers[0], qType, p.add(base, k));
    p.store(p.fmul(v, sc), args.buffers[2], xType, p.add(base, k));
  });
}

void emitRMSNormQuantProgram(OpBuilder &b, const ProgramArgs &args,
                             int64_t cols, float eps, int64_t act,
                             ArrayRef<Type> types) {
  // types: x, w, y, q, s
  emitRMSNormProgram(b, args, cols, eps, types[0], types[1], types[2]);
  ProgramBuilder p(b, args.loc);
  Value base = p.mul(args.pid, p.i64(cols));
  emitRowQuantize(
      p, cols, act,
      [&](Value k) { return p.load(args.buffers[2], types[2], p.add(base, k)); },
      args.buffers[3], types[3], base, args.buffers[4],
      p.mul(args.pid, p.i64(ceilDiv(cols, act))));
}

void emitSwiGLUQuantProgram(OpBuilder &b, const ProgramArgs &args,
                            int64_t cols, int64_t act, ArrayRef<Type> types) {
  // types: gate, up, q, s
  ProgramBuilder p(b, args.loc);
  Value base = p.mul(args.pid, p.i64(cols));
  emitRowQuantize(
      p, cols, act,
      [&](Value k) {
        Value g = p.load(args.buffers[0], types[0], p.add(base, k));
        Value u = p.load(args.buffers[1], types[1], p.add(base, k));
        return p.fmul(p.fmul(g, p.sigmoid(g)), u);
      },
      args.buffers[2], types[2], base, args.buffers[3],
      p.mul(args.pid, p.i64(ceilDiv(cols, act))));
}

namespace {

/// sum_kb (sum_{k in kb} xq[xBase + k] * wq[wBase + k]) * xs[xsBase + kb] *
/// ws(kb): the block-scaled dot product with DeepSeek's promotion.
Value blockDot(ProgramBuilder &p, int64_t k, int64_t act, Value xq, Type xT,
               Value xBase, Value xs, Value xsBase, Value wq, Type wT,
               Value wBase, function_ref<Value(Value)> wScale) {
  Type f32 = p.builder().getF32Type();
  Value c1 = p.i64(1);
  return p.forLoop(
      p.i64(0), p.i64(ceilDiv(k, act)), c1, ValueRange{p.f32(0.0f)},
      [&](Value kb, ValueRange acc) {
        Value k0 = p.mul(kb, p.i64(act));
        Value k1 = p.minI(p.add(k0, p.i64(act)), p.i64(k));
        Value partial =
            p.forLoop(k0, k1, c1, ValueRange{p.f32(0.0f)},
                      [&](Value kk, ValueRange it) {
                        Value x = p.load(xq, xT, p.add(xBase, kk));
                        Value w = p.load(wq, wT, p.add(wBase, kk));
                        return SmallVector<Value>{
                            p.fadd(it[0], p.fmul(x, w), true)};
                      })[0];
        Value sx = p.load(xs, f32, p.add(xsBase, kb));
        Value promoted = p.fmul(partial, p.fmul(sx, wScale(kb)));
        return SmallVector<Value>{p.fadd(acc[0], promoted)};
      })[0];
}

} // namespace

void emitGemmFP8Program(OpBuilder &b, const ProgramArgs &args, int64_t n,
                        int64_t k, int64_t tileN, int64_t act, int64_t wbN,
                        ArrayRef<Type> types, unsigned numAddends) {
  // types: xq, w, xs, ws, out
  ProgramBuilder p(b, args.loc);
  Type f32 = b.getF32Type();
  int64_t kBlocks = ceilDiv(k, act);
  ProgramBuilder::ColumnTile ct = p.columnTile(args.pid, n, tileN);
  Value row = ct.row, n0 = ct.begin, n1 = ct.end;
  Value xBase = p.mul(row, p.i64(k));
  Value xsBase = p.mul(row, p.i64(kBlocks));
  p.forLoop(n0, n1, p.i64(1), [&](Value col) {
    Value wsRow = p.mul(p.divs(col, p.i64(wbN)), p.i64(kBlocks));
    Value acc = blockDot(
        p, k, act, args.buffers[0], types[0], xBase, args.buffers[2], xsBase,
        args.buffers[1], types[1], p.mul(col, p.i64(k)), [&](Value kb) {
          return p.load(args.buffers[3], f32, p.add(wsRow, kb));
        });
    Value idx = p.add(p.mul(row, p.i64(n)), col);
    Type outT = types[4 + numAddends];
    acc = addAddends(p, args, 4, numAddends, outT, acc, idx);
    p.store(acc, args.buffers[4 + numAddends], outT, idx);
  });
}

namespace {

/// One row's tile [f0, f1) of silu(x . w_gate) * (x . w_up) with
/// block-scaled FP8 operands, staged in f32 in `ws` and then quantized in
/// tiles of `act` into q/s: the body shared by gemm_swiglu_fp8 and the FP8
/// grouped experts. Columns [f0, f1) are whole act tiles (or end the row);
/// tileF bounds their number.
struct SwiGLUQuantTile {
  Value xq, xs;
  Type xT;
  Value xBase, xsBase; // the input row
  Value wg, wu, wgs, wus;
  Type wgT, wuT;
  Value q, s, ws;
  Type qT;
  Value row; // the output row
};

void emitSwiGLUQuantTile(ProgramBuilder &p, int64_t hidden, int64_t ffn,
                         int64_t tileF, int64_t act, int64_t wbN,
                         const SwiGLUQuantTile &t, Value f0, Value f1) {
  OpBuilder &b = p.builder();
  Type f32 = b.getF32Type();
  int64_t kBlocks = ceilDiv(hidden, act);
  int64_t fBlocks = ceilDiv(ffn, act);
  Value rowBase = p.mul(t.row, p.i64(ffn));
  p.forLoop(f0, f1, p.i64(1), [&](Value f) {
    Value wsRow = p.mul(p.divs(f, p.i64(wbN)), p.i64(kBlocks));
    Value wBase = p.mul(f, p.i64(hidden));
    Value g = blockDot(p, hidden, act, t.xq, t.xT, t.xBase, t.xs, t.xsBase,
                       t.wg, t.wgT, wBase, [&](Value kb) {
                         return p.load(t.wgs, f32, p.add(wsRow, kb));
                       });
    Value u = blockDot(p, hidden, act, t.xq, t.xT, t.xBase, t.xs, t.xsBase,
                       t.wu, t.wuT, wBase, [&](Value kb) {
                         return p.load(t.wus, f32, p.add(wsRow, kb));
                       });
    p.store(p.fmul(p.fmul(g, p.sigmoid(g)), u), t.ws, f32, p.add(rowBase, f));
  });
  Value qBase = p.add(rowBase, f0);
  Value sBase = p.add(p.mul(t.row, p.i64(fBlocks)), p.divs(f0, p.i64(act)));
  int64_t cols = std::min(tileF, ffn);
  // The last tile may be shorter than tileF when ffn % tileF != 0.
  Value nCols = arith::SubIOp::create(b, p.location(), f1, f0);
  Value c1 = p.i64(1);
  p.forLoop(p.i64(0), p.i64(ceilDiv(cols, act)), c1, [&](Value tt) {
    Value k0 = p.mul(tt, p.i64(act));
    Value k1 = p.minI(p.add(k0, p.i64(act)), nCols);
    Value amax = p.forLoop(k0, k1, c1, ValueRange{p.f32(0.0f)},
                           [&](Value k, ValueRange it) {
                             return SmallVector<Value>{p.fmax(
                                 it[0],
                                 p.fabs(p.load(t.ws, f32, p.add(qBase, k))))};
                           })[0];
    Value scale = p.fdiv(p.fmax(amax, p.f32(1e-4f)), p.f32(448.0f));
    p.ifThen(p.lt(k0, nCols),
             [&] { p.store(scale, t.s, f32, p.add(sBase, tt)); });
    p.forLoop(k0, k1, c1, [&](Value k) {
      p.store(p.fdiv(p.load(t.ws, f32, p.add(qBase, k)), scale), t.q, t.qT,
              p.add(qBase, k));
    });
  });
}

} // namespace

void emitGemmSwiGLUFP8Program(OpBuilder &b, const ProgramArgs &args,
                              int64_t n, int64_t k, int64_t tileN, int64_t act,
                              int64_t wbN, ArrayRef<Type> types) {
  // types: xq, w_gate, w_up, xs, w_gate_scale, w_up_scale, q, s, workspace
  ProgramBuilder p(b, args.loc);
  ProgramBuilder::ColumnTile ct = p.columnTile(args.pid, n, tileN);
  Value row = ct.row, f0 = ct.begin, f1 = ct.end;
  SwiGLUQuantTile t{args.buffers[0], args.buffers[3], types[0],
                    p.mul(row, p.i64(k)), p.mul(row, p.i64(ceilDiv(k, act))),
                    args.buffers[1], args.buffers[2], args.buffers[4],
                    args.buffers[5], types[1], types[2], args.buffers[6],
                    args.buffers[7], args.buffers[8], types[6], row};
  emitSwiGLUQuantTile(p, k, n, tileN, act, wbN, t, f0, f1);
}

void emitGemmDualFP8Program(OpBuilder &b, const ProgramArgs &args, int64_t n1,
                            int64_t n2, int64_t k, int64_t tileN, int64_t act,
                            int64_t wbN, ArrayRef<Type> types) {
  // types: xq, w1, w2, xs, ws1, ws2, out1, out2
  ProgramBuilder p(b, args.loc);
  Type f32 = b.getF32Type();
  int64_t kBlocks = ceilDiv(k, act);
  emitGemmDualSkeleton(
      p, args, n1, n2, tileN, 6, types,
      [&](unsigned which, Value row, Value col) {
        Value wsRow = p.mul(p.divs(col, p.i64(wbN)), p.i64(kBlocks));
        return blockDot(p, k, act, args.buffers[0], types[0],
                        p.mul(row, p.i64(k)), args.buffers[3],
                        p.mul(row, p.i64(kBlocks)), args.buffers[1 + which],
                        types[1 + which], p.mul(col, p.i64(k)), [&](Value kb) {
                          return p.load(args.buffers[4 + which], f32,
                                        p.add(wsRow, kb));
                        });
      });
}

void emitMoEUpFP8Program(OpBuilder &b, const ProgramArgs &args, int64_t hidden,
                         int64_t ffn, int64_t blockM, int64_t tileF,
                         int64_t act, ArrayRef<Type> types) {
  // types: xq, xs, sorted_token, block_expert, wg, wu, wgs, wus, act_q,
  // act_s, workspace
  ProgramBuilder p(b, args.loc);
  forEachGroupedRow(p, args, blockM, ffn, tileF, 2, types,
                    [&](Value r, Value t, Value e, Value f0, Value f1) {
    SwiGLUQuantTile st{args.buffers[0], args.buffers[1], types[0],
                       p.mul(t, p.i64(hidden)),
                       p.mul(t, p.i64(ceilDiv(hidden, act))),
                       p.loadPtr(args.buffers[4], e),
                       p.loadPtr(args.buffers[5], e),
                       p.loadPtr(args.buffers[6], e),
                       p.loadPtr(args.buffers[7], e), types[4], types[5],
                       args.buffers[8], args.buffers[9], args.buffers[10],
                       types[8], r};
    emitSwiGLUQuantTile(p, hidden, ffn, tileF, act, act, st, f0, f1);
  });
}

void emitMoEDownFP8Program(OpBuilder &b, const ProgramArgs &args,
                           int64_t hidden, int64_t ffn, int64_t blockM,
                           int64_t tileD, int64_t act, ArrayRef<Type> types) {
  // types: act_q, act_s, sorted_token, block_expert, wd, wds, rows
  ProgramBuilder p(b, args.loc);
  Type f32 = b.getF32Type();
  int64_t fBlocks = ceilDiv(ffn, act);
  forEachGroupedRow(p, args, blockM, hidden, tileD, 2, types,
                    [&](Value r, Value, Value e, Value d0, Value d1) {
    Value wd = p.loadPtr(args.buffers[4], e);
    Value wds = p.loadPtr(args.buffers[5], e);
    p.forLoop(d0, d1, p.i64(1), [&](Value d) {
      Value wsRow = p.mul(p.divs(d, p.i64(act)), p.i64(fBlocks));
      Value y = blockDot(p, ffn, act, args.buffers[0], types[0],
                         p.mul(r, p.i64(ffn)), args.buffers[1],
                         p.mul(r, p.i64(fBlocks)), wd, types[4],
                         p.mul(d, p.i64(ffn)), [&](Value kb) {
                           return p.load(wds, f32, p.add(wsRow, kb));
                         });
      p.store(y, args.buffers[6], types[6], p.add(p.mul(r, p.i64(hidden)), d));
    });
  });
}

} // namespace kiln::kernels
