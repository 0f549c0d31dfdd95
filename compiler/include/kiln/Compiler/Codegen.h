//===- Codegen.h - Per-target code generation of kernel programs -*- C++ -*-===//
//
// Codegen takes the distinct kernels of a kernel-level module and produces,
// per target, an executable: a native shared object for the CPU, PTX (and a
// cubin when ptxas is present) for CUDA. Kernel ops say what a kernel
// computes; the reference program of each (Codegen/Reference/) is the one
// every target can wrap, and per-target emitters (Codegen/CPU/,
// Codegen/CUDA/) either wrap it or generate their own, tested against it.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_COMPILER_CODEGEN_H
#define KILN_COMPILER_CODEGEN_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Support/LLVM.h"
#include "llvm/ADT/DenseMap.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kiln {
namespace kernels {
struct ProgramArgs;
} // namespace kernels

class StageDumper;

/// Emits one program of kernel op `kernelOp` (a KernelOpInterface op) at the
/// builder's insertion point: the reference program, the executable
/// specification of the kernel (Codegen/Reference/ReferenceProgram.cpp).
/// Fails, with an error on the op, for an op that has none.
mlir::LogicalResult emitReferenceProgram(mlir::Operation *kernelOp,
                                         mlir::OpBuilder &b,
                                         const kernels::ProgramArgs &args);

/// One distinct kernel of the schedule and everything known about it.
struct KernelRecord {
  std::string name;
  std::string config;
  std::vector<std::string> fusedOps;
  std::vector<std::string> locations;
  unsigned numBuffers = 0;
  unsigned numScalars = 0;
  int64_t maxPrograms = 0;
  mlir::Operation *representative = nullptr;
};

/// The distinct kernels of @forward, and which kernel each launch runs.
struct KernelTable {
  std::vector<KernelRecord> kernels;
  llvm::DenseMap<mlir::Operation *, unsigned> launchKernel;
};

/// Collects the distinct kernels of every entry function of a kernel-level
/// module (ops implementing KernelOpInterface), deduplicated by name.
KernelTable collectKernels(mlir::ModuleOp module);

/// Renders a location as "file:line:col" / "name" text for provenance.
std::string locationToString(mlir::Location loc);

struct CpuExecutable {
  std::string arch; ///< "x86_64"
  std::string cpu;  ///< LLVM's CPU name the code is tuned for
  /// The instruction-set features the code may use (LLVM's names), which
  /// the runtime checks against the host before loading it.
  std::vector<std::string> features;
  std::vector<uint8_t> sharedObject;
  /// Per kernel of the table, the phases of its entry point
  /// (EntryPoint.phases).
  std::vector<uint32_t> phases;
};

/// --cpu-emitter: which CPU emitter writes each kernel's entry point.
enum class CpuEmitterChoice {
  Auto,      ///< the optimized emitter where one applies (docs/kernels.md)
  Reference, ///< the scalar programs everywhere (tests, debugging)
};

/// --cpu-gemm-precision: the arithmetic of the optimized GEMM emitter.
enum class CpuGemmPrecision {
  F32,  ///< fp32 products and sums, as the reference (default)
  BF16, ///< activations rounded to bf16 for AMX-BF16 tiles (bf16 weights)
};

struct CpuCodegenOptions {
  std::string cpu = "host"; ///< "host" or an LLVM CPU name
  CpuEmitterChoice emitter = CpuEmitterChoice::Auto;
  CpuGemmPrecision gemmPrecision = CpuGemmPrecision::F32;
  /// --fp8-exact-subnormals: no FP8 GEMV route that reads e4m3 subnormal
  /// weights as zero (GemmSpec::fp8Shift).
  bool fp8ExactSubnormals = false;
};

/// Builds the CPU executable: one C-ABI entry point per kernel
/// (void name(void **buffers, const int64_t *scalars, int64_t begin,
/// int64_t end)), compiled by LLVM for `options.cpu` and linked into a
/// shared object. Each kernel's entry is written by the emitter that
/// chooseCpuEmitter picks (compiler/lib/Codegen/CPU/Emitter.h); the choice
/// is appended to the kernel's `config` text in `table`.
mlir::FailureOr<CpuExecutable>
buildCpuExecutable(mlir::MLIRContext &ctx, KernelTable &table,
                   const CpuCodegenOptions &options, StageDumper &dumper);

struct CudaResources {
  bool hasResources = false;
  unsigned registers = 0, spillStores = 0, spillLoads = 0, sharedBytes = 0,
           constBytes = 0;
};

/// One parameter of a tile kernel (plan.fbs TileParam).
struct CudaTileParam {
  enum Kind : uint8_t {
    Binding = 0,
    TensorMap = 1,
    Rows = 2,
    FirstRow = 3
  } kind = Binding;
  unsigned binding = 0;
  // TensorMap: element type (plan DType numbering), dims innermost first,
  // byte strides of dims 1.., box, swizzle span in bytes.
  uint8_t dtype = 0;
  std::vector<uint64_t> dims, stridesBytes;
  std::vector<uint32_t> box;
  uint32_t swizzleBytes = 0;
  // TensorMap: the outermost dimension is the launch's rows; or the
  // binding is a weight table, the outermost dimension its entries.
  bool rowsDim = false, table = false;
  // Binding: bytes per row (0: not row-indexed).
  uint64_t rowBytes = 0;
};

/// A tile kernel that runs a kernel's launches of up to `maxRows` rows
/// (plan.fbs TileVariant).
struct CudaTileVariant {
  std::string name, config;
  uint64_t maxRows = 0;
  uint32_t threads = 0, dynamicSharedBytes = 0, rowsPerTile = 0,
           columnTiles = 0;
  std::vector<CudaTileParam> params;
  CudaResources resources;
  /// The registers ptxas must give it (0: any): a kernel that moves
  /// registers between warpgroups (setmaxnreg) hangs unless it starts with
  /// exactly the share they add up to.
  unsigned requiredRegisters = 0;
};

struct CudaEntry : CudaResources {
  std::string name;
  unsigned blockX = 128;
  /// Tile variants by increasing maxRows (empty: the program form only).
  std::vector<CudaTileVariant> tiles;
  uint64_t programsPerRow = 0;
  uint32_t rowsPerUnit = 1;
};

struct CudaExecutable {
  std::string arch;
  std::string ptx;
  std::vector<uint8_t> cubin; // empty when ptxas is absent
  std::string ptxasLog;
  std::vector<CudaEntry> entries; // one per kernel, in table order
};

/// Builds the CUDA executable for `chip` (e.g. "sm_90a"): gpu.func kernels
/// lowered through NVVM to PTX, assembled by ptxas when found.
mlir::FailureOr<CudaExecutable> buildCudaExecutable(mlir::MLIRContext &ctx,
                                                    const KernelTable &table,
                                                    llvm::StringRef chip,
                                                    StageDumper &dumper);

/// Runs a textual pass pipeline on a codegen module, honouring the
/// --mlir-print-ir-* family of flags.
mlir::LogicalResult runCodegenPipeline(mlir::ModuleOp module,
                                       llvm::StringRef pipeline);

/// Locates ptxas: $KILN_PTXAS, then PATH, then $CUDA_HOME/bin and
/// /usr/local/cuda/bin. Empty when absent.
std::string findPtxas();

} // namespace kiln

#endif // KILN_COMPILER_CODEGEN_H
