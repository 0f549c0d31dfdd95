//===- Compiler.h - The kiln-compile driver ---------------------*- C++ -*-===//
#ifndef KILN_COMPILER_COMPILER_H
#define KILN_COMPILER_COMPILER_H

#include "kiln/Compiler/Codegen.h"
#include "kiln/Compiler/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"

#include <string>
#include <vector>

namespace kiln {

/// Version string recorded in every plan's provenance.
const char *compilerVersion();

/// Registers every dialect, extension and translation the compiler uses.
void registerCompilerDialects(mlir::DialectRegistry &registry);
/// Registers the upstream passes named in Kiln's codegen pipelines, plus
/// Kiln's own passes and pipelines.
void registerCompilerPasses();

struct CompileOptions {
  std::string input;               ///< model.mlir (or checkpoint dir, later)
  std::string output;              ///< plan path
  std::vector<std::string> targets; ///< "cpu", "sm_90a"
  std::string dumpIRDir;           ///< --dump-ir-dir
  std::string cpu = "host";        ///< --cpu: host or an LLVM CPU name
  CpuEmitterChoice cpuEmitter = CpuEmitterChoice::Auto; ///< --cpu-emitter
  CpuGemmPrecision cpuGemmPrecision =
      CpuGemmPrecision::F32;       ///< --cpu-gemm-precision
  bool embedWeights = false;
  bool noWeights = false;          ///< --no-weights: describe, don't run
  bool quantizeFP8 = false;        ///< --quantize=fp8-block
  bool fp8LmHead = false;          ///< --fp8-lm-head (FP8 models)
  bool fp8ExactSubnormals = false; ///< --fp8-exact-subnormals
  /// --kv-cache-dtype: bf16 (default), f32, or fp8 (the MLA latent as e4m3
  /// tiles with power-of-two scales; MLA models only).
  enum class KVCacheDType { BF16, F32, FP8 } kvCacheDType = KVCacheDType::BF16;
  bool allLogits = false;          ///< --logits=all (default last)
  int64_t maxBatch = 1;            ///< --max-batch (checkpoint import)
  int64_t maxSeq = 0;              ///< --max-seq (0: the config's context, capped at 4096)
  int64_t prefillChunk = 0;        ///< --prefill-chunk (0: min(max-seq, 4096))
  std::string commandLine;         ///< recorded as provenance flags
  int threads = 0;                 ///< --hash-threads: hashing weights (0: all)
  bool quiet = false;              ///< --quiet: no progress on stderr
  KilnPipelineOptions pipeline;
};

/// Compiles a model into a plan, written atomically (no partial file on
/// failure). Diagnostics go to the context's handler.
mlir::LogicalResult compileModel(mlir::MLIRContext &ctx,
                                 const CompileOptions &options);

} // namespace kiln

#endif // KILN_COMPILER_COMPILER_H
