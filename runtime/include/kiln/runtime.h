// Kiln runtime public API.
//
//   auto plan = kiln::Plan::Open("model.kplan");           // verify
//   auto session = kiln::Session::Create(*plan, kiln::Device::kCpu);
//   (*session)->SetInput("tokens", tensor);
//   (*session)->Run();
//   auto logits = (*session)->GetOutput("logits");
//
// Every fallible call returns absl::Status / absl::StatusOr. The runtime knows
// buffers, kernels and launches, never model ops.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/dtype.h"
#include "kiln/tensor.h"

namespace kiln {
namespace plan {
struct Plan;  // flatbuffers table from plan_generated.h
}

inline constexpr uint32_t kPlanFormatVersion = 1;
inline constexpr char kPlanFileIdentifier[] = "KPLN";

class MappedFile;

// The bytes of one weight, resolved to host memory (packed in the plan or
// mmapped from an external file). Valid while the Plan lives.
struct WeightView {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

// A verified, immutable plan. Thread-safe; share it between sessions.
class Plan {
 public:
  // Maps `path` read-only and verifies it (structure, version, semantics).
  static absl::StatusOr<std::shared_ptr<const Plan>> Open(const std::string& path);
  // Verifies a plan image held in memory (copied). External weight paths are
  // resolved relative to `base_dir`. `what` names the plan in errors.
  static absl::StatusOr<std::shared_ptr<const Plan>> OpenFromMemory(
      std::string_view bytes, std::string base_dir = ".",
      std::string what = "<memory>");

  ~Plan();
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  // The flatbuffers root; see runtime/schema/plan.fbs.
  const plan::Plan& fb() const { return *root_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // The file path (or `what` for in-memory plans) and its directory.
  const std::string& path() const { return path_; }
  const std::string& base_dir() const { return base_dir_; }

  // Resolves every weight to host memory: packed weights point into the plan,
  // external ones are mmapped and checked against file size and FNV-1a 64.
  // Done once per Plan; later calls return the cached result (or error).
  absl::StatusOr<const std::vector<WeightView>*> ResolveWeights() const;

  // Index of the input / output named `name`, or a NotFound error listing
  // the valid names.
  absl::StatusOr<size_t> FindInput(std::string_view name) const;
  absl::StatusOr<size_t> FindOutput(std::string_view name) const;

 private:
  Plan() = default;
  static absl::StatusOr<std::shared_ptr<const Plan>> Finish(std::unique_ptr<Plan> p);

  std::unique_ptr<MappedFile> file_;        // when opened from a file
  std::unique_ptr<uint8_t, void (*)(void*)> owned_{nullptr, nullptr};  // in-memory copy
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  const plan::Plan* root_ = nullptr;
  std::string path_;
  std::string base_dir_;

  mutable std::once_flag weights_once_;
  mutable absl::Status weights_status_;
  mutable std::vector<WeightView> weights_;
  mutable std::vector<std::unique_ptr<MappedFile>> weight_files_;
};

// FNV-1a 64-bit hash, as used for ExternalData.fnv1a64.
uint64_t Fnv1a64(const void* data, size_t size);

enum class Device { kCpu, kCuda };
const char* DeviceName(Device device);

struct SessionOptions {
  // CPU worker threads including the caller; 0 = hardware concurrency.
  int num_threads = 0;
  // CUDA device ordinal.
  int cuda_device = 0;
  // Time each launch (CUDA: synchronizes after every launch).
  bool profile_launches = false;
};

struct RunStats {
  double total_ms = 0;                 // wall time of the last Run()
  std::vector<double> launch_ms;       // per launch, when profile_launches
  uint64_t runs = 0;                   // number of completed Run() calls
};

class Backend;  // internal: one per device kind

// One execution context: an arena, resolved weights and a loaded executable.
// Not thread-safe; use one session per thread.
class Session {
 public:
  static absl::StatusOr<std::unique_ptr<Session>> Create(
      std::shared_ptr<const Plan> plan, Device device,
      const SessionOptions& options = {});
  ~Session();

  // Copies `tensor` into the input's arena buffer after checking the name,
  // dtype and shape against the plan.
  absl::Status SetInput(std::string_view name, const HostTensor& tensor);
  // Executes every launch, in order, and waits for completion.
  absl::Status Run();
  // Copies an output out of the arena.
  absl::StatusOr<HostTensor> GetOutput(std::string_view name) const;

  const Plan& plan() const { return *plan_; }
  Device device() const { return device_; }
  const RunStats& stats() const { return stats_; }

 private:
  Session() = default;
  std::shared_ptr<const Plan> plan_;
  Device device_ = Device::kCpu;
  SessionOptions options_;
  std::unique_ptr<Backend> backend_;
  RunStats stats_;
};

}  // namespace kiln
