//===- GemmKernels.cpp - Blocked AVX-512 and AMX-BF16 GEMM kernels -------===//
//
// The kernels behind GemmKernels.h, shared by the GEMM family's emitter and
// the experts' grouped GEMMs:
//
//  * AVX-512, fp32 (the default, the reference's numerics up to the order
//    of the sums): R x C register blocks of dot products, one zmm
//    accumulator of 16 K-lanes per output, weights widened from their
//    stored dtype on load; columns in panels whose weights stay in L2, rows
//    inside a panel, K innermost with a masked tail; lanes reduced at the
//    end of K, then the epilogue (SwiGLU, addends, the output dtype).
//  * AMX-BF16 (--cpu-gemm-precision=bf16, bf16 weights, K % 32 == 0, a
//    target with amx-tile/amx-bf16, blocks of >= 16 rows): the transposed
//    product C^T = W X^T, so that the weight rows, K-contiguous as stored,
//    are tdpbf16ps's A operand without any repacking; the activations of up
//    to `amxChunk` rows are rounded to bf16 and packed once into VNNI B
//    tiles (pairs of K, 16 rows per tile) on the stack; 2 x 2 tiles of
//    16 x 16 fp32 accumulators (32 weight rows x 32 activation rows, or
//    gate and up x 32 rows for SwiGLU) over the whole K; each C^T tile is
//    stored, transposed back in registers and finished by the epilogue.
//    Columns left over (< 16) go to the AVX-512 kernel.
//  * AVX-512-BF16 (the same precision on a target with avx512bf16 but no
//    AMX: AMD Zen 4 and 5): the same C^T product over the same packed
//    activations, in zmm registers: each accumulator holds one weight row's
//    sums for 16 activation rows, and vdpbf16ps adds a K pair of the 16
//    rows (a 64-byte row of a packed tile) times that weight row's pair,
//    broadcast; 6 weight rows (3 gate + 3 up) x 64 activation rows per
//    register block, transposed back at the end of K. Columns past the last
//    whole block go to the AVX-512 kernel. FP8: the e4m3 activations packed
//    exactly, each column block's weight rows converted to bf16 once per
//    chunk, partial sums per 128 of K promoted as on AMX.
//
// Rows may be a layout's (GemmSpec::rowMap): the activation row is then
// gathered through the row's token and padding rows are not written.
//
//===----------------------------------------------------------------------===//
#include "GemmKernels.h"
#include "Vector.h"

#include "kiln/Kernels/Program.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;

namespace kiln::cpu {

namespace {

using kernels::ProgramBuilder;

constexpr int64_t kLanes = 16;
/// Bytes of weights per column panel of the AVX-512 kernel: half of a
/// Sapphire Rapids core's 2 MiB L2, the rest for the activation rows.
constexpr int64_t kPanelBytes = 1 << 20;
/// Bytes of packed bf16 activations the AMX kernel keeps on the stack.
constexpr int64_t kPackBytes = 1 << 20;
constexpr int64_t kAmxMaxChunk = 256;
/// Rows of the bf16 GEMV kernel (GemmSpec::dpGemv).
constexpr int64_t kGemvMaxRows = 4;
/// The shortest K the bf16 GEMV takes (GemmSpec::dpGemv).
constexpr int64_t kGemvMinK = 2048;
/// GemmSpec::fp8Shift: words per row of its x buffer (K rounded up to 64).
int64_t shiftRowWords(int64_t k) { return (k + 63) / 64 * 64; }

int64_t dtypeBytes(Type t) { return (t.getIntOrFloatBitWidth() + 7) / 8; }

} // namespace

bool isStoredFloat(Type t) { return t.isF32() || t.isBF16() || t.isF16(); }

LogicalResult checkOperandTypes(GemmSpec &s, std::string &why) {
  auto e4m3 = [](Type t) { return isa<Float8E4M3FNType>(t); };
  bool ok = s.fp8 ? e4m3(s.xType) : isStoredFloat(s.xType);
  for (const Projection &p : s.projections)
    ok = ok && (s.fp8 ? e4m3(p.wType) : isStoredFloat(p.wType)) &&
         isStoredFloat(p.outType);
  if (!ok) {
    why = s.fp8 ? "FP8 operands other than e4m3 with f32, bf16 or f16 outputs"
                : "operands other than f32, bf16 or f16";
    return failure();
  }
  if (s.fp8 && (s.act % 16 != 0 || s.act < 16)) {
    why = "an FP8 activation tile that is not a multiple of 16";
    return failure();
  }
  if (s.quantQ >= 0 && s.tileN % s.act != 0 && s.tileN < s.combinedN) {
    why = "column tiles that split the output's quantization tiles";
    return failure();
  }
  return success();
}

void chooseBlocking(GemmSpec &s, const CpuCodegenOptions &options,
                    const CpuTarget &target) {
  bool gated = s.swiglu;
  s.regRows = gated ? 4 : 5;
  s.regCols = gated ? 2 : 4; // 16 or 20 zmm accumulators
  s.gemvCols = 2 * s.regCols; // one row: 8 accumulators
  if (s.fp8) { // partial sums and accumulators: 2 x 12 zmm, 2 x 8 for a row
    s.regRows = gated ? 3 : 4;
    s.regCols = gated ? 2 : 3;
    s.gemvCols = gated ? 4 : 8;
  }
  if (!target.avx512) {
    // AVX2: 16 ymm registers, two per 16-lane vector. 4 accumulators (8
    // ymm), the FP8 form's partial sums beside them; the rest for operands.
    s.isa = "avx2";
    s.regRows = 2;
    s.regCols = gated || s.fp8 ? 1 : 2;
    s.gemvCols = gated || s.fp8 ? 2 : 4;
  }
  int64_t wBytes = 0;
  for (const Projection &p : s.projections)
    wBytes = std::max(wBytes, dtypeBytes(p.wType) * (gated ? 2 : 1));
  // AVX2 parts have smaller L2s (256-512 KiB: Skylake client, Zen 1-3).
  int64_t panelBytes = target.avx512 ? kPanelBytes : kPanelBytes / 4;
  int64_t panel = panelBytes / (s.k * wBytes);
  panel = std::max<int64_t>(s.gemvCols, panel / s.gemvCols * s.gemvCols);
  s.panel = panel;

  // FP8 on AVX-512-BF16: e4m3 pairs by vdpbf16ps in the fp32 kernel too.
  s.fp8Perm = s.fp8 && target.avx512bf16 && target.avx512vbmi && !target.zen &&
              s.act % 64 == 0;
  s.fp8Shift = s.fp8Perm && !options.fp8ExactSubnormals;
  s.fp8Half =
      s.fp8 && target.avx512 && !target.zen && s.act % 32 == 0 && !s.fp8Perm;
  s.fp8Dot = s.fp8 && target.avx512bf16 && s.act % 32 == 0 && !s.fp8Half;
  if (s.fp8) {
    // e4m3 values are exact in bf16 and the tiles sum their exact products
    // in fp32 per `act` of K: the AVX-512 FP8 kernel's numerics (DeepSeek's
    // up to the order of the sums), so under either --cpu-gemm-precision.
    if (!target.avx512bf16)
      s.amxOff = "the target CPU lacks amx-bf16 and avx512-bf16";
    else if (s.act % 32 != 0)
      s.amxOff = "an FP8 activation tile that is not a multiple of 32";
    if (!s.amxOff.empty())
      return;
    s.amx = target.amxBF16;
    s.dpbf16 = !s.amx;
    // vdpbf16ps: partial sums and accumulators, 12 zmm each (4 weight rows,
    // or 2 gate and 2 up rows, x 3 blocks of 16 activation rows).
    s.dpCols = gated ? 2 : 4;
    s.dpBlocks = 3;
    int64_t chunk = kPackBytes / (((s.k + 31) / 32) * 64) / 32 * 32;
    s.amxChunk = std::clamp<int64_t>(chunk, 16, kAmxMaxChunk);
    return;
  }
  if (options.gemmPrecision != CpuGemmPrecision::BF16)
    return;
  if (!target.avx512bf16)
    s.amxOff = "the target CPU lacks amx-bf16 and avx512-bf16";
  else if (s.k % 32 != 0)
    s.amxOff = "K is not a multiple of 32";
  for (const Projection &p : s.projections)
    if (s.amxOff.empty() && !p.wType.isBF16())
      s.amxOff = "weights are not bf16";
  if (!s.amxOff.empty())
    return;
  s.amx = target.amxBF16;
  s.dpbf16 = !s.amx;
  // The bf16 GEMV for the rows past the last register block: measured
  // faster on AVX-512-BF16 parts without AMX (Zen 5: llama-shaped decode
  // 31.5 -> 20-21 ms at 2 threads) and slower on Sapphire Rapids, whose
  // fp32 kernel, 8 weight rows interleaved, reads faster (26.3 against
  // 35.4 ms; docs/benchmarks.md). On Zen 5 only for long rows: at K = 256
  // and 1024 its per-column reduction and epilogue cost more than the
  // stream gains (DeepSeek-shaped decode, 2 threads: the K = 1024 LM head
  // 1.82-1.94 ms against 1.41-1.54 on fp32, the experts' up projection
  // 0.83 against 0.47-0.55), at K = 2048 and 2688 it is level or ahead.
  s.dpGemv = !target.amxBF16 && s.k >= kGemvMinK;
  // vdpbf16ps: 24 of the 32 zmm accumulate (6 weight rows, or 3 gate and 3
  // up rows, x 4 blocks of 16 activation rows), 4 hold the activations:
  // 10 loads per 24 products, and a packed chunk's 64, 128 or 256 rows in
  // whole register blocks (3 blocks of 8 rows left one pass of 1 block,
  // latency-bound, at 64 rows: the K = 5632 down projection ran 19 %
  // slower).
  s.dpCols = gated ? 3 : 6;
  s.dpBlocks = 4;
  int64_t chunk = kPackBytes / (s.k * 2) / 32 * 32;
  s.amxChunk = std::clamp<int64_t>(chunk, 16, kAmxMaxChunk);
}

func::FuncOp makeHelper(ModuleOp module, Location loc, StringRef name,
                        unsigned numBuffers) {
  OpBuilder mb = OpBuilder::atBlockEnd(module.getBody());
  MLIRContext *ctx = module.getContext();
  auto ptr = LLVM::LLVMPointerType::get(ctx);
  auto i64 = IntegerType::get(ctx, 64);
  SmallVector<Type> inputs(numBuffers, ptr);
  inputs.append(4, i64);
  auto fn = func::FuncOp::create(mb, loc, name,
                                 FunctionType::get(ctx, inputs, {}));
  fn.setPrivate();
  fn->setAttr("llvm.linkage",
              LLVM::LinkageAttr::get(ctx, LLVM::Linkage::Internal));
  Block *entry = fn.addEntryBlock();
  OpBuilder eb = OpBuilder::atBlockEnd(entry);
  func::ReturnOp::create(eb, loc);
  return fn;
}

Body bodyOf(func::FuncOp fn, unsigned numBuffers) {
  Block &entry = fn.getBody().front();
  Body body{OpBuilder(fn.getContext()), {}, {}, {}, {}, {}};
  body.b.setInsertionPoint(entry.getTerminator());
  for (unsigned i = 0; i < numBuffers; ++i)
    body.buffers.push_back(entry.getArgument(i));
  body.r0 = entry.getArgument(numBuffers);
  body.r1 = entry.getArgument(numBuffers + 1);
  body.c0 = entry.getArgument(numBuffers + 2);
  body.c1 = entry.getArgument(numBuffers + 3);
  return body;
}

void callHelper(OpBuilder &b, Location loc, func::FuncOp fn,
                ArrayRef<Value> buffers, Value r0, Value r1, Value c0,
                Value c1) {
  SmallVector<Value> operands(buffers.begin(), buffers.end());
  operands.append({r0, r1, c0, c1});
  func::CallOp::create(b, loc, fn, operands);
}

namespace {

/// `if (cond) then() else otherwise()`.
void ifElse(OpBuilder &b, Location loc, Value cond, function_ref<void()> then,
            function_ref<void()> otherwise) {
  auto ifOp = scf::IfOp::create(b, loc, cond, /*withElseRegion=*/true);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
  then();
  b.setInsertionPoint(ifOp.elseBlock()->getTerminator());
  otherwise();
}

class GemmCodegen {
public:
  GemmCodegen(const GemmSpec &spec, OpBuilder &b, Location loc,
              ArrayRef<Value> buffers)
      : s(spec), b(b), loc(loc), p(b, loc), v(b, loc),
        buffers(buffers.begin(), buffers.end()) {}

