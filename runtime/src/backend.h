// Internal: the device-specific half of a Session.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/runtime.h"
#include "plan_generated.h"

namespace kiln {

class Backend {
 public:
  virtual ~Backend() = default;
  // Copies between host memory and the arena (offsets are arena offsets).
  virtual absl::Status CopyIn(uint64_t offset, const void* src, size_t size) = 0;
  virtual absl::Status CopyOut(uint64_t offset, void* dst, size_t size) = 0;
  // Zeroes arena bytes [offset, offset + size).
  virtual absl::Status Zero(uint64_t offset, size_t size) = 0;
  // Enqueues (CPU: runs) one launch of any function of the plan.
  virtual absl::Status Launch(const plan::Launch& launch) = 0;
  // Waits for every enqueued launch.
  virtual absl::Status Synchronize() = 0;
};

// The executable for `target`, or an error listing the compiled targets.
absl::StatusOr<const plan::Executable*> FindExecutable(const Plan& plan,
                                                      plan::TargetKind target);
// Entry point per kernel index (verified plans have one for every kernel).
std::vector<const plan::EntryPoint*> EntryPointsByKernel(const Plan& plan,
                                                         const plan::Executable& exe);

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(
    const Plan& plan, const std::vector<WeightView>& weights, const SessionOptions& options);
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(
    const Plan& plan, const std::vector<WeightView>& weights, const SessionOptions& options);

}  // namespace kiln
