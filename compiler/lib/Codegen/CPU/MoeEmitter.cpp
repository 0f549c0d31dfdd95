//===- MoeEmitter.cpp - The experts' grouped GEMMs, blocked ---------------===//
//
// The optimized CPU emitter of moe_up (gate and up GEMMs + SwiGLU over each
// expert's rows of the contiguous layout), moe_down (the down GEMM into the
// layout's rows, which moe_combine gathers back) and moe_down_fp8 (the same
// with e4m3 activations and weights and their block scales).
//
// The entry keeps the reference's ABI and program space (pid = block *
// col_tiles + tile, a block being `block_m` rows of one expert), so threads
// split the work by experts and columns. Its range [begin, end) becomes at
// most three runs of blocks x columns (a partial first block, the full
// blocks, a partial last block: forEachRowBlock); inside a run, consecutive
// blocks of one expert are one segment, whose rows go to the blocked
// kernels of GemmKernels.h (NAME.range) with that expert's weights in the
// weight slots: the AVX-512 fp32 register blocks, or AMX-BF16 tiles for
// segments of >= 16 rows under --cpu-gemm-precision=bf16. The activation
// row of a layout row is its token (moe_up gathers x[sorted_token[r]]) or
// the row itself (moe_down reads act[r]).
//
// Rows the layout marks as padding (sorted_token -1) are neither computed
// nor written where the layout says so: a segment ends after its last
// block's last real row (decode's segments of one token in blocks of 8
// compute one row, not 8), and a padding row inside a segment (which the
// routing never writes) is computed from token 0 but not stored, as the
// reference leaves it. Blocks of expert -1 (past the last segment) are
// skipped.
//
//===----------------------------------------------------------------------===//
#include "Emitter.h"
#include "GemmKernels.h"

#include "kernel/IR/KernelDialect.h"
#include "kiln/Kernels/Program.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;

namespace kiln::cpu {

namespace {

using kernels::ProgramBuilder;

Type elemOf(Value v) { return cast<ShapedType>(v.getType()).getElementType(); }

/// A grouped expert GEMM: the GEMM spec of one expert's rows, plus the
/// layout and the weight tables.
struct MoeSpec {
  GemmSpec gemm;
  int64_t blockM = 1;
  unsigned blockExpert = 2;        ///< buffer of each block's expert (the
                                   ///< row map's next)
  Type blockExpertType;
  SmallVector<unsigned, 2> tables; ///< weight-table buffers, per weight
};

FailureOr<MoeSpec> specOf(Operation *op, std::string &why) {
  MoeSpec m;
  GemmSpec &s = m.gemm;
  auto shape = [](Value v) { return cast<ShapedType>(v.getType()).getShape(); };
  Projection p;
  if (auto up = dyn_cast<kernel::MoEUpOp>(op)) {
    // x, sorted_token, block_expert, w_gate, w_up -> act
    p.weights = {3, 4};
    p.wType = elemOf(up.getWGate());
    if (elemOf(up.getWUp()) != p.wType) {
      why = "gate and up weights of different dtypes";
      return failure();
    }
    p.n = shape(up.getWGate())[1];
    p.out = 5;
    p.outType = elemOf(up.getResult());
    s.k = shape(up.getWGate())[2];
    s.tileN = up.getTileF();
    s.xType = elemOf(up.getInput());
    s.swiglu = true;
    s.gatherX = true;
    s.rowMapType = elemOf(up.getSortedToken());
    m.blockM = up.getBlockM();
    m.blockExpertType = elemOf(up.getBlockExpert());
  } else if (auto down = dyn_cast<kernel::MoEDownOp>(op)) {
    // act, sorted_token, block_expert, w_down -> rows
    p.weights = {3};
    p.wType = elemOf(down.getWDown());
    p.n = shape(down.getWDown())[1];
    p.out = 4;
    p.outType = elemOf(down.getResult());
    s.k = shape(down.getWDown())[2];
    s.tileN = down.getTileD();
    s.xType = elemOf(down.getAct());
    s.rowMapType = elemOf(down.getSortedToken());
    m.blockM = down.getBlockM();
    m.blockExpertType = elemOf(down.getBlockExpert());
  } else if (auto up = dyn_cast<kernel::MoEUpFP8Op>(op)) {
    // xq, xs, sorted_token, block_expert, w_gate, w_up, w_gate_scale,
    // w_up_scale -> act_q, act_s, workspace
    p.weights = {4, 5};
    p.wScales = {6, 7};
    p.wType = elemOf(up.getWGate());
    if (elemOf(up.getWUp()) != p.wType) {
      why = "gate and up weights of different dtypes";
      return failure();
    }
    p.n = shape(up.getWGate())[1];
    p.out = 10;
    p.outType = elemOf(up.getWorkspace());
    s.k = shape(up.getWGate())[2];
    s.tileN = up.getTileF();
    s.xType = elemOf(up.getInputQ());
    s.swiglu = true;
    s.gatherX = true;
    s.rowMapType = elemOf(up.getSortedToken());
    s.fp8 = true;
    s.xScale = 1;
    s.act = up.getAct();
    s.wbN = up.getAct();
    s.quantQ = 8;
    s.quantS = 9;
    s.quantType = elemOf(up.getResult());
    s.rowMap = 2;
    m.blockM = up.getBlockM();
    m.blockExpertType = elemOf(up.getBlockExpert());
  } else if (auto down = dyn_cast<kernel::MoEDownFP8Op>(op)) {
    // act_q, act_s, sorted_token, block_expert, w_down, w_down_scale -> rows
    p.weights = {4};
    p.wScales = {5};
    p.wType = elemOf(down.getWDown());
    p.n = shape(down.getWDown())[1];
    p.out = 6;
    p.outType = elemOf(down.getResult());
    s.k = shape(down.getWDown())[2];
    s.tileN = down.getTileD();
    s.xType = elemOf(down.getActQ());
    s.rowMapType = elemOf(down.getSortedToken());
    s.fp8 = true;
    s.xScale = 1;
    s.act = down.getAct();
    s.wbN = down.getAct(); // the experts' weight blocks are act x act
    s.rowMap = 2;
    m.blockM = down.getBlockM();
    m.blockExpertType = elemOf(down.getBlockExpert());
  } else {
    why = "not a grouped expert GEMM";
    return failure();
  }
  s.x = 0;
  if (s.rowMap < 0)
    s.rowMap = 1;
  m.blockExpert = s.rowMap + 1;
  m.tables = p.weights;
  m.tables.append(p.wScales.begin(), p.wScales.end());
  s.combinedN = p.n;
  s.projections.push_back(p);
  if (failed(checkOperandTypes(s, why)))
    return failure();
  return m;
}

class MoeEmitter : public CpuEmitter {
public:
  explicit MoeEmitter(MoeSpec spec) : m(std::move(spec)) {}

