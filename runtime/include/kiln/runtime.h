// Kiln runtime public API.
//
//   auto plan = kiln::Plan::Open("model.kplan");           // verify
//   auto session = kiln::Session::Create(*plan, kiln::Device::kCpu);
//   (*session)->SetInput("tokens", tensor);
//   (*session)->Run();
//   auto logits = (*session)->GetOutput("logits");
//
// Functions: a plan has one or more entry points. The top-level launches,
// inputs and outputs of the schema are the function named "forward"; further
// ones (Plan.functions, e.g. "decode") share the plan's kernels, buffers,
// weights and state. The single-name calls (SetInput(name), Run(), ...) act
// on "forward".
//
//   auto out = (*session)->Call("decode", {{"tokens", t}, {"position", p}});
//
// State: buffers of kind `state` live in the arena region [0, state_size) and
// keep their contents across calls (a KV cache). They are zeroed when the
// session is created and by Session::ResetState().
//
// Generation calling convention (kiln/generate.h, `kiln-run --prompt` and
// `--generate`): a plan that supports decoding has
//   forward: input  tokens  int32   [B, S]
//            output logits  float32 [B, V]      (of the last position given; fills
//                                                the state for positions 0..S-1)
//   decode:  inputs tokens  int32   [B, 1], position int32 [B]
//            output logits  float32 [B, V]      (reads/extends the state at `position`)
// with the same B and V in both; plans compiled with `--logits=all` return
// every position's logits instead: [B, S, V] and [B, 1, V].
//
// Every fallible call returns absl::Status / absl::StatusOr. The runtime knows
// buffers, kernels and launches, never model ops.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/dtype.h"
#include "kiln/tensor.h"
#include "kiln/tokenizer.h"

namespace kiln {
namespace plan {
struct Plan;  // flatbuffers tables from plan_generated.h
struct Launch;
struct TensorSpec;
}  // namespace plan

inline constexpr uint32_t kPlanFormatVersion = 3;
inline constexpr char kPlanFileIdentifier[] = "KPLN";
// The name of the top-level entry point.
inline constexpr char kForwardFunction[] = "forward";

// Kiln's version ("0.1.0"), the project's.
const char* Version();

class MappedFile;

// The generation defaults a plan records from its checkpoint (Plan.generation:
// generation_config.json, else config.json; see docs/generation.md).
struct GenerationDefaults {
  std::vector<int32_t> eos_token_ids;  // stop tokens; empty: none known
  int32_t bos_token_id = -1;           // -1: none given
  std::string eos_source, bos_source;  // the file each came from
  // Sampling (transformers' defaults where generation_config.json is silent).
  bool do_sample = false;              // false: greedy
  float temperature = 1.0f;
  int32_t top_k = 50;
  float top_p = 1.0f;
};

// The bytes of one weight, resolved to host memory (packed in the plan or
// mmapped from an external file). Valid while the Plan lives.
struct WeightView {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

// A named input or output of a function, described without the plan schema's
// generated types.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // the maximum shape
  // Per dimension: -1 when fixed, or a symbol s >= 0 for a dimension the
  // caller may give smaller (the batch, the sequence); dimensions with the
  // same symbol take the same size in a call. Outputs carrying a symbol come
  // back at the size given.
  std::vector<int32_t> dim_symbols;
  // Integer inputs that index memory (token ids, cache positions): every
  // value must lie in [value_min, value_max].
  bool has_value_range = false;
  int64_t value_min = 0, value_max = 0;
};

// How much of the external weights' bytes are checked against the plan.
enum class WeightCheck {
  // When a session starts (Plan::ResolveWeights): every file's size and the
  // identity the compiler recorded for it (XXH64 of 16 chunks of 64 KiB
  // spread over the file, all of it when smaller; plan.fbs WeightFile):
  // milliseconds per file whatever its size. Catches a replaced, truncated
  // or resized file; not a corrupted byte between the sampled chunks.
  kIdentity,
  // That, then XXH64 of every weight byte on every thread
  // (Plan::VerifyWeights; the `kiln-verify` tool): reads the whole checkpoint.
  kFull,
};

// Options of Plan::VerifyWeights.
struct WeightVerifyOptions {
  // Hashing threads; 0 = hardware concurrency.
  int num_threads = 0;
  // Called on the calling thread about every `progress_interval_s` seconds
  // while the weights are hashed, and once at the end.
  std::function<void(uint64_t hashed_bytes, uint64_t total_bytes)> progress;
  double progress_interval_s = 1.0;
};

// One entry point of a verified plan: the top-level "forward" or an entry of
// Plan.functions. `launches`, `inputs` and `outputs` point into the plan's
// flatbuffer (plan_generated.h); `input_info` and `output_info` describe the
// same tensors without it. Valid while the Plan lives.
struct Function {
  std::string name;
  std::vector<const plan::Launch*> launches;
  std::vector<const plan::TensorSpec*> inputs;
  std::vector<const plan::TensorSpec*> outputs;
  std::vector<TensorInfo> input_info;
  std::vector<TensorInfo> output_info;
};

// A verified, immutable plan. Thread-safe; share it between sessions.
class Plan {
 public:
  // Maps `path` read-only and verifies it: the checksum trailer, structure,
  // version, then semantics (every launch against what its kernel was
  // generated for, every executable's checksum, the tensor specs).
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
  // external ones are mmapped and checked against file size and XXH64.
  // Done once per Plan; later calls return the cached result (or error).
  // External files are checked by size and recorded identity
  // (WeightCheck::kIdentity); files without a recorded identity (plans of
  // older compilers) by XXH64 of every weight in them.
  absl::StatusOr<const std::vector<WeightView>*> ResolveWeights() const;
  // ResolveWeights, then XXH64 of every external weight against the plan, in
  // parallel (WeightCheck::kFull). The error names the first weight (in plan
  // order) whose bytes differ, its file, and how many differ.
  absl::Status VerifyWeights(const WeightVerifyOptions& options = {}) const;