  /// The epilogue of one output row: lanes consecutive columns from `col`.
  /// `perWeight` holds one vector<lanes x f32> of sums per weight.
  void finish(const Projection &pr, Value row, Value col,
              ArrayRef<Value> perWeight) {
    Value val = s.swiglu ? v.swiglu(perWeight[0], perWeight[1]) : perWeight[0];
    finishCombined(pr, row, col, val);
  }

  void finishCombined(const Projection &pr, Value row, Value col, Value val) {
    auto store = [&] {
      int64_t lanes = cast<VectorType>(val.getType()).getDimSize(0);
      Value idx = p.add(p.mul(row, p.i64(pr.n)), col);
      for (unsigned a : pr.addends)
        val = v.add(val, v.load(buffers[a], pr.outType, idx, lanes));
      v.store(val, buffers[pr.out], pr.outType, idx);
    };
    if (s.rowMap < 0)
      return store();
    // A layout's padding row (token -1) is not written.
    p.ifThen(p.lt(p.i64(-1), token(row)), store);
  }

  /// The token of layout row `row` (GemmSpec::rowMap).
  Value token(Value row) {
    return p.load(buffers[s.rowMap], s.rowMapType, row);
  }
  /// The activation row of output row `row`.
  Value xRow(Value row) {
    if (s.rowMap < 0 || !s.gatherX)
      return row;
    Value t = token(row);
    return p.select(p.lt(t, p.i64(0)), p.i64(0), t);
  }

  //===--------------------------------------------------------------------===//
  // AVX-512
  //===--------------------------------------------------------------------===//

  /// rows x cols outputs at (r, c): dot products over K in zmm lanes.
  /// `stream`: the weights come from memory once (blocks of fewer rows than
  /// the register block: decode's GEMVs): K in steps of 32 (a 64-byte line
  /// of 16-bit weights per column and step), and each step prefetches the
  /// same K of the next column block's weights into L2, so that block's
  /// rows stream while this one computes (the hardware prefetcher stops at
  /// every 4 KiB page, one weight row of K = 2048 bf16). Every instance
  /// sums an output in the same order (16 lanes over K, then the lanes), so
  /// results do not depend on how rows fall into blocks, i.e. on threads.
  /// The end of a register block of both micro-kernels: the lanes of
  /// accumulator (i * cols + j) * nw + w reduced, then each row finished.
  void finishBlock(const Projection &pr, int64_t rows, int64_t cols, Value r,
                   Value c, ArrayRef<Value> acc) {
    int64_t nw = pr.weights.size();
    for (int64_t i = 0; i < rows; ++i) {
      SmallVector<Value> perWeight;
      for (int64_t w = 0; w < nw; ++w) {
        SmallVector<Value> sums;
        for (int64_t j = 0; j < cols; ++j)
          sums.push_back(v.reduceAdd(acc[(i * cols + j) * nw + w]));
        perWeight.push_back(v.fromElements(sums));
      }
      finish(pr, p.add(r, p.i64(i)), c, perWeight);
    }
  }

  void avxMicro(const Projection &pr, int64_t rows, int64_t cols, Value r,
                Value c, bool stream = false, Value xb = {}) {
    if (s.fp8)
      return avxMicroFP8(pr, rows, cols, r, c, stream, xb);
    int64_t nw = pr.weights.size(), k = s.k;
    int64_t kStep = stream ? 2 * kLanes : kLanes;
    int64_t steps = k / kStep, rest = k % kStep;
    SmallVector<Value> xBase, wBase;
    for (int64_t i = 0; i < rows; ++i)
      xBase.push_back(p.mul(xRow(p.add(r, p.i64(i))), p.i64(k)));
    for (int64_t j = 0; j < cols; ++j)
      wBase.push_back(p.mul(p.add(c, p.i64(j)), p.i64(k)));
    auto at = [&](int64_t i, int64_t j, int64_t w) {
      return (i * cols + j) * nw + w;
    };
    auto step = [&](Value off, int64_t active, SmallVector<Value> out) {
      SmallVector<Value> xs;
      for (int64_t i = 0; i < rows; ++i)
        xs.push_back(
            v.load(buffers[s.x], s.xType, p.add(xBase[i], off), kLanes, active));
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t w = 0; w < nw; ++w) {
          Value wv = v.load(buffers[pr.weights[w]], pr.wType,
                            p.add(wBase[j], off), kLanes, active);
          for (int64_t i = 0; i < rows; ++i)
            out[at(i, j, w)] = v.fma(xs[i], wv, out[at(i, j, w)]);
        }
      return out;
    };
    SmallVector<Value> acc(rows * cols * nw, v.splat(0.0f, kLanes));
    int64_t wBytes = dtypeBytes(pr.wType);
    if (steps > 0)
      acc = p.forLoop(
          p.i64(0), p.i64(steps * kStep), p.i64(kStep), acc,
          [&](Value kk, ValueRange it) {
            SmallVector<Value> out(it.begin(), it.end());
            for (int64_t sub = 0; sub < kStep / kLanes; ++sub)
              out = step(p.add(kk, p.i64(sub * kLanes)), -1, out);
            if (stream)
              for (int64_t j = 0; j < cols; ++j)
                for (int64_t w = 0; w < nw; ++w)
                  for (int64_t line = 0; line < kStep * wBytes; line += 64) {
                    Value next = p.add(p.add(wBase[j], p.i64(cols * k)), kk);
                    Value byte = p.add(p.mul(next, p.i64(wBytes)), p.i64(line));
                    LLVM::Prefetch::create(
                        b, loc, v.byteAddr(buffers[pr.weights[w]], byte),
                        /*rw=*/0, /*hint=L2*/ 2, /*data=*/1);
                  }
            return out;
          });
    int64_t done = steps * kStep;
    for (; rest >= kLanes; rest -= kLanes, done += kLanes)
      acc = step(p.i64(done), -1, acc);
    if (rest > 0)
      acc = step(p.i64(done), rest, acc);
    finishBlock(pr, rows, cols, r, c, acc);
  }

