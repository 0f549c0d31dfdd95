//===- Plan.h - Memory planning and plan emission ---------------*- C++ -*-===//
#ifndef KILN_COMPILER_PLAN_H
#define KILN_COMPILER_PLAN_H

#include "kiln/Compiler/Codegen.h"
#include "kiln/Compiler/GenerationAssets.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln {

/// A buffer to place in the arena, live over launches [first, last].
struct ArenaRequest {
  uint64_t size = 0;
  uint32_t first = 0, last = 0;
  uint64_t offset = 0; ///< set by planArena
};

/// Assigns arena offsets (greedy by size, first fit among buffers whose
/// live ranges overlap). Returns {arena size, peak live bytes}.
std::pair<uint64_t, uint64_t> planArena(std::vector<ArenaRequest> &requests,
                                        uint64_t alignment = 256);

/// A resolved weight: where its bytes are, and what they are.
struct WeightSource {
  std::string name;
  mlir::Type elementType;
  std::vector<int64_t> shape;
  std::string path;         ///< file holding the bytes
  uint64_t offset = 0;      ///< of the tensor in the file
  uint64_t size = 0;        ///< bytes
  uint64_t fileSize = 0;
  const uint8_t *data = nullptr; ///< mapped bytes (kept alive by the caller)
  /// Bytes computed by the compiler (compile-time quantization): no file
  /// holds them, so the plan packs them.
  std::shared_ptr<std::vector<uint8_t>> owned;
};

/// The plan format version emitPlan writes (plan.fbs, Plan.format_version).
inline constexpr uint32_t kPlanFormatWritten = 3;

struct PlanOptions {
  std::string planPath; ///< where the plan will live (for relative paths)
  bool embedWeights = false;
  std::string name;
  std::string compilerVersion;
  std::string flags;
  std::string sourcePath;
  std::string sourceHash;
  int64_t createdUnix = 0;
  /// The checkpoint's tokenizer and generation defaults (Plan.tokenizer,
  /// Plan.generation); null for models without them (.mlir).
  const GenerationAssets *generation = nullptr;
  int hashThreads = 0; ///< threads hashing the weights (0: the hardware's)
  bool quiet = false;  ///< no progress report on stderr
};

/// Serializes a kernel-level module (@forward and optional @decode) into
/// plan bytes.
mlir::FailureOr<std::vector<uint8_t>>
emitPlan(mlir::ModuleOp module, const KernelTable &table,
         const std::map<std::string, WeightSource> &weights,
         const std::optional<CpuExecutable> &cpu,
         const std::optional<CudaExecutable> &cuda, const PlanOptions &options);

/// FNV-1a 64 of a byte range (the provenance's source hash; plans check
/// their bytes and weights with XXH64, plan_support.h).
uint64_t fnv1a64(const uint8_t *data, size_t size);

} // namespace kiln

#endif // KILN_COMPILER_PLAN_H