  std::string describe() const override {
    return llvm::formatv("{0}; per expert segment (consecutive blocks of one "
                         "expert, up to its last real row)",
                         describeBlocking(m.gemm));
  }

  void emitEntry(OpBuilder &b, ModuleOp module, const KernelRecord &kernel,
                 const EntryArgs &args) override {
    Location loc = args.loc;
    unsigned nb = args.buffers.size();
    const GemmSpec &s = m.gemm;
    func::FuncOp range = emitRangeHelper(module, loc, kernel.name, s, nb);
    func::FuncOp blocks = emitBlocksHelper(module, loc, kernel.name, range, nb);
    int64_t tiles = (s.combinedN + s.tileN - 1) / s.tileN;
    forEachRowBlock(b, loc, args.begin, args.end, tiles, s.tileN, s.combinedN,
                    [&](Value b0, Value b1, Value c0, Value c1) {
                      callHelper(b, loc, blocks, args.buffers, b0, b1, c0, c1);
                    });
  }

private:
  /// NAME.blocks(buffers, b0, b1, c0, c1): blocks [b0, b1) x columns
  /// [c0, c1), one NAME.range call per expert segment.
  func::FuncOp emitBlocksHelper(ModuleOp module, Location loc,
                                StringRef kernelName, func::FuncOp range,
                                unsigned nb) {
    func::FuncOp fn = makeHelper(module, loc, (kernelName + ".blocks").str(),
                                 nb);
    Body body = bodyOf(fn, nb);
    OpBuilder &b = body.b;
    ProgramBuilder p(b, loc);
    const GemmSpec &s = m.gemm;
    Value bm = p.i64(m.blockM), one = p.i64(1), minus1 = p.i64(-1);
    Value lastBlock = arith::SubIOp::create(b, loc, body.r1, one);
    auto expertOf = [&](Value blk) {
      return p.load(body.buffers[m.blockExpert], m.blockExpertType, blk);
    };
    // for blk in [b0, b1), carrying the first block of the current segment:
    // a segment ends at b1 or where the next block's expert differs.
    p.forLoop(
        body.r0, body.r1, one, ValueRange{body.r0},
        [&](Value blk, ValueRange it) {
          Value e = expertOf(blk);
          Value next = p.add(blk, one);
          Value atEnd = p.eq(blk, lastBlock);
          Value nextE = expertOf(p.select(atEnd, blk, next));
          Value ends = arith::OrIOp::create(
              b, loc, atEnd,
              arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, nextE,
                                    e));
          p.ifThen(p.andI(ends, p.lt(minus1, e)), [&] {
            // Rows up to the last real row of the segment's last block.
            Value r0 = p.mul(it[0], bm), first = p.mul(blk, bm);
            Value real = p.forLoop(
                p.i64(0), bm, one, ValueRange{p.i64(0)},
                [&](Value j, ValueRange cnt) {
                  Value t = p.load(body.buffers[s.rowMap], s.rowMapType,
                                   p.add(first, j));
                  return SmallVector<Value>{
                      p.select(p.lt(minus1, t), p.add(j, one), cnt[0])};
                })[0];
            Value r1 = p.add(first, real);
            p.ifThen(p.lt(r0, r1), [&] {
              SmallVector<Value> bufs(body.buffers);
              for (unsigned t : m.tables)
                bufs[t] = p.loadPtr(body.buffers[t], e);
              callHelper(b, loc, range, bufs, r0, r1, body.c0, body.c1);
            });
          });
          return SmallVector<Value>{p.select(ends, next, it[0])};
        });
    return fn;
  }

  MoeSpec m;
};

} // namespace

std::unique_ptr<CpuEmitter>
makeMoeEmitter(const KernelRecord &kernel, const CpuCodegenOptions &options,
               const CpuTarget &target, std::string &why) {
  if (!target.avx512 && !target.avx2fma) {
    why = "neither AVX-512 nor AVX2 + FMA on the target CPU";
    return nullptr;
  }
  FailureOr<MoeSpec> spec = specOf(kernel.representative, why);
  if (failed(spec))
    return nullptr;
  chooseBlocking(spec->gemm, options, target);
  return std::make_unique<MoeEmitter>(std::move(*spec));
}

} // namespace kiln::cpu