  /// The FP8 form of avxMicro: e4m3 x and weights decoded on load, lanes
  /// of partial sums per K block of `act`, each block promoted into the
  /// accumulators by an FMA with its scale x_s[row, kb] * w_s[col / wbN,
  /// kb]; `stream` prefetches the next column block's weights per block.
  /// With GemmSpec::fp8Dot both are converted to bf16 pairs instead (exact)
  /// and each lane's partial sum takes a pair of products per vdpbf16ps:
  /// a third of the instructions per weight, so decode's GEMVs read one
  /// byte per weight at memory speed rather than at the speed of decoding.
  /// With `xb` (GemmSpec::fp8Shift, GEMV rows) x's rows are read from it,
  /// as stageShiftRows left them.
  void avxMicroFP8(const Projection &pr, int64_t rows, int64_t cols, Value r,
                   Value c, bool stream, Value xb = {}) {
    int64_t nw = pr.weights.size(), k = s.k, act = s.act;
    int64_t kBlocks = (k + act - 1) / act, fullBlocks = k / act;
    Type f32 = b.getF32Type();
    SmallVector<Value> xBase, xsBase, wBase, wsBase;
    for (int64_t i = 0; i < rows; ++i) {
      Value xr = xRow(p.add(r, p.i64(i)));
      xBase.push_back(p.mul(xr, p.i64(k)));
      xsBase.push_back(p.mul(xr, p.i64(kBlocks)));
    }
    for (int64_t j = 0; j < cols; ++j) {
      Value col = p.add(c, p.i64(j));
      wBase.push_back(p.mul(col, p.i64(k)));
      wsBase.push_back(p.mul(p.divs(col, p.i64(s.wbN)), p.i64(kBlocks)));
    }
    int64_t n = rows * cols * nw;
    auto at = [&](int64_t i, int64_t j, int64_t w) {
      return (i * cols + j) * nw + w;
    };
    // 32 e4m3 values from element `idx` of `buf` as the bf16 pairs
    // vdpbf16ps reads (exact), the first `active` of them.
    auto pairs = [&](Value buf, Type type, Value idx, int64_t active) {
      return vector::BitCastOp::create(
          b, loc, v.bf16Pairs(),
          v.e4m3ToBF16Bits(
              v.loadRaw(buf, type, idx, 32, active < 32 ? active : -1)));
    };
    // One K block [k0, k0 + len): partial sums, then the promotion.
    auto block = [&](Value kb, Value k0, int64_t len, SmallVector<Value> acc) {
      SmallVector<Value> part(n, v.splat(0.0f, kLanes));
      // fp8Shift: 64 of K per step (the last masked), x from xb.
      for (int64_t off = 0; xb && off < len; off += 64) {
        int64_t active = std::min<int64_t>(64, len - off);
        Value kk = p.add(k0, p.i64(off));
        SmallVector<std::pair<Value, Value>> xs;
        for (int64_t i = 0; i < rows; ++i) {
          Value at = p.mul(p.add(p.i64(i * shiftRowWords(k)), kk), p.i64(2));
          xs.push_back({v.loadBits(xb, at, v.bf16Pairs()),
                        v.loadBits(xb, p.add(at, p.i64(64)), v.bf16Pairs())});
        }
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t w = 0; w < nw; ++w) {
            auto [even, odd] = v.e4m3ToBF16Shifted(
                v.loadRaw(buffers[pr.weights[w]], pr.wType, p.add(wBase[j], kk),
                          64, active < 64 ? active : -1));
            Value we = vector::BitCastOp::create(b, loc, v.bf16Pairs(), even);
            Value wo = vector::BitCastOp::create(b, loc, v.bf16Pairs(), odd);
            for (int64_t i = 0; i < rows; ++i) {
              Value &acc = part[at(i, j, w)];
              acc = v.dpbf16(v.dpbf16(acc, xs[i].first, we), xs[i].second, wo);
            }
          }
      }
      // fp8Perm: 64 of K per step, two vdpbf16ps per output.
      int64_t permEnd = s.fp8Perm && !xb ? len / 64 * 64 : 0;
      for (int64_t off = 0; off < permEnd; off += 64) {
        Value kk = p.add(k0, p.i64(off));
        auto unpacked = [&](Value buf, Type type, Value idx) {
          auto [lo, hi] = v.e4m3ToBF16Unpacked(v.loadRaw(buf, type, idx, 64));
          auto pairs = [&](Value bits) {
            return vector::BitCastOp::create(b, loc, v.bf16Pairs(), bits)
                .getResult();
          };
          return std::pair{pairs(lo), pairs(hi)};
        };
        SmallVector<std::pair<Value, Value>> xs;
        for (int64_t i = 0; i < rows; ++i)
          xs.push_back(unpacked(buffers[s.x], s.xType, p.add(xBase[i], kk)));
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t w = 0; w < nw; ++w) {
            auto [wlo, whi] =
                unpacked(buffers[pr.weights[w]], pr.wType, p.add(wBase[j], kk));
            for (int64_t i = 0; i < rows; ++i) {
              Value &acc = part[at(i, j, w)];
              acc =
                  v.dpbf16(v.dpbf16(acc, xs[i].first, wlo), xs[i].second, whi);
            }
          }
      }
      // AVX-512-BF16: 32 of K per step, one vdpbf16ps per output (with
      // fp8Perm, a block's last len % 64).
      for (int64_t off = permEnd; (s.fp8Dot || s.fp8Perm) && !xb && off < len;
           off += 32) {
        int64_t active = std::min<int64_t>(32, len - off);
        Value kk = p.add(k0, p.i64(off));
        SmallVector<Value> xs;
        for (int64_t i = 0; i < rows; ++i)
          xs.push_back(pairs(buffers[s.x], s.xType, p.add(xBase[i], kk), active));
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t w = 0; w < nw; ++w) {
            Value wv = pairs(buffers[pr.weights[w]], pr.wType,
                             p.add(wBase[j], kk), active);
            for (int64_t i = 0; i < rows; ++i)
              part[at(i, j, w)] = v.dpbf16(part[at(i, j, w)], xs[i], wv);
          }
      }
      // f16-widened: 32 of K per step, two FMAs per output. x's NaN codes
      // (from a NaN activation) stay NaN; weights hold none (the compiler
      // rejects e4m3 weights with NaN codes).
      for (int64_t off = 0; s.fp8Half && off < len; off += 32) {
        int64_t active = std::min<int64_t>(32, len - off);
        Value kk = p.add(k0, p.i64(off));
        auto raw = [&](Value buf, Type type, Value idx) {
          return v.loadRaw(buf, type, idx, 32, active < 32 ? active : -1);
        };
        SmallVector<std::pair<Value, Value>> xs;
        for (int64_t i = 0; i < rows; ++i)
          xs.push_back(activationToF32Scaled(
              raw(buffers[s.x], s.xType, p.add(xBase[i], kk))));
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t w = 0; w < nw; ++w) {
            auto [wlo, whi] = v.e4m3ToF32Scaled(
                raw(buffers[pr.weights[w]], pr.wType, p.add(wBase[j], kk)));
            for (int64_t i = 0; i < rows; ++i) {
              Value &acc = part[at(i, j, w)];
              acc = v.fma(xs[i].first, wlo, acc);
              acc = v.fma(xs[i].second, whi, acc);
            }
          }
      }
      for (int64_t off = 0; !s.fp8Dot && !s.fp8Half && off < len;
           off += kLanes) {
        int64_t active = std::min(kLanes, len - off);
        Value kk = p.add(k0, p.i64(off));
        SmallVector<Value> xs;
        for (int64_t i = 0; i < rows; ++i)
          xs.push_back(v.load(buffers[s.x], s.xType, p.add(xBase[i], kk),
                              kLanes, active));
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t w = 0; w < nw; ++w) {
            Value wv = v.load(buffers[pr.weights[w]], pr.wType,
                              p.add(wBase[j], kk), kLanes, active);
            for (int64_t i = 0; i < rows; ++i)
              part[at(i, j, w)] = v.fma(xs[i], wv, part[at(i, j, w)]);
          }
      }
      if (stream)
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t w = 0; w < nw; ++w)
            for (int64_t line = 0; line < len; line += 64) {
              Value next = p.add(p.add(wBase[j], p.i64(cols * k)), k0);
              LLVM::Prefetch::create(
                  b, loc,
                  v.byteAddr(buffers[pr.weights[w]], p.add(next, p.i64(line))),
                  /*rw=*/0, /*hint=L2*/ 2, /*data=*/1);
            }
      SmallVector<Value> sx;
      for (int64_t i = 0; i < rows; ++i)
        sx.push_back(p.load(buffers[s.xScale], f32, p.add(xsBase[i], kb)));
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t w = 0; w < nw; ++w) {
          Value sw = p.load(buffers[pr.wScales[w]], f32, p.add(wsBase[j], kb));
          for (int64_t i = 0; i < rows; ++i) {
            // fp8Half's partial sums are 2^-16 of the products' (exactly),
            // fp8Shift's 2^-10.
            Value sc = p.fmul(sx[i], sw);
            if (s.fp8Half)
              sc = p.fmul(sc, p.f32(65536.0f));
            if (xb)
              sc = p.fmul(sc, p.f32(0x1p10f));
            acc[at(i, j, w)] = v.fma(part[at(i, j, w)], v.broadcast(sc, kLanes),
                                     acc[at(i, j, w)]);
          }
        }
      return acc;
    };
    SmallVector<Value> acc(n, v.splat(0.0f, kLanes));
    if (fullBlocks > 0)
      acc = p.forLoop(p.i64(0), p.i64(fullBlocks), p.i64(1), acc,
                      [&](Value kb, ValueRange it) {
                        return block(kb, p.mul(kb, p.i64(act)), act,
                                     SmallVector<Value>(it));
                      });
    if (k % act)
      acc = block(p.i64(fullBlocks), p.i64(fullBlocks * act), k % act, acc);
    finishBlock(pr, rows, cols, r, c, acc);
  }

  /// Rows [r0, r1) x columns [c0, c1) of projection `pr`: full register
  /// blocks of rows, then the rest of the rows (fewer than a block: all of
  /// a decode) as one streamed block, one row of it `gemvCols` wide, or
  /// with GemmSpec::dpGemv as the bf16 GEMV over all the columns at once
  /// (its weights stream; panels are for reuse across register blocks).
  void avxBlock(const Projection &pr, Value r0, Value r1, Value c0, Value c1,
                Value xb = {}) {
    int64_t rb = s.regRows;
    Value rFull = p.add(r0, roundDown(sub(r1, r0), rb));
    Value rest = sub(r1, rFull);
    if (s.fp8Shift) {
      assert(rb - 1 <= kGemvMaxRows && "the GEMV's row buffer");
      p.ifThen(p.lt(p.i64(0), rest), [&] { stageShiftRows(xb, rFull, rest); });
    }
    p.forLoop(c0, c1, p.i64(s.panel), [&](Value pc) {
      Value pe = p.minI(p.add(pc, p.i64(s.panel)), c1);
      auto columns = [&](int64_t rows, Value r, bool stream) {
        int64_t cb = rows == 1 && stream ? s.gemvCols : s.regCols;
        Value cFull = p.add(pc, roundDown(sub(pe, pc), cb));
        // The GEMV rows of fp8Shift read x from xb.
        Value staged = stream && s.fp8Shift ? xb : Value();
        p.forLoop(pc, cFull, p.i64(cb), [&](Value c) {
          avxMicro(pr, rows, cb, r, c, stream, staged);
        });
        p.forLoop(cFull, pe, p.i64(1),
                  [&](Value c) { avxMicro(pr, rows, 1, r, c, false, staged); });
      };
      p.forLoop(r0, rFull, p.i64(rb), [&](Value r) { columns(rb, r, false); });
      if (!s.dpGemv)
        for (int64_t n = 1; n < rb; ++n)
          p.ifThen(p.eq(rest, p.i64(n)), [&] { columns(n, rFull, true); });
    });
    if (s.dpGemv) {
      assert(rb - 1 <= kGemvMaxRows && "the GEMV's row buffer");
      for (int64_t n = 1; n < rb; ++n)
        p.ifThen(p.eq(rest, p.i64(n)),
                 [&] { dpGemv(pr, xb, rFull, n, c0, c1); });
    }
  }

  /// 32 e4m3 activation bytes as two vector<16 x f32> (bytes 0-15, 16-31)
  /// of their values times 2^-8 (VectorBuilder::e4m3ToF32Scaled), the NaN
  /// codes (from a NaN activation) NaN.
  std::pair<Value, Value> activationToF32Scaled(Value bytes) {
    auto [lo, hi] = v.e4m3ToF32Scaled(bytes);
    Value nan = v.e4m3NaN(bytes);
    Value nanV = v.splat(std::numeric_limits<float>::quiet_NaN(), 16);
    auto half = [&](Value x, int64_t first) {
      Value m = vector::ExtractStridedSliceOp::create(
          b, loc, nan, ArrayRef<int64_t>{first}, ArrayRef<int64_t>{16},
          ArrayRef<int64_t>{1});
      return arith::SelectOp::create(b, loc, m, nanV, x).getResult();
    };
    return {half(lo, 0), half(hi, 16)};
  }

  /// GemmSpec::fp8Shift: x's rows [r, r + rows) (rows < a register block)
  /// into `xb` as bf16 times 2^110 (exact: e4m3 values have 4 significant
  /// bits; the f16 route keeps subnormals; 448 x 2^110 < 2^119, and with
  /// the weights' 2^-120 every product is a normal fp32 of xw 2^-10, so the
  /// promotion's 2^10 cannot overflow the scale), per 64 of K the 32 even
  /// elements, then the 32 odd (the pairs of VectorBuilder::
  /// e4m3ToBF16Shifted's weights), K's tail zero; NaN codes stay NaN.
  void stageShiftRows(Value xb, Value r, Value rows) {
    int64_t k = s.k, words = shiftRowWords(k);
    p.forLoop(p.i64(0), rows, p.i64(1), [&](Value i) {
      Value src = p.mul(xRow(p.add(r, i)), p.i64(k));
      Value dst = p.mul(i, p.i64(words));
      auto chunk = [&](Value off, int64_t active) {
        Value bytes =
            v.loadRaw(buffers[s.x], s.xType, p.add(src, off), 64, active);
        for (int64_t parity = 0; parity < 2; ++parity) {
          SmallVector<int64_t> pick;
          for (int64_t e = 0; e < 32; ++e)
            pick.push_back(2 * e + parity);
          Value half = vector::ShuffleOp::create(b, loc, bytes, bytes, pick);
          auto [lo, hi] = activationToF32Scaled(half);
          Value x = v.mul(v.concat(lo, hi), v.splat(0x1p118f, 32));
          Value at =
              p.mul(p.add(dst, p.add(off, p.i64(32 * parity))), p.i64(2));
          v.storeBits(v.toBF16Pairs(x), xb, at);
        }
      };
      p.forLoop(p.i64(0), p.i64(k / 64 * 64), p.i64(64),
                [&](Value off) { chunk(off, -1); });
      if (k % 64)
        chunk(p.i64(k / 64 * 64), k % 64);
    });
  }

  /// Rows [r, r + rows) (fewer than a register block: decode) x columns
  /// [c0, c1) by vdpbf16ps (GemmSpec::dpGemv): the rows rounded to bf16 once
  /// into `xb`, then each weight row read from start to end in turn, so the
  /// weights are one sequential stream (on a Zen 5 core a 131 MB bf16 GEMV
  /// read 31-35 GB/s that way, 17-20 with 8 rows 4 KiB apart interleaved);
  /// 4 / rows accumulators per row over alternate 32-K steps for enough
  /// independent vdpbf16ps, the weight row 16 rows ahead prefetched; 8
  /// columns (gate and up rows in turn for SwiGLU) per epilogue.
  void dpGemv(const Projection &pr, Value xb, Value r, int64_t rows,
              Value c0, Value c1) {
    int64_t k = s.k, steps = k / 32, nw = pr.weights.size();
    int64_t chains = std::max<int64_t>(1, kGemvMaxRows / rows);
    VectorType bf16x32 = v.bf16Pairs();
    for (int64_t i = 0; i < rows; ++i) {
      Value src = p.mul(xRow(p.add(r, p.i64(i))), p.i64(k));
      p.forLoop(p.i64(0), p.i64(steps), p.i64(1), [&](Value st) {
        Value at = p.add(src, p.mul(st, p.i64(32)));
        Value lo = v.load(buffers[s.x], s.xType, at, 16);
        Value hi = v.load(buffers[s.x], s.xType, p.add(at, p.i64(16)), 16);
        v.storeBits(v.toBF16Pairs(v.concat(lo, hi)), xb,
                    p.mul(p.add(p.i64(i * k), p.mul(st, p.i64(32))),
                          p.i64(2)));
      });
    }
    // One weight row's dot with every row: `rows` f32 scalars.
    auto dot = [&](Value w, Value row) {
      Value base = p.mul(row, p.i64(k * 2));
      Value ahead = p.add(base, p.i64(16 * k * 2));
      auto step = [&](Value st, int64_t chain, SmallVector<Value> &acc) {
        Value off = p.mul(st, p.i64(64));
        // Weight rows need not be 64-byte aligned (checkpoint offsets).
        Value wv = LLVM::LoadOp::create(b, loc, bf16x32,
                                        v.byteAddr(w, p.add(base, off)), 2);
        LLVM::Prefetch::create(b, loc, v.byteAddr(w, p.add(ahead, off)),
                               /*rw=*/0, /*hint=L1*/ 3, /*data=*/1);
        for (int64_t i = 0; i < rows; ++i) {
          Value xv = v.loadBits(xb, p.add(p.i64(i * k * 2), off), bf16x32);
          acc[i * chains + chain] = v.dpbf16(acc[i * chains + chain], xv, wv);
        }
      };
      int64_t full = steps / chains * chains;
      SmallVector<Value> acc(rows * chains, v.splat(0.0f, 16));
      if (full > 0)
        acc = p.forLoop(p.i64(0), p.i64(full), p.i64(chains), acc,
                        [&](Value st, ValueRange it) {
                          SmallVector<Value> out(it.begin(), it.end());
                          for (int64_t c = 0; c < chains; ++c)
                            step(p.add(st, p.i64(c)), c, out);
                          return out;
                        });
      for (int64_t t = full; t < steps; ++t)
        step(p.i64(t), t - full, acc);
      SmallVector<Value> sums;
      for (int64_t i = 0; i < rows; ++i) {
        SmallVector<Value> c(acc.begin() + i * chains,
                             acc.begin() + (i + 1) * chains);
        while (c.size() > 1) { // pairwise, in a fixed order
          SmallVector<Value> next;
          for (size_t j = 0; j + 1 < c.size(); j += 2)
            next.push_back(v.add(c[j], c[j + 1]));
          if (c.size() % 2)
            next.push_back(c.back());
          c = std::move(next);
        }
        sums.push_back(v.reduceAdd(c.front()));
      }
      return sums;
    };
    // `cols` columns from n: each weight's rows in turn, then the epilogue.
    auto columns = [&](Value n, int64_t cols) {
      // out[w][j][i]
      SmallVector<SmallVector<SmallVector<Value>>> out(nw);
      for (int64_t w = 0; w < nw; ++w)
        for (int64_t j = 0; j < cols; ++j)
          out[w].push_back(dot(buffers[pr.weights[w]], p.add(n, p.i64(j))));
      for (int64_t i = 0; i < rows; ++i) {
        SmallVector<Value> perWeight;
        for (int64_t w = 0; w < nw; ++w) {
          SmallVector<Value> lanes;
          for (int64_t j = 0; j < cols; ++j)
            lanes.push_back(out[w][j][i]);
          perWeight.push_back(v.fromElements(lanes));
        }
        finish(pr, p.add(r, p.i64(i)), n, perWeight);
      }
    };
    Value cFull = p.add(c0, roundDown(sub(c1, c0), 8));
    p.forLoop(c0, cFull, p.i64(8), [&](Value n) { columns(n, 8); });
    p.forLoop(cFull, c1, p.i64(1), [&](Value n) { columns(n, 1); });
  }

  /// The output quantization of rows [r0, r1) x columns [c0, c1) (whole
  /// `act` tiles, or up to n): the reference's arithmetic, step for step
  /// (amax, s = max(amax, 1e-4) / 448, q = e4m3(v / s)), on the f32 values
  /// this kernel wrote; a layout's padding rows are skipped.
  void quantizeOutput(const Projection &pr, Value r0, Value r1, Value c0,
                      Value c1) {
    Type f32 = b.getF32Type();
    int64_t act = s.act, tiles = (pr.n + act - 1) / act;
    Value one = p.i64(1);
    p.forLoop(r0, r1, one, [&](Value row) {
      auto body = [&] {
        Value rowBase = p.mul(row, p.i64(pr.n));
        p.forLoop(p.divs(c0, p.i64(act)), p.ceilDivI(c1, act), one,
                  [&](Value tile) {
          Value k0 = p.mul(tile, p.i64(act));
          Value k1 = p.minI(p.add(k0, p.i64(act)), c1);
          Value amax = p.forLoop(
              k0, k1, one, ValueRange{p.f32(0.0f)},
              [&](Value k, ValueRange it) {
                Value x = p.load(buffers[pr.out], f32, p.add(rowBase, k));
                return SmallVector<Value>{p.fmax(it[0], p.fabs(x))};
              })[0];
          Value scale = p.fdiv(p.fmax(amax, p.f32(1e-4f)), p.f32(448.0f));
          p.store(scale, buffers[s.quantS], f32,
                  p.add(p.mul(row, p.i64(tiles)), tile));
          p.forLoop(k0, k1, one, [&](Value k) {
            Value at = p.add(rowBase, k);
            p.store(p.fdiv(p.load(buffers[pr.out], f32, at), scale),
                    buffers[s.quantQ], s.quantType, at);
          });
        });
      };
      if (s.rowMap < 0)
        return body();
      p.ifThen(p.lt(p.i64(-1), token(row)), body);
    });
  }

  //===--------------------------------------------------------------------===//
  // AMX-BF16
  //===--------------------------------------------------------------------===//

  /// K steps of 32 of a row (the last one partial when K % 32 != 0).
  int64_t kSteps() const { return (s.k + 31) / 32; }

  /// Rows [rc, rc + rows) of x as bf16 VNNI tiles: tile (mb, kb) at byte
  /// (mb * kSteps + kb) * 1024 holds row i = K pair kb * 16 + i of the 16
  /// rows mb * 16 + m, 4 bytes per row m; rows past `rows` and K past the
  /// end are zeros. e4m3 rows are converted exactly (e4m3ToBF16Bits),
  /// others rounded to bf16.
  void pack(Value packed, Value rc, Value rows, Value mblocks) {
    int64_t steps = kSteps(), full = s.k / 32;
    auto i32x16 = VectorType::get({16}, b.getI32Type());
    Value zero = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(i32x16, b.getI32IntegerAttr(0)));
    auto step = [&](Value mb, Value kb, int64_t active) {
      SmallVector<Value> pairs;
      for (int64_t j = 0; j < 16; ++j) {
        Value local = p.add(p.mul(mb, p.i64(16)), p.i64(j));
        Value valid = p.lt(local, rows);
        Value m = xRow(p.add(rc, p.select(valid, local, p.i64(0))));
        Value base = p.add(p.mul(m, p.i64(s.k)), p.mul(kb, p.i64(32)));
        Value pair;
        if (s.fp8) {
          pair = vector::BitCastOp::create(
              b, loc, i32x16,
              v.e4m3ToBF16Bits(
                  v.loadRaw(buffers[s.x], s.xType, base, 32, active)));
        } else {
          Value lo = v.load(buffers[s.x], s.xType, base, 16,
                            std::min<int64_t>(active, 16));
          Value hi = v.load(buffers[s.x], s.xType, p.add(base, p.i64(16)),
                            16, active < 0 ? -1 : std::max<int64_t>(active - 16, 0));
          pair = v.toBF16Pairs(v.concat(lo, hi));
        }
        pairs.push_back(p.select(valid, pair, zero));
      }
      v.storeTransposedTile(
          pairs, packed,
          p.mul(p.add(p.mul(mb, p.i64(steps)), kb), p.i64(1024)));
    };
    p.forLoop(p.i64(0), mblocks, p.i64(1), [&](Value mb) {
      p.forLoop(p.i64(0), p.i64(full), p.i64(1),
                [&](Value kb) { step(mb, kb, -1); });
      if (full < steps)
        step(mb, p.i64(full), s.k - 32 * full);
    });
  }

  /// Weight rows [lo, hi) of the column block at `next` (its 16 nA rows,
  /// numbered as amxTiles' A tiles) to prefetch into L2 during a K loop,
  /// one 64-byte line per row and K step.
  struct PanelPrefetch {
    Value next, lo, hi;
  };

  /// nA x nB accumulator tiles of C^T: A tile a is weight rows n + 16a (or,
  /// for SwiGLU, gate rows n and up rows n), B tile b the packed rows
  /// (mb + b) * 16 of the chunk at rc; then the epilogue of its rows.
  void amxTiles(const Projection &pr, Value packed, Value scratch, Value rc,
                Value rows, Value n, Value mb, int64_t nA, int64_t nB,
                std::optional<PanelPrefetch> prefetch = std::nullopt) {
    int64_t kb32 = kSteps();
    bool gated = pr.weights.size() == 2;
    SmallVector<Value> aBase;
    for (int64_t a = 0; a < nA; ++a) {
      Value row = gated ? n : p.add(n, p.i64(16 * a));
      aBase.push_back(p.mul(row, p.i64(s.k * 2)));
    }
    Value wStride = p.i64(s.k * 2), bStride = p.i64(64);
    SmallVector<Value> acc;
    for (int64_t t = 0; t < nA * nB; ++t)
      acc.push_back(v.tileZero());
    acc = p.forLoop(
        p.i64(0), p.i64(kb32), p.i64(1), acc, [&](Value kb, ValueRange it) {
          SmallVector<Value> as, bs, out;
          Value kOff = p.mul(kb, p.i64(64));
          for (int64_t a = 0; a < nA; ++a)
            as.push_back(
                v.tileLoad(v.byteAddr(buffers[pr.weights[gated ? a : 0]],
                                      p.add(aBase[a], kOff)),
                           wStride));
          for (int64_t bi = 0; bi < nB; ++bi) {
            Value t = p.add(p.mul(p.add(mb, p.i64(bi)), p.i64(kb32)), kb);
            bs.push_back(
                v.tileLoad(v.byteAddr(packed, p.mul(t, p.i64(1024))), bStride));
          }
          for (int64_t a = 0; a < nA; ++a)
            for (int64_t bi = 0; bi < nB; ++bi)
              out.push_back(v.tileDot(it[a * nB + bi], as[a], bs[bi]));
          if (prefetch)
            p.forLoop(prefetch->lo, prefetch->hi, p.i64(1), [&](Value j) {
              // Row j of the next block: A tile j / 16, its row j % 16.
              Value tileIdx = p.divs(j, p.i64(16));
              Value row = gated ? p.add(prefetch->next, p.rems(j, p.i64(16)))
                                : p.add(prefetch->next, j);
              Value base = buffers[pr.weights[0]];
              if (gated)
                base = p.select(p.eq(tileIdx, p.i64(0)), base,
                                buffers[pr.weights[1]]);
              LLVM::Prefetch::create(
                  b, loc,
                  v.byteAddr(base, p.add(p.mul(row, p.i64(s.k * 2)), kOff)),
                  /*rw=*/0, /*hint=L2*/ 2, /*data=*/1);
            });
          return out;
        });
    for (int64_t t = 0; t < nA * nB; ++t)
      v.tileStore(v.byteAddr(scratch, p.i64(t * 1024)), bStride, acc[t]);

    auto f32x16 = v.f32Vec(16);
    auto tileRows = [&](int64_t t) {
      SmallVector<Value> r;
      for (int64_t i = 0; i < 16; ++i)
        r.push_back(v.loadBits(scratch, p.i64(t * 1024 + i * 64), f32x16));
      return r;
    };
    for (int64_t bi = 0; bi < nB; ++bi) {
      Value first = p.mul(p.add(mb, p.i64(bi)), p.i64(16)); // chunk-local
      finishTiles(pr, rc, rows, first, n, nA,
                  [&](int64_t a) { return tileRows(a * nB + bi); });
    }
  }

  /// The epilogue of one 16-row block of C^T tiles: `tile(a)` gives the 16
  /// rows of tile a (columns n + 16a, or for SwiGLU gate a = 0 and up a =
  /// 1, columns n); its rows are the chunk's rows first + m (those below
  /// `rows`) of the chunk at rc.
  void finishTiles(const Projection &pr, Value rc, Value rows, Value first,
                   Value n, int64_t nA,
                   function_ref<SmallVector<Value>(int64_t)> tile) {
    auto emitRows = [&](ArrayRef<Value> transposed, Value col) {
      for (int64_t m = 0; m < 16; ++m) {
        Value local = p.add(first, p.i64(m));
        p.ifThen(p.lt(local, rows), [&] {
          finishCombined(pr, p.add(rc, local), col, transposed[m]);
        });
      }
    };
    if (pr.weights.size() == 2) {
      // SwiGLU on C^T (element-wise), then one transposition.
      SmallVector<Value> g = tile(0), u = tile(1), c;
      for (int64_t i = 0; i < 16; ++i)
        c.push_back(v.swiglu(g[i], u[i]));
      emitRows(v.transpose16(c), n);
      return;
    }
    for (int64_t a = 0; a < nA; ++a)
      emitRows(v.transpose16(tile(a)), p.add(n, p.i64(16 * a)));
  }

  /// Rows [r0, r1) (at least 16) x columns [c0, c1) of `pr` on AMX tiles;
  /// the last < 16 columns by `avxFn`.
  void amxBlock(const Projection &pr, func::FuncOp avxFn, Value packed,
                Value scratch, Value r0, Value r1, Value c0, Value c1) {
    bool gated = pr.weights.size() == 2;
    int64_t nStep = gated ? 16 : 32;
    p.forLoop(r0, r1, p.i64(s.amxChunk), [&](Value rc) {
      Value rows = p.minI(p.i64(s.amxChunk), sub(r1, rc));
      Value mblocks = p.ceilDivI(rows, 16);
      pack(packed, rc, rows, mblocks);
      Value pairsEnd = roundDown(mblocks, 2);
      // While a column block runs, its m-pairs' K loops bring the next
      // block's weights into L2, each pair a share of the rows.
      Value pairs = arith::MaxSIOp::create(
          b, loc, p.divs(pairsEnd, p.i64(2)), p.i64(1));
      auto overRows = [&](Value n, int64_t nA) {
        Value panelRows = p.i64(16 * nA);
        Value perPair = p.divs(p.add(panelRows, sub(pairs, p.i64(1))), pairs);
        p.forLoop(p.i64(0), pairsEnd, p.i64(2), [&](Value mb) {
          Value lo = p.minI(p.mul(p.divs(mb, p.i64(2)), perPair), panelRows);
          Value hi = p.minI(p.add(lo, perPair), panelRows);
          std::optional<PanelPrefetch> next;
          if (nA == 2) // the main column blocks; the 16-column tail is last
            next = PanelPrefetch{p.add(n, p.i64(nStep)), lo, hi};
          amxTiles(pr, packed, scratch, rc, rows, n, mb, nA, 2, next);
        });
        p.ifThen(p.lt(pairsEnd, mblocks), [&] {
          amxTiles(pr, packed, scratch, rc, rows, n, pairsEnd, nA, 1);
        });
      };
      Value nFull = p.add(c0, roundDown(sub(c1, c0), nStep));
      p.forLoop(c0, nFull, p.i64(nStep), [&](Value n) { overRows(n, 2); });
      Value done = nFull;
      if (!gated) {
        Value has16 = p.lt(p.i64(15), sub(c1, nFull));
        p.ifThen(has16, [&] { overRows(nFull, 1); });
        done = p.select(has16, p.add(nFull, p.i64(16)), nFull);
      }
      p.ifThen(p.lt(done, c1), [&] {
        callHelper(b, loc, avxFn, buffers, rc, p.add(rc, rows), done, c1);
      });
    });
  }

  //===--------------------------------------------------------------------===//
  // AVX-512-BF16
  //===--------------------------------------------------------------------===//

  /// K pair `pair` of K step `kstep` of the packed 16-row blocks mb + bi,
  /// bi < nB (pack()): one 64-byte row of each block's tile.
  SmallVector<Value> packedPairs(Value packed, Value mb, int64_t nB,
                                 Value kstep, int64_t pair) {
    SmallVector<Value> xs;
    for (int64_t bi = 0; bi < nB; ++bi) {
      Value tile = p.add(p.mul(p.add(mb, p.i64(bi)), p.i64(kSteps())), kstep);
      xs.push_back(v.loadBits(packed,
                              p.add(p.mul(tile, p.i64(1024)), p.i64(pair * 64)),
                              v.bf16Pairs()));
    }
    return xs;
  }
  /// The accumulator of weight w's row n + j and block mb + bi in a
  /// vdpbf16ps register block of `cols` rows x nB blocks.
  static int64_t dpAt(int64_t w, int64_t j, int64_t bi, int64_t cols,
                      int64_t nB) {
    return (w * cols + j) * nB + bi;
  }

  /// C^T register block over the packed chunk (pack()): weight rows n + j,
  /// j < cols (gate and up rows n + j for SwiGLU) x the 16-row blocks mb +
  /// bi, bi < nB; one zmm of 16 activation rows per (weight row, block).
  /// Per K pair: the blocks' 64-byte rows of the packed tiles, and each
  /// weight row's pair broadcast into all lanes (vdpbf16ps's embedded
  /// broadcast); the next column block's rows are prefetched into L2, one
  /// 64-byte line per row and 32 of K. Then SwiGLU on C^T, one 16 x 16
  /// transposition per block, the epilogue of each row's `cols` outputs.
  void dpTiles(const Projection &pr, Value packed, Value rc, Value rows,
               Value n, Value mb, int64_t cols, int64_t nB) {
    int64_t steps = kSteps(), nw = pr.weights.size();
    SmallVector<Value> wBase; // byte offset of row (w, j), w-major
    for (int64_t w = 0; w < nw; ++w)
      for (int64_t j = 0; j < cols; ++j)
        wBase.push_back(p.mul(p.add(n, p.i64(j)), p.i64(s.k * 2)));
    auto at = [&](int64_t w, int64_t j, int64_t bi) {
      return dpAt(w, j, bi, cols, nB);
    };
    SmallVector<Value> acc(nw * cols * nB, v.splat(0.0f, 16));
    Value nextRows = p.i64(cols * s.k * 2); // the next block's rows
    acc = p.forLoop(
        p.i64(0), p.i64(steps), p.i64(1), acc, [&](Value kb, ValueRange it) {
          SmallVector<Value> out(it.begin(), it.end());
          Value kOff = p.mul(kb, p.i64(64));
          for (int64_t pair = 0; pair < 16; ++pair) {
            SmallVector<Value> xs = packedPairs(packed, mb, nB, kb, pair);
            for (int64_t w = 0; w < nw; ++w)
              for (int64_t j = 0; j < cols; ++j) {
                Value splat = v.broadcastPair(
                    buffers[pr.weights[w]],
                    p.add(p.add(wBase[w * cols + j], kOff), p.i64(pair * 4)));
                for (int64_t bi = 0; bi < nB; ++bi)
                  out[at(w, j, bi)] =
                      v.dpbf16(out[at(w, j, bi)], xs[bi], splat);
              }
          }
          for (int64_t w = 0; w < nw; ++w)
            for (int64_t j = 0; j < cols; ++j)
              LLVM::Prefetch::create(
                  b, loc,
                  v.byteAddr(buffers[pr.weights[w]],
                             p.add(p.add(wBase[w * cols + j], nextRows), kOff)),
                  /*rw=*/0, /*hint=L2*/ 2, /*data=*/1);
          return out;
        });
    dpFinish(pr, acc, rc, rows, n, mb, cols, nB);
  }

  /// The end of a vdpbf16ps register block: accumulator (w * cols + j) * nB
  /// + bi holds weight w's row n + j for the 16 rows of block mb + bi.
  void dpFinish(const Projection &pr, ArrayRef<Value> acc, Value rc,
                Value rows, Value n, Value mb, int64_t cols, int64_t nB) {
    bool gated = pr.weights.size() == 2;
    auto at = [&](int64_t w, int64_t j, int64_t bi) {
      return dpAt(w, j, bi, cols, nB);
    };
    Value zero = v.splat(0.0f, 16);
    for (int64_t bi = 0; bi < nB; ++bi) {
      SmallVector<Value> cT(16, zero);
      for (int64_t j = 0; j < cols; ++j)
        cT[j] = gated ? v.swiglu(acc[at(0, j, bi)], acc[at(1, j, bi)])
                      : acc[at(0, j, bi)];
      SmallVector<Value> byRow = v.transpose16(cT);
      Value first = p.mul(p.add(mb, p.i64(bi)), p.i64(16)); // chunk-local
      for (int64_t m = 0; m < 16; ++m) {
        Value local = p.add(first, p.i64(m));
        Value val = vector::ExtractStridedSliceOp::create(
            b, loc, byRow[m], ArrayRef<int64_t>{0}, ArrayRef<int64_t>{cols},
            ArrayRef<int64_t>{1});
        p.ifThen(p.lt(local, rows),
                 [&] { finishCombined(pr, p.add(rc, local), n, val); });
      }
    }
  }

  /// The FP8 form's stack buffers (emitRangeHelper allocates them).
  struct DpFp8Buffers {
    Value packed; ///< the chunk's activations as bf16 pairs (pack())
    Value xs;     ///< their scales, [kBlocks][amxChunk] f32 (packScales())
    Value wconv;  ///< the column block's weight rows as bf16, (w, j) at
                  ///< (w * dpCols + j) * kSteps * 64 bytes, zeros past K
  };
  static int64_t dpFp8StackBytes(const GemmSpec &s) {
    int64_t steps = (s.k + 31) / 32, kBlocks = (s.k + s.act - 1) / s.act;
    return s.amxChunk * steps * 64 + kBlocks * s.amxChunk * 4 +
           2 * s.dpCols * steps * 64;
  }
  DpFp8Buffers dpFp8Buffers(Value stack) {
    int64_t kBlocks = (s.k + s.act - 1) / s.act;
    Value xs = v.byteAddr(stack, p.i64(s.amxChunk * kSteps() * 64));
    Value wconv = v.byteAddr(
        stack, p.i64(s.amxChunk * kSteps() * 64 + kBlocks * s.amxChunk * 4));
    return DpFp8Buffers{stack, xs, wconv};
  }

  /// Rows [r0, r1) (at least 16) x columns [c0, c1) of `pr` on vdpbf16ps
  /// register blocks, chunk by chunk of packed rows (FP8, with `f`: their
  /// scales too, and each column block's weights converted first); the
  /// columns past the last whole block of dpCols by `avxFn`.
  void dpBlock(const Projection &pr, func::FuncOp avxFn, Value packed,
               const DpFp8Buffers *f, Value r0, Value r1, Value c0,
               Value c1) {
    int64_t cols = s.dpCols, nB = s.dpBlocks;
    p.forLoop(r0, r1, p.i64(s.amxChunk), [&](Value rc) {
      Value rows = p.minI(p.i64(s.amxChunk), sub(r1, rc));
      Value mblocks = p.ceilDivI(rows, 16);
      pack(packed, rc, rows, mblocks);
      if (f)
        packScales(f->xs, rc, rows, mblocks);
      Value mFull = roundDown(mblocks, nB);
      Value nFull = p.add(c0, roundDown(sub(c1, c0), cols));
      p.forLoop(c0, nFull, p.i64(cols), [&](Value n) {
        auto tiles = [&](Value mb, int64_t blocks) {
          if (f)
            dpTilesFP8(pr, *f, rc, rows, n, mb, cols, blocks);
          else
            dpTiles(pr, packed, rc, rows, n, mb, cols, blocks);
        };
        if (f)
          dpConvertColumns(pr, *f, n, cols);
        p.forLoop(p.i64(0), mFull, p.i64(nB),
                  [&](Value mb) { tiles(mb, nB); });
        Value left = sub(mblocks, mFull);
        for (int64_t rest = 1; rest < nB; ++rest)
          p.ifThen(p.eq(left, p.i64(rest)), [&] { tiles(mFull, rest); });
      });
      p.ifThen(p.lt(nFull, c1), [&] {
        callHelper(b, loc, avxFn, buffers, rc, p.add(rc, rows), nFull, c1);
      });
    });
  }

  /// Weight rows n + j, j < cols, of each weight of `pr` as bf16 rows of
  /// kSteps * 32 (e4m3 converted exactly, zeros past K).
  void dpConvertColumns(const Projection &pr, const DpFp8Buffers &f, Value n,
                        int64_t cols) {
    int64_t steps = kSteps(), full = s.k / 32;
    for (int64_t w = 0; w < int64_t(pr.weights.size()); ++w)
      p.forLoop(p.i64(0), p.i64(cols), p.i64(1), [&](Value j) {
        Value base = p.mul(p.add(n, j), p.i64(s.k));
        Value dst = p.mul(p.add(p.i64(w * cols), j), p.i64(steps * 64));
        auto step = [&](Value st, int64_t active) {
          Value bits = v.e4m3ToBF16Bits(
              v.loadRaw(buffers[pr.weights[w]], pr.wType,
                        p.add(base, p.mul(st, p.i64(32))), 32, active));
          v.storeBits(bits, f.wconv, p.add(dst, p.mul(st, p.i64(64))));
        };
        p.forLoop(p.i64(0), p.i64(full), p.i64(1),
                  [&](Value st) { step(st, -1); });
        if (full < steps)
          step(p.i64(full), s.k - 32 * full);
      });
  }

  /// The FP8 form of dpTiles: weights from the converted rows, products
  /// summed per K block of `act` into partial accumulators, each block
  /// promoted by one FMA with x_s[row, kb] * w_s[(n + j) / wbN, kb] (16
  /// rows' scales from packScales, as the AMX kernel promotes).
  void dpTilesFP8(const Projection &pr, const DpFp8Buffers &f, Value rc,
                  Value rows, Value n, Value mb, int64_t cols, int64_t nB) {
    int64_t steps = kSteps(), nw = pr.weights.size(), act = s.act;
    int64_t kBlocks = (s.k + act - 1) / act, fullBlocks = s.k / act;
    Type f32 = b.getF32Type();
    auto at = [&](int64_t w, int64_t j, int64_t bi) {
      return dpAt(w, j, bi, cols, nB);
    };
    SmallVector<Value> wsBase; // each row's scale row, [w * cols + j]
    for (int64_t w = 0; w < nw; ++w)
      for (int64_t j = 0; j < cols; ++j)
        wsBase.push_back(p.mul(p.divs(p.add(n, p.i64(j)), p.i64(s.wbN)),
                               p.i64(kBlocks)));
    // K block kb: its `len` of K in steps of 32.
    auto block = [&](Value kb, int64_t len, SmallVector<Value> acc) {
      SmallVector<Value> part(acc.size(), v.splat(0.0f, 16));
      for (int64_t st = 0; st * 32 < len; ++st) {
        Value kstep = p.add(p.mul(kb, p.i64(act / 32)), p.i64(st));
        Value wOff = p.mul(kstep, p.i64(64));
        for (int64_t pair = 0; pair < 16 && 32 * st + 2 * pair < len; ++pair) {
          SmallVector<Value> xs = packedPairs(f.packed, mb, nB, kstep, pair);
          for (int64_t w = 0; w < nw; ++w)
            for (int64_t j = 0; j < cols; ++j) {
              Value splat = v.broadcastPair(
                  f.wconv,
                  p.add(p.i64((w * cols + j) * steps * 64 + pair * 4), wOff));
              for (int64_t bi = 0; bi < nB; ++bi)
                part[at(w, j, bi)] =
                    v.dpbf16(part[at(w, j, bi)], xs[bi], splat);
            }
        }
      }
      for (int64_t bi = 0; bi < nB; ++bi) {
        Value xsv = v.loadBits(
            f.xs,
            p.mul(p.add(p.mul(kb, p.i64(s.amxChunk)),
                        p.mul(p.add(mb, p.i64(bi)), p.i64(16))),
                  p.i64(4)),
            v.f32Vec(16));
        for (int64_t w = 0; w < nw; ++w)
          for (int64_t j = 0; j < cols; ++j) {
            Value ws = p.load(buffers[pr.wScales[w]], f32,
                              p.add(wsBase[w * cols + j], kb));
            Value scale = v.mul(v.broadcast(ws, 16), xsv);
            acc[at(w, j, bi)] =
                v.fma(part[at(w, j, bi)], scale, acc[at(w, j, bi)]);
          }
      }
      return acc;
    };
    SmallVector<Value> acc(nw * cols * nB, v.splat(0.0f, 16));
    if (fullBlocks > 0)
      acc = p.forLoop(p.i64(0), p.i64(fullBlocks), p.i64(1), acc,
                      [&](Value kb, ValueRange it) {
                        return block(kb, act, SmallVector<Value>(it));
                      });
    if (s.k % act)
      acc = block(p.i64(fullBlocks), s.k % act, acc);
    dpFinish(pr, acc, rc, rows, n, mb, cols, nB);
  }

  //===--------------------------------------------------------------------===//
  // AMX-BF16 over FP8 operands
  //===--------------------------------------------------------------------===//

  /// The FP8 AMX kernel's stack buffers (emitRangeHelper allocates them).
  struct Fp8Buffers {
    Value packed;  ///< the chunk's activations as bf16 B tiles (pack())
    Value xs;      ///< their scales, [kBlocks][amxChunk] f32
    Value wTiles;  ///< one K block of the column block's weights as bf16
                   ///< A tiles: (a, step) at (a * act/32 + step) * 1 KiB
    Value wScale;  ///< that block's scale of each A row, [nA * 16] f32
    Value tiles;   ///< four C^T tiles of one K block, 1 KiB each
    Value acc;     ///< the promoted sums, C^T tile (a, mb) at (a *
                   ///< amxChunk/16 + mb) * 1 KiB
  };
  static int64_t fp8StackBytes(const GemmSpec &s) {
    int64_t kBlocks = (s.k + s.act - 1) / s.act;
    return s.amxChunk * ((s.k + 31) / 32) * 64 + kBlocks * s.amxChunk * 4 +
           2 * (s.act / 32) * 1024 + 2 * 16 * 4 + 4 * 1024 +
           2 * (s.amxChunk / 16) * 1024;
  }
  Fp8Buffers fp8Buffers(Value stack) {
    int64_t kBlocks = (s.k + s.act - 1) / s.act, off = 0;
    auto next = [&](int64_t bytes) {
      Value at = v.byteAddr(stack, p.i64(off));
      off += bytes;
      return at;
    };
    Fp8Buffers f;
    f.packed = next(s.amxChunk * kSteps() * 64);
    f.xs = next(kBlocks * s.amxChunk * 4);
    f.wTiles = next(2 * (s.act / 32) * 1024);
    f.wScale = next(2 * 16 * 4);
    f.tiles = next(4 * 1024);
    f.acc = next(2 * (s.amxChunk / 16) * 1024);
    return f;
  }

  /// The scales of the chunk's rows [rc, rc + rows) as xs[kb][m]; 0 for the
  /// rows of the last 16-row block past `rows`.
  void packScales(Value xs, Value rc, Value rows, Value mblocks) {
    int64_t kBlocks = (s.k + s.act - 1) / s.act;
    Type f32 = b.getF32Type();
    p.forLoop(p.i64(0), p.mul(mblocks, p.i64(16)), p.i64(1), [&](Value m) {
      Value valid = p.lt(m, rows);
      Value xr = xRow(p.add(rc, p.select(valid, m, p.i64(0))));
      Value base = p.mul(xr, p.i64(kBlocks));
      for (int64_t kb = 0; kb < kBlocks; ++kb) {
        Value sc = p.load(buffers[s.xScale], f32, p.add(base, p.i64(kb)));
        p.store(p.select(valid, sc, p.f32(0.0f)), xs, f32,
                p.add(p.i64(kb * s.amxChunk), m));
      }
    });
  }

  /// K block kb ([k0, k0 + len)) of the nA A tiles' weight rows (rows n +
  /// 16a + i, or gate and up rows n + i), converted to bf16 A tiles, and
  /// their scales w_s[row / wbN, kb]; K past the end is zeros.
  void convertWeights(const Projection &pr, const Fp8Buffers &f, Value n,
                      int64_t nA, Value kb, Value k0, int64_t len) {
    bool gated = pr.weights.size() == 2;
    int64_t kBlocks = (s.k + s.act - 1) / s.act, spb = s.act / 32;
    Type f32 = b.getF32Type();
    for (int64_t a = 0; a < nA; ++a) {
      Value w = buffers[pr.weights[gated ? a : 0]];
      Value wsBuf = buffers[pr.wScales[gated ? a : 0]];
      Value first = gated ? n : p.add(n, p.i64(16 * a));
      p.forLoop(p.i64(0), p.i64(16), p.i64(1), [&](Value i) {
        Value row = p.add(first, i);
        Value base = p.add(p.mul(row, p.i64(s.k)), k0);
        for (int64_t st = 0; st * 32 < len; ++st) {
          int64_t active = std::min<int64_t>(32, len - 32 * st);
          Value bits = v.e4m3ToBF16Bits(
              v.loadRaw(w, pr.wType, p.add(base, p.i64(32 * st)), 32,
                        active == 32 ? -1 : active));
          Value at = p.add(p.i64((a * spb + st) * 1024), p.mul(i, p.i64(64)));
          v.storeBits(bits, f.wTiles, at);
        }
        Value sc = p.load(wsBuf, f32,
                          p.add(p.mul(p.divs(row, p.i64(s.wbN)),
                                      p.i64(kBlocks)),
                                kb));
        p.store(sc, f.wScale, f32, p.add(p.i64(16 * a), i));
      });
    }
  }

  /// One K block of C^T tiles (a, mb + bi), a < nA, bi < nB, from the A
  /// tiles of convertWeights and the chunk's B tiles, promoted into the
  /// accumulators: acc[i][j] += tile[i][j] * (w_s[i] * x_s[j]) (the
  /// reference's scale product, then one FMA, as avxMicroFP8 promotes).
  void fp8Tiles(const Fp8Buffers &f, Value mb, int64_t nA, int64_t nB,
                Value kb, int64_t len) {
    int64_t spb = s.act / 32, steps = (len + 31) / 32;
    Value stride = p.i64(64);
    SmallVector<Value> acc;
    for (int64_t t = 0; t < nA * nB; ++t)
      acc.push_back(v.tileZero());
    for (int64_t st = 0; st < steps; ++st) {
      SmallVector<Value> as, bs;
      for (int64_t a = 0; a < nA; ++a)
        as.push_back(v.tileLoad(
            v.byteAddr(f.wTiles, p.i64((a * spb + st) * 1024)), stride));
      for (int64_t bi = 0; bi < nB; ++bi) {
        Value t = p.add(p.mul(p.add(mb, p.i64(bi)), p.i64(kSteps())),
                        p.add(p.mul(kb, p.i64(spb)), p.i64(st)));
        bs.push_back(
            v.tileLoad(v.byteAddr(f.packed, p.mul(t, p.i64(1024))), stride));
      }
      for (int64_t a = 0; a < nA; ++a)
        for (int64_t bi = 0; bi < nB; ++bi)
          acc[a * nB + bi] = v.tileDot(acc[a * nB + bi], as[a], bs[bi]);
    }
    for (int64_t t = 0; t < nA * nB; ++t)
      v.tileStore(v.byteAddr(f.tiles, p.i64(t * 1024)), stride, acc[t]);
    Type f32 = b.getF32Type();
    auto f32x16 = v.f32Vec(16);
    int64_t mbMax = s.amxChunk / 16;
    for (int64_t bi = 0; bi < nB; ++bi) {
      Value blk = p.add(mb, p.i64(bi));
      Value xs = v.loadBits(
          f.xs,
          p.mul(p.add(p.mul(kb, p.i64(s.amxChunk)), p.mul(blk, p.i64(16))),
                p.i64(4)),
          f32x16);
      for (int64_t a = 0; a < nA; ++a) {
        Value accTile =
            p.mul(p.add(p.i64(a * mbMax), blk), p.i64(1024));
        p.forLoop(p.i64(0), p.i64(16), p.i64(1), [&](Value i) {
          Value ws = p.load(f.wScale, f32, p.add(p.i64(16 * a), i));
          Value scale = v.mul(v.broadcast(ws, 16), xs);
          Value rowOff = p.mul(i, p.i64(64));
          Value part = v.loadBits(
              f.tiles, p.add(p.i64((a * nB + bi) * 1024), rowOff), f32x16);
          Value at = p.add(accTile, rowOff);
          Value sum = v.fma(part, scale, v.loadBits(f.acc, at, f32x16));
          v.storeBits(sum, f.acc, at);
        });
      }
    }
  }

  /// Columns [n, n + 16 nA) (gate and up columns [n, n + 16) for SwiGLU)
  /// of the chunk's rows: the accumulators zeroed, every K block converted
  /// once and applied to all the chunk's 16-row blocks (in pairs), then
  /// each C^T accumulator transposed back and finished.
  void fp8Columns(const Projection &pr, const Fp8Buffers &f, Value rc,
                  Value rows, Value mblocks, Value n, int64_t nA) {
    int64_t act = s.act, fullBlocks = s.k / act, mbMax = s.amxChunk / 16;
    auto f32x16 = v.f32Vec(16);
    Value zero = v.splat(0.0f, 16);
    p.forLoop(p.i64(0), mblocks, p.i64(1), [&](Value mb) {
      for (int64_t a = 0; a < nA; ++a)
        for (int64_t i = 0; i < 16; ++i)
          v.storeBits(zero, f.acc,
                      p.add(p.mul(p.add(p.i64(a * mbMax), mb), p.i64(1024)),
                            p.i64(i * 64)));
    });
    Value pairsEnd = roundDown(mblocks, 2);
    auto block = [&](Value kb, int64_t len) {
      convertWeights(pr, f, n, nA, kb, p.mul(kb, p.i64(act)), len);
      p.forLoop(p.i64(0), pairsEnd, p.i64(2),
                [&](Value mb) { fp8Tiles(f, mb, nA, 2, kb, len); });
      p.ifThen(p.lt(pairsEnd, mblocks),
               [&] { fp8Tiles(f, pairsEnd, nA, 1, kb, len); });
    };
    p.forLoop(p.i64(0), p.i64(fullBlocks), p.i64(1),
              [&](Value kb) { block(kb, act); });
    if (s.k % act)
      block(p.i64(fullBlocks), s.k % act);
    p.forLoop(p.i64(0), mblocks, p.i64(1), [&](Value mb) {
      auto accRows = [&](int64_t a) {
        SmallVector<Value> r;
        Value tile = p.mul(p.add(p.i64(a * mbMax), mb), p.i64(1024));
        for (int64_t i = 0; i < 16; ++i)
          r.push_back(v.loadBits(f.acc, p.add(tile, p.i64(i * 64)), f32x16));
        return r;
      };
      finishTiles(pr, rc, rows, p.mul(mb, p.i64(16)), n, nA, accRows);
    });
  }

  /// Rows [r0, r1) x columns [c0, c1) of an FP8 projection on AMX tiles,
  /// the last < 16 columns by `avxFn`.
  void amxBlockFP8(const Projection &pr, func::FuncOp avxFn,
                   const Fp8Buffers &f, Value r0, Value r1, Value c0,
                   Value c1) {
    bool gated = pr.weights.size() == 2;
    int64_t nStep = gated ? 16 : 32;
    p.forLoop(r0, r1, p.i64(s.amxChunk), [&](Value rc) {
      Value rows = p.minI(p.i64(s.amxChunk), sub(r1, rc));
      Value mblocks = p.ceilDivI(rows, 16);
      pack(f.packed, rc, rows, mblocks);
      packScales(f.xs, rc, rows, mblocks);
      Value nFull = p.add(c0, roundDown(sub(c1, c0), nStep));
      p.forLoop(c0, nFull, p.i64(nStep), [&](Value n) {
        fp8Columns(pr, f, rc, rows, mblocks, n, 2);
      });
      Value done = nFull;
      if (!gated) {
        Value has16 = p.lt(p.i64(15), sub(c1, nFull));
        p.ifThen(has16,
                 [&] { fp8Columns(pr, f, rc, rows, mblocks, nFull, 1); });
        done = p.select(has16, p.add(nFull, p.i64(16)), nFull);
      }
      p.ifThen(p.lt(done, c1), [&] {
        callHelper(b, loc, avxFn, buffers, rc, p.add(rc, rows), done, c1);
      });
    });
  }

  Value sub(Value a, Value c) { return arith::SubIOp::create(b, loc, a, c); }
  Value roundDown(Value a, int64_t m) {
    return p.mul(p.divs(a, p.i64(m)), p.i64(m));
  }

