//===- ReferenceProgram.cpp - The reference program of every kernel op ----===//
//
// One program of a launch as target-neutral IR (scf + arith + math + llvm
// pointer ops), built by the program builders of kernels/ from what the
// kernel op says it computes (kernel/IR/KernelParams.h). Every target wraps
// it: the CPU reference emitter loops it over a program range, the CUDA
// emitter runs it per thread; optimized emitters are tested against it.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Codegen.h"

#include "kernel/IR/KernelParams.h"

#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kiln::kernel;
namespace kk = kiln::kernels;

namespace kiln {

namespace {
RankedTensorType ranked(Value v) { return cast<RankedTensorType>(v.getType()); }
Type elem(Value v) { return ranked(v).getElementType(); }
int64_t numel(Value v) { return ranked(v).getNumElements(); }
int64_t lastDim(Value v) { return ranked(v).getShape().back(); }
} // namespace

LogicalResult emitReferenceProgram(Operation *kernelOp, OpBuilder &b,
                                   const kk::ProgramArgs &args) {
  bool known = true;
  llvm::TypeSwitch<Operation *>(kernelOp)
      .Case([&](GatherRowsOp op) {
        kk::emitGatherRowsProgram(b, args, ranked(op.getTable()).getDimSize(0),
                                  lastDim(op.getTable()), elem(op.getTable()),
                                  elem(op.getIds()), elem(op.getResult()));
      })
      .Case([&](LastTokenOp op) {
        kk::emitLastTokenProgram(b, args, ranked(op.getInput()).getDimSize(1),
                                 lastDim(op.getInput()), elem(op.getInput()),
                                 elem(op.getResult()));
      })
      .Case([&](RMSNormOp op) {
        kk::CachePlacement place;
        if (op.getCache()) {
          place.capacity = ranked(op.getCache()).getDimSize(1);
          place.seq = normRows(op) / ranked(op.getCache()).getDimSize(0);
          if (op.getCacheStart()) {
            place.startBuffer = 3;
            place.startType = elem(op.getCacheStart());
          }
        }
        kk::emitRMSNormProgram(
            b, args, lastDim(op.getResult()), op.getEpsilon().convertToFloat(),
            elem(op.getInput()), elem(op.getWeight()), elem(op.getResult()),
            op.getInputStride(), op.getInputOffset(), place);
      })
      .Case([&](GemmOp op) {
        auto w = ranked(op.getWeight());
        kk::emitGemmProgram(b, args, w.getDimSize(0), w.getDimSize(1),
                            op.getTileN(), elem(op.getInput()),
                            elem(op.getWeight()), elem(op.getResult()),
                            op.getAddends().size());
      })
      .Case([&](GemmSwiGLUOp op) {
        auto w = ranked(op.getWGate());
        kk::emitGemmSwiGLUProgram(b, args, w.getDimSize(0), w.getDimSize(1),
                                  op.getTileN(), elemTypes(op));
      })
      .Case([&](GemmDualOp op) {
        kk::emitGemmDualProgram(b, args, ranked(op.getW1()).getDimSize(0),
                                ranked(op.getW2()).getDimSize(0),
                                ranked(op.getW1()).getDimSize(1), op.getTileN(),
                                elemTypes(op));
      })
      .Case([&](ElementwiseOp op) {
        kk::emitElementwiseProgram(b, args, *parseElementwiseKind(op.getKind()),
                                   op.getBlock(), elem(op.getLhs()),
                                   elem(op.getRhs()), elem(op.getResult()),
                                   numel(op.getRhs()));
      })
      .Case([&](SliceOp op) {
        kk::emitSliceProgram(b, args, lastDim(op.getInput()), op.getOffset(),
                             lastDim(op.getResult()), elem(op.getInput()),
                             elem(op.getResult()));
      })
      .Case([&](RopeOp op) {
        kk::emitRopeProgram(b, args, ropeParams(op), elem(op.getInput()),
                            op.getStart() ? elem(op.getStart()) : Type(),
                            elem(op.getResult()));
      })
      .Case([&](AttentionOp op) {
        kk::emitAttentionProgram(b, args, attentionParams(op), elem(op.getQ()),
                                 elem(op.getK()), elem(op.getV()),
                                 op.getStart() ? elem(op.getStart()) : Type(),
                                 elem(op.getResult()));
      })
      .Case([&](MLAAttentionOp op) {
        SmallVector<Type> types;
        for (Value v : op.getOperation()->getOperands())
          types.push_back(elem(v));
        for (Value v : op.getOperation()->getResults())
          types.push_back(elem(v));
        kk::emitMLAProgram(b, args, mlaParams(op), types);
      })
      .Case([&](LatentCacheWriteOp op) {
        // Buffers: input, weight, latent_cache, rope_cache, [start], latent,
        // rope. The RMSNorm and the rope bodies run one after the other in the
        // same program, each on its view of the bindings.
        bool st = static_cast<bool>(op.getStart());
        Value x = args.buffers[0], start = st ? args.buffers[4] : Value();
        Value latOut = args.buffers[st ? 5 : 4],
              ropeOut = args.buffers[st ? 6 : 5];
        kk::ProgramArgs norm{args.loc,
                             {x, args.buffers[1], args.buffers[2]},
                             args.scalars,
                             args.pid};
        kk::CachePlacement place;
        auto lc = ranked(op.getLatentCache());
        place.capacity = lc.getDimSize(1);
        place.seq = op.getNumPrograms() / lc.getDimSize(0);
        if (st) {
          norm.buffers.push_back(start);
          place.startBuffer = 3;
          place.startType = elem(op.getStart());
        }
        norm.buffers.push_back(latOut);
        kk::emitRMSNormProgram(
            b, norm, lc.getDimSize(2), op.getEpsilon().convertToFloat(),
            elem(op.getInput()), elem(op.getWeight()), elem(op.getLatent()),
            op.getInputStride(), op.getLatentOffset(), place);
        kk::ProgramArgs rope{args.loc, {x}, args.scalars, args.pid};
        if (st)
          rope.buffers.push_back(start);
        rope.buffers.push_back(args.buffers[3]);
        rope.buffers.push_back(ropeOut);
        kk::emitRopeProgram(b, rope, latentRopeParams(op), elem(op.getInput()),
                            st ? elem(op.getStart()) : Type(),
                            elem(op.getRope()));
      })
      .Case([&](MLANaiveOp op) {
        kk::emitMLANaiveProgram(b, args, mlaNaiveParams(op), elemTypes(op));
      })
      .Case([&](MLAAttentionQuantOp op) {
        kk::emitMLAProgram(b, args, mlaQuantParams(op), elemTypes(op));
      })
      .Case([&](MoERouteOp op) {
        kk::emitMoERouteProgram(b, args, routeParams(op), elemTypes(op));
      })
      .Case([&](MoEUpOp op) {
        auto wg = ranked(op.getWGate());
        kk::emitMoEUpProgram(b, args, wg.getDimSize(2), wg.getDimSize(1),
                             op.getBlockM(), op.getTileF(), elemTypes(op));
      })
      .Case([&](MoEDownOp op) {
        auto wd = ranked(op.getWDown());
        kk::emitMoEDownProgram(b, args, wd.getDimSize(1), wd.getDimSize(2),
                               op.getBlockM(), op.getTileD(), elemTypes(op));
      })
      .Case([&](MoECombineOp op) {
        kk::emitMoECombineProgram(b, args, lastDim(op.getResult()),
                                  lastDim(op.getWeights()),
                                  lastDim(op.getSlotRow()), op.getTileD(),
                                  elemTypes(op), op.getAddends().size());
      })
      .Case([&](CacheWriteOp op) {
        auto c = ranked(op.getCache()), v = ranked(op.getValues());
        int64_t width =
            numel(op.getValues()) / (v.getDimSize(0) * v.getDimSize(1));
        kk::emitCacheWriteProgram(b, args, c.getDimSize(1), v.getDimSize(1),
                                  width, static_cast<bool>(op.getStart()),
                                  elemTypes(op));
      })
      .Case([&](QuantizeOp op) {
        kk::emitQuantizeProgram(b, args, lastDim(op.getInput()), op.getAct(),
                                elem(op.getInput()), elem(op.getResult()),
                                op.getPow2Scale(), op.getFlushSubnormals());
      })
      .Case([&](DequantizeOp op) {
        kk::emitDequantizeProgram(b, args, lastDim(op.getInput()), op.getAct(),
                                  elem(op.getInput()), elem(op.getResult()));
      })
      .Case([&](RMSNormQuantOp op) {
        kk::emitRMSNormQuantProgram(b, args, lastDim(op.getInput()),
                                    op.getEpsilon().convertToFloat(),
                                    op.getAct(), elemTypes(op));
      })
      .Case([&](SwiGLUQuantOp op) {
        kk::emitSwiGLUQuantProgram(b, args, lastDim(op.getGate()), op.getAct(),
                                   elemTypes(op));
      })
      .Case([&](GemmFP8Op op) {
        auto w = ranked(op.getWeight());
        kk::emitGemmFP8Program(b, args, w.getDimSize(0), w.getDimSize(1),
                               op.getTileN(), op.getAct(), op.getWeightBlockN(),
                               elemTypes(op), op.getAddends().size());
      })
      .Case([&](GemmDualFP8Op op) {
        kk::emitGemmDualFP8Program(
            b, args, ranked(op.getW1()).getDimSize(0),
            ranked(op.getW2()).getDimSize(0), ranked(op.getW1()).getDimSize(1),
            op.getTileN(), op.getAct(), op.getWeightBlockN(), elemTypes(op));
      })
      .Case([&](GemmSwiGLUFP8Op op) {
        auto w = ranked(op.getWGate());
        kk::emitGemmSwiGLUFP8Program(b, args, w.getDimSize(0), w.getDimSize(1),
                                     op.getTileN(), op.getAct(),
                                     op.getWeightBlockN(), elemTypes(op));
      })
      .Case([&](MoEUpFP8Op op) {
        auto wg = ranked(op.getWGate());
        kk::emitMoEUpFP8Program(b, args, wg.getDimSize(2), wg.getDimSize(1),
                                op.getBlockM(), op.getTileF(), op.getAct(),
                                elemTypes(op));
      })
      .Case([&](MoEDownFP8Op op) {
        auto wd = ranked(op.getWDown());
        kk::emitMoEDownFP8Program(b, args, wd.getDimSize(1), wd.getDimSize(2),
                                  op.getBlockM(), op.getTileD(), op.getAct(),
                                  elemTypes(op));
      })
      .Default([&](Operation *) { known = false; });
  if (!known)
    return kernelOp->emitError("no reference program for this op");
  return success();
}

} // namespace kiln