  // Every entry point; functions()[0] is "forward".
  const std::vector<Function>& functions() const { return functions_; }
  // Their names, "forward" first.
  std::vector<std::string> FunctionNames() const;
  // The function named `name`, or a NotFound error listing the functions
  // ("plan has no function 'decod'; functions: forward, decode").
  absl::StatusOr<const Function*> FindFunction(std::string_view name) const;

  // Index of the input / output named `name` of "forward" (or of
  // `function`), or a NotFound error listing the valid names.
  absl::StatusOr<size_t> FindInput(std::string_view name) const;
  absl::StatusOr<size_t> FindOutput(std::string_view name) const;
  absl::StatusOr<size_t> FindInput(std::string_view function, std::string_view name) const;
  absl::StatusOr<size_t> FindOutput(std::string_view function, std::string_view name) const;

  // The tokenizer the plan carries (the checkpoint's tokenizer.json, embedded
  // by kiln-compile), or a NotFound error saying the plan has none.
  bool HasTokenizer() const;
  absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer() const;
  // The checkpoint's generation defaults, when the plan records them.
  std::optional<GenerationDefaults> Generation() const;

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
  std::vector<Function> functions_;

  mutable std::once_flag weights_once_;
  mutable absl::Status weights_status_;
  mutable std::vector<WeightView> weights_;
  mutable std::vector<std::unique_ptr<MappedFile>> weight_files_;
};

enum class Device { kCpu, kCuda };
const char* DeviceName(Device device);

struct SessionOptions {
  // CPU worker threads including the caller; 0 = hardware concurrency.
  int num_threads = 0;
  // CUDA device ordinal.
  int cuda_device = 0;
  // Time each launch (CUDA: synchronizes after every launch).
  bool profile_launches = false;
  // What Session::Create checks of the external weights (kFull: also
  // Plan::VerifyWeights, on num_threads threads).
  WeightCheck weight_check = WeightCheck::kIdentity;
};

struct RunStats {
  std::string function;                // the function of the last Run()
  double total_ms = 0;                 // wall time of the last Run()
  std::vector<double> launch_ms;       // per launch of it, when profile_launches
  uint64_t runs = 0;                   // number of completed Run() calls (all functions)
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
  // dtype and shape against the plan, and every value against the input's
  // value range (TensorSpec.value_range: token ids, cache positions), e.g.
  //   function 'decode': input 'position' row 1: value -16 is outside
  //   [0, 15] (the KV cache holds 16 positions; compile with a larger --max-seq)
  // Errors of functions other than "forward" start with "function 'NAME': ".
  absl::Status SetInput(std::string_view function, std::string_view name, const HostTensor& tensor);
  // Executes every launch of `function`, in order, and waits for completion.
  // Inputs with a value range that were not set since another function ran
  // (functions share arena memory) are checked in the arena first.
  absl::Status Run(std::string_view function);
  // Copies an output of `function` out of the arena. Valid after Run(function)
  // until the next Run (functions may share arena memory).
  absl::StatusOr<HostTensor> GetOutput(std::string_view function, std::string_view name) const;
  // SetInput for every (name, tensor) pair (each input of the function must be
  // given exactly once), Run, then every output in the function's spec order.
  absl::StatusOr<std::vector<HostTensor>> Call(
      std::string_view function, const std::vector<std::pair<std::string, HostTensor>>& inputs);
  // Call, with the outputs by name: (*out).at("logits").
  absl::StatusOr<std::map<std::string, HostTensor>> CallByName(
      std::string_view function, const std::vector<std::pair<std::string, HostTensor>>& inputs);
  // Zeroes every state buffer (the arena region [0, state_size)).
  absl::Status ResetState();

  // The same on "forward".
  absl::Status SetInput(std::string_view name, const HostTensor& tensor) {
    return SetInput(kForwardFunction, name, tensor);
  }
  absl::Status Run() { return Run(kForwardFunction); }
  absl::StatusOr<HostTensor> GetOutput(std::string_view name) const {
    return GetOutput(kForwardFunction, name);
  }

  const Plan& plan() const { return *plan_; }
  Device device() const { return device_; }
  const RunStats& stats() const { return stats_; }

 private:
  Session() = default;
  std::shared_ptr<const Plan> plan_;
  Device device_ = Device::kCpu;
  SessionOptions options_;
  std::unique_ptr<Backend> backend_;
  // Sizes given to symbolic dimensions (TensorSpec.dim_symbols), per
  // function: inputs are zero-padded to the compiled shape, outputs sliced.
  std::map<std::string, std::map<int32_t, int64_t>> symbol_values_;
  // Per function and input: whether the input's arena bytes are known to
  // satisfy its value range (set and checked since no other function ran).
  enum class InputState : uint8_t { kNeverSet, kChecked, kClobbered };
  std::map<std::string, std::vector<InputState>> input_state_;
  std::map<std::string, std::string> clobbered_by_;  // function -> the one that ran since
  absl::Status CheckInputsBeforeRun(const Function& f);
  RunStats stats_;
};

}  // namespace kiln