private:
  const GemmSpec &s;
  OpBuilder &b;
  Location loc;
  ProgramBuilder p;
  VectorBuilder v;
  SmallVector<Value> buffers;
};

} // namespace

std::string describeBlocking(const GemmSpec &s) {
  std::string avx = llvm::formatv(
      "{6} fp32{5} {0}x{1}{2} rows x cols, {3}-col panels, fewer rows "
      "{7}",
      s.regRows, s.regCols, s.swiglu ? " (x gate, up)" : "", s.panel,
      s.gemvCols,
      s.fp8
          ? llvm::formatv(
                s.fp8Shift  ? " (e4m3 -> bf16 pairs by byte permutes on load, "
                              "vdpbf16ps, promoted per {0} of K; GEMV rows: x "
                              "staged in bf16 once, weights by word shifts, "
                              "e4m3 subnormal weights read as zero)"
                : s.fp8Perm ? " (e4m3 -> bf16 pairs by byte permutes on load, "
                              "vdpbf16ps, promoted per {0} of K)"
                : s.fp8Dot  ? " (e4m3 -> bf16 pairs on load, vdpbf16ps, "
                              "promoted per {0} of K)"
                : s.fp8Half ? " (e4m3 -> f16 -> f32 on load, promoted per "
                              "{0} of K)"
                            : " (e4m3 decoded on load, promoted per {0} of K)",
                s.act)
                .str()
          : "",
      s.isa,
      s.dpGemv ? "as a bf16 GEMV (vdpbf16ps, one weight row at a time)"
               : llvm::formatv("streamed (1 row x {0} cols, next block "
                               "prefetched)",
                               s.gemvCols)
                     .str());
  if (s.amx && s.fp8)
    return llvm::formatv(
        "amx-bf16 for >= {0} rows (e4m3 -> bf16 exactly: C^T tiles, 32x32 "
        "blocks, weights converted per {1} of K, activations packed {2} rows "
        "at a time, promoted per {1} of K), else {3}",
        s.amxMinRows, s.act, s.amxChunk, avx);
  if (s.amx)
    return llvm::formatv(
        "amx-bf16 for >= {0} rows (C^T tiles, 32x32 blocks, bf16 "
        "activations packed {1} rows at a time), else {2}",
        s.amxMinRows, s.amxChunk, avx);
  if (s.dpbf16 && s.fp8)
    return llvm::formatv(
        "avx512-bf16 for >= {0} rows (e4m3 -> bf16 exactly: vdpbf16ps on "
        "C^T, {1} {2}x{3} register blocks, weights converted per column "
        "block, activations packed {4} rows at a time, promoted per {5} of "
        "K, columns past the last block on fp32), else {6}",
        s.amxMinRows, s.swiglu ? "(gate, up) x rows" : "cols x rows",
        s.dpCols, 16 * s.dpBlocks, s.amxChunk, s.act, avx);
  if (s.dpbf16)
    return llvm::formatv(
        "avx512-bf16 for >= {0} rows (vdpbf16ps on C^T: {1} {2}x{3} "
        "register blocks, bf16 activations packed {4} rows at a time, "
        "columns past the last block on fp32), else {5}",
        s.amxMinRows, s.swiglu ? "(gate, up) x rows" : "cols x rows",
        s.dpCols, 16 * s.dpBlocks, s.amxChunk, avx);
  if (!s.amxOff.empty())
    return avx + (s.fp8 ? " (no amx-bf16: " : " (no bf16 tiles: ") +
           s.amxOff + ")";
  return avx;
}

