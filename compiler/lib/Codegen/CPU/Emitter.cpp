//===- Emitter.cpp - The reference CPU emitter and the choice per kernel --===//
//
// The reference emitter is the first version's code generation, unchanged:
// the entry loops over its program range and places the kernel op's scalar
// program in the loop body. Every kernel has it; optimized emitters are
// tested against it.
//
//===----------------------------------------------------------------------===//
#include "Emitter.h"

#include "kernel/IR/KernelDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;

namespace kiln::cpu {

namespace {

class ReferenceEmitter : public CpuEmitter {
public:
  explicit ReferenceEmitter(std::string why) : why(std::move(why)) {}

  std::string describe() const override { return why; }

  void emitEntry(OpBuilder &b, ModuleOp, const KernelRecord &kernel,
                 const EntryArgs &args) override {
    Value one = arith::ConstantIntOp::create(b, args.loc, b.getI64Type(), 1);
    auto loop = scf::ForOp::create(b, args.loc, args.begin, args.end, one);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPoint(loop.getBody()->getTerminator());
    kernels::ProgramArgs pargs{args.loc, args.buffers, args.scalars,
                               loop.getInductionVar()};
    if (failed(emitReferenceProgram(kernel.representative, b, pargs)))
      llvm::report_fatal_error("kernel op without a reference program");
  }

private:
  /// Empty for kernels that only have the reference (their config text
  /// stays as it is); "reference (reason)" where an optimized emitter
  /// exists but was not taken.
  std::string why;
};

} // namespace

std::unique_ptr<CpuEmitter> makeReferenceEmitter() {
  return std::make_unique<ReferenceEmitter>("");
}

std::unique_ptr<CpuEmitter> chooseCpuEmitter(const KernelRecord &kernel,
                                             const CpuCodegenOptions &options,
                                             const CpuTarget &target) {
  Operation *op = kernel.representative;
  bool gemm = isa<kernel::GemmOp, kernel::GemmSwiGLUOp, kernel::GemmDualOp,
                  kernel::GemmFP8Op, kernel::GemmDualFP8Op,
                  kernel::GemmSwiGLUFP8Op>(op);
  bool experts = isa<kernel::MoEUpOp, kernel::MoEDownOp, kernel::MoEUpFP8Op,
                     kernel::MoEDownFP8Op>(op);
  bool attention = isa<kernel::AttentionOp, kernel::MLAAttentionOp,
                       kernel::MLAAttentionQuantOp, kernel::MLANaiveOp>(op);
  if (!gemm && !experts && !attention)
    return makeReferenceEmitter();
  if (options.emitter == CpuEmitterChoice::Reference)
    return std::make_unique<ReferenceEmitter>("reference (--cpu-emitter)");
  std::string why;
  if (auto e = gemm      ? makeGemmEmitter(kernel, options, target, why)
               : experts ? makeMoeEmitter(kernel, options, target, why)
                         : makeAttentionEmitter(kernel, options, target, why))
    return e;
  return std::make_unique<ReferenceEmitter>("reference (" + why + ")");
}

} // namespace kiln::cpu
