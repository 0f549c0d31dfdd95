// Internal: the device-specific half of a Session.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/runtime.h"
#include "plan_generated.h"

namespace kiln {

// The programs of a token-major launch (plan::TokenGrid) that a request's
// tokens need: program ranges [first, second), ascending, and the launch's
// scalars with its token counts set to the request's.
struct LaunchWindow {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::vector<int64_t> scalars;
};

// The window of `launch` for `rows` batch rows of `seq` positions each, or
// nullopt when that is the whole launch (or the launch is not token-major).
std::optional<LaunchWindow> TokenWindow(const plan::Launch& launch, int64_t rows, int64_t seq);

class Backend {
 public:
  virtual ~Backend() = default;
  // Copies between host memory and the arena (offsets are arena offsets).
  virtual absl::Status CopyIn(uint64_t offset, const void* src, size_t size) = 0;
  virtual absl::Status CopyOut(uint64_t offset, void* dst, size_t size) = 0;
  // Zeroes arena bytes [offset, offset + size).
  virtual absl::Status Zero(uint64_t offset, size_t size) = 0;
  // Enqueues (CPU: runs) one launch of any function of the plan; for a
  // token-major launch of a request smaller than the plan's maxima,
  // `window` says which of its programs to run and with which scalars
  // (null: all of them, with the plan's scalars). A backend may run the
  // whole launch instead: the plan's scalars describe all its programs.
  virtual absl::Status Launch(const plan::Launch& launch, const LaunchWindow* window) = 0;
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