namespace {
/// `bytes` of 64-byte aligned stack at the start of `fn`'s entry block.
Value stackBytes(OpBuilder &b, Location loc, func::FuncOp fn, int64_t bytes) {
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(&fn.getBody().front());
  Value n = LLVM::ConstantOp::create(b, loc, b.getI64Type(),
                                     b.getI64IntegerAttr(bytes));
  return LLVM::AllocaOp::create(b, loc,
                                LLVM::LLVMPointerType::get(b.getContext()),
                                b.getI8Type(), n, 64)
      .getResult();
}
} // namespace

func::FuncOp emitRangeHelper(ModuleOp module, Location loc,
                             StringRef kernelName, const GemmSpec &s,
                             unsigned nb) {
  // Per projection: the AVX-512 kernel and, with AMX, the tile kernel.
  SmallVector<func::FuncOp> avxFns, amxFns;
  for (auto [i, pr] : llvm::enumerate(s.projections)) {
    std::string base = (kernelName + ".p" + std::to_string(i)).str();
    func::FuncOp avx = makeHelper(module, loc, base + ".avx512", nb);
    {
      Body body = bodyOf(avx, nb);
      // The GEMV's bf16 rows (fp8Shift: K rounded up to 64).
      Value xb = s.dpGemv || s.fp8Shift
                     ? stackBytes(body.b, loc, avx,
                                  kGemvMaxRows * shiftRowWords(s.k) * 2)
                     : Value();
      GemmCodegen cg(s, body.b, loc, body.buffers);
      cg.avxBlock(pr, body.r0, body.r1, body.c0, body.c1, xb);
    }
    avxFns.push_back(avx);
    if (!s.packedPath())
      continue;
    func::FuncOp amx =
        makeHelper(module, loc, base + (s.amx ? ".amx" : ".dpbf16"), nb);
    {
      Body body = bodyOf(amx, nb);
      OpBuilder &hb = body.b;
      // Static stack: the packed activations (and the FP8 forms' scales and
      // converted weights, AMX's C^T tiles).
      auto stack = [&](int64_t bytes) {
        return stackBytes(hb, loc, amx, bytes);
      };
      GemmCodegen cg(s, hb, loc, body.buffers);
      if (s.dpbf16 && s.fp8) {
        GemmCodegen::DpFp8Buffers f =
            cg.dpFp8Buffers(stack(GemmCodegen::dpFp8StackBytes(s)));
        cg.dpBlock(pr, avx, f.packed, &f, body.r0, body.r1, body.c0,
                   body.c1);
      } else if (s.dpbf16) {
        cg.dpBlock(pr, avx, stack(s.amxChunk * s.k * 2), nullptr, body.r0,
                   body.r1, body.c0, body.c1);
      } else if (s.fp8) {
        cg.amxBlockFP8(pr, avx,
                       cg.fp8Buffers(stack(GemmCodegen::fp8StackBytes(s))),
                       body.r0, body.r1, body.c0, body.c1);
      } else {
        Value packed = stack(s.amxChunk * s.k * 2);
        Value scratch = stack(4 * 1024);
        cg.amxBlock(pr, avx, packed, scratch, body.r0, body.r1, body.c0,
                    body.c1);
      }
    }
    amxFns.push_back(amx);
  }

  // Rows x combined columns -> each projection's part of it.
  func::FuncOp range = makeHelper(module, loc, (kernelName + ".range").str(),
                                  nb);
  Body body = bodyOf(range, nb);
  OpBuilder &hb = body.b;
  ProgramBuilder p(hb, loc);
  for (auto [i, pr] : llvm::enumerate(s.projections)) {
    Value lo = p.i64(pr.offset), hi = p.i64(pr.offset + pr.n);
    Value c0 = arith::SubIOp::create(
        hb, loc, arith::MaxSIOp::create(hb, loc, body.c0, lo), lo);
    Value c1 = arith::SubIOp::create(hb, loc, p.minI(body.c1, hi), lo);
    p.ifThen(p.lt(c0, c1), [&] {
      if (!s.packedPath()) {
        callHelper(hb, loc, avxFns[i], body.buffers, body.r0, body.r1, c0,
                   c1);
        return;
      }
      Value rows = arith::SubIOp::create(hb, loc, body.r1, body.r0);
      ifElse(
          hb, loc, p.lt(p.i64(s.amxMinRows - 1), rows),
          [&] {
            callHelper(hb, loc, amxFns[i], body.buffers, body.r0, body.r1,
                       c0, c1);
          },
          [&] {
            callHelper(hb, loc, avxFns[i], body.buffers, body.r0, body.r1,
                       c0, c1);
          });
    });
  }
  if (s.quantQ >= 0) {
    GemmCodegen cg(s, hb, loc, body.buffers);
    cg.quantizeOutput(s.projections[0], body.r0, body.r1, body.c0, body.c1);
  }
  return range;
}

