//===- Emitter.h - CPU kernel emitters --------------------------*- C++ -*-===//
//
// A CPU emitter writes the body of one kernel's entry point
//   void name(void **buffers, const int64_t *scalars, int64_t begin,
//             int64_t end)
// which computes programs [begin, end) of the kernel's grid (or of several,
// "name", "name.phase1", ..., run one after another over the same ranges:
// CpuEmitter::phases). The reference
// emitter loops over the kernel op's reference program (emitReferenceProgram),
// the executable specification of every kernel; an optimized emitter computes
// the same range its own way (blocked, vectorized, on AMX tiles) and is
// tested against the reference op by op (tests/e2e/test_cpu_gemm.py).
//
// chooseCpuEmitter picks the emitter per kernel (docs/kernels.md, "CPU
// emitters"); the choice is appended to the kernel's tile configuration
// text, so kiln-inspect shows it.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_CODEGEN_CPU_EMITTER_H
#define KILN_CODEGEN_CPU_EMITTER_H

#include "kiln/Compiler/Codegen.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Value.h"

#include <memory>
#include <string>

namespace kiln::cpu {

/// What the target CPU offers the emitters (from the TargetMachine's
/// subtarget, so --cpu decides, not the compiling host).
struct CpuTarget {
  bool avx512 = false; ///< avx512f + avx512bw + avx512vl
  bool avx512bf16 = false;
  bool avx512vbmi = false; ///< byte permutes (vpermi2b)
  bool amxBF16 = false; ///< amx-tile + amx-bf16
  bool avx2fma = false; ///< avx2 + fma (16-lane vectors as ymm pairs)
  /// AMD Zen (znver*): 512-bit word permutes (vpermi2w) are cheap there;
  /// Intel cores split them into 3 uops, 2 on the one shuffle port.
  bool zen = false;
};

/// The values an entry point receives, already loaded from its arguments.
struct EntryArgs {
  mlir::Location loc;
  llvm::SmallVector<mlir::Value> buffers; ///< !llvm.ptr per binding
  llvm::SmallVector<mlir::Value> scalars; ///< i64 run-time scalars
  mlir::Value begin, end;                 ///< i64 program range
  /// Which of the emitter's phases() this entry is (0: the entry named
  /// after the kernel).
  unsigned phase = 0;
};

class CpuEmitter {
public:
  virtual ~CpuEmitter() = default;
  /// One line for the tile config text ("cpu=..."): which emitter and how
  /// it blocks.
  virtual std::string describe() const = 0;
  /// Emits the entry body at the builder's insertion point (inside the
  /// entry function, before its return). May add private helper functions
  /// to `module`, named "KERNEL.<suffix>" (kiln-inspect counts them into
  /// the entry's code bytes).
  virtual void emitEntry(mlir::OpBuilder &b, mlir::ModuleOp module,
                         const KernelRecord &kernel,
                         const EntryArgs &args) = 0;
  /// Entry points the kernel runs as, in order, each over the launch's
  /// program ranges after every range of the one before has finished
  /// (EntryPoint.phases): emitEntry is called once per phase.
  virtual unsigned phases() const { return 1; }
};

/// The reference: for pid in [begin, end): emitReferenceProgram(pid).
std::unique_ptr<CpuEmitter> makeReferenceEmitter();

/// The emitter for `kernel` under `options`, and why (for the config text).
/// Never null: the reference when nothing better applies.
std::unique_ptr<CpuEmitter> chooseCpuEmitter(const KernelRecord &kernel,
                                             const CpuCodegenOptions &options,
                                             const CpuTarget &target);

/// The optimized GEMM-family emitter (gemm, gemm_swiglu, gemm_dual), or
/// null with `why` set when the kernel is not one it handles.
std::unique_ptr<CpuEmitter>
makeGemmEmitter(const KernelRecord &kernel, const CpuCodegenOptions &options,
                const CpuTarget &target, std::string &why);

/// The optimized emitter of the experts' grouped GEMMs (moe_up, moe_down),
/// or null with `why` set when the kernel is not one it handles.
std::unique_ptr<CpuEmitter>
makeMoeEmitter(const KernelRecord &kernel, const CpuCodegenOptions &options,
               const CpuTarget &target, std::string &why);

/// The optimized emitter of attention (GQA), mla_attention,
/// mla_attention_quant and mla_naive, or null with `why` set when the kernel
/// is not one it handles.
std::unique_ptr<CpuEmitter>
makeAttentionEmitter(const KernelRecord &kernel,
                     const CpuCodegenOptions &options, const CpuTarget &target,
                     std::string &why);

} // namespace kiln::cpu

#endif // KILN_CODEGEN_CPU_EMITTER_H