void forEachRowBlock(OpBuilder &b, Location loc, Value begin, Value end,
                     int64_t tiles, int64_t tileN, int64_t n,
                     function_ref<void(Value, Value, Value, Value)> run) {
  ProgramBuilder p(b, loc);
  Value cTiles = p.i64(tiles), cN = p.i64(n), cTn = p.i64(tileN);
  Value rA = p.divs(begin, cTiles), tA = p.rems(begin, cTiles);
  Value rB = p.divs(end, cTiles), tB = p.rems(end, cTiles);
  Value cA = p.mul(tA, cTn), cB = p.minI(p.mul(tB, cTn), cN);
  Value one = p.i64(1), zero = p.i64(0);
  ifElse(
      b, loc, p.eq(rA, rB), [&] { run(rA, p.add(rA, one), cA, cB); },
      [&] {
        Value partialFirst = p.lt(zero, tA);
        p.ifThen(partialFirst, [&] { run(rA, p.add(rA, one), cA, cN); });
        Value firstFull = p.select(partialFirst, p.add(rA, one), rA);
        p.ifThen(p.lt(firstFull, rB), [&] { run(firstFull, rB, zero, cN); });
        p.ifThen(p.lt(zero, tB), [&] { run(rB, p.add(rB, one), zero, cB); });
      });
}

} // namespace kiln::cpu
