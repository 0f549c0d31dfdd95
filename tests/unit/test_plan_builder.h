// Builds small Kiln plans for tests, as plain data that tests can tamper with.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "plan_generated.h"

namespace kiln::test {

struct TBuffer {
  TBuffer() = default;
  TBuffer(plan::BufferKind kind, uint64_t size_bytes, uint64_t offset, uint32_t weight,
          std::vector<uint32_t> weight_list = {})
      : kind(kind), size_bytes(size_bytes), offset(offset), weight(weight),
        weight_list(std::move(weight_list)) {}
  plan::BufferKind kind = plan::BufferKind::intermediate;
  uint64_t size_bytes = 0;
  uint64_t offset = 0;
  uint32_t weight = 0;
  std::vector<uint32_t> weight_list;  // weight_table buffers
};
// One launch shape of a kernel (plan::KernelGrid).
struct TGrid {
  uint64_t programs = 0;
  std::vector<int64_t> scalar_min, scalar_max;
  std::vector<uint64_t> binding_bytes;
  std::vector<uint32_t> table_entries;
};
struct TKernel {
  TKernel() = default;
  TKernel(std::string name, uint32_t num_buffers, uint32_t num_scalars)
      : name(std::move(name)), num_buffers(num_buffers), num_scalars(num_scalars) {}
  std::string name;
  uint32_t num_buffers = 0, num_scalars = 0;
  // The last `num_written` bindings are the kernel's results (the test
  // kernels' convention).
  uint32_t num_written = 1;
  // Filled in from the launches by CompleteKernels (as the compiler does),
  // or set by hand.
  std::vector<plan::BindingAccess> access;
  std::vector<int32_t> in_place_of;
  std::vector<TGrid> grids;
};
// plan::TileParam (its TensorMapSpec when kind is tensor_map).
struct TTileParam {
  plan::TileParamKind kind = plan::TileParamKind::binding;
  uint32_t binding = 0;
  plan::DType dtype = plan::DType::f32;
  std::vector<uint64_t> dims, strides_bytes;
  std::vector<uint32_t> box;
  uint32_t swizzle_bytes = 0;
  bool rows_dim = false, table = false;
  uint64_t row_bytes = 0;
};
// plan::TileVariant.
struct TTile {
  std::string name;
  uint64_t max_rows = 0;
  uint32_t threads = 128, dynamic_shared_bytes = 0, rows_per_tile = 1, column_tiles = 1;
  std::vector<TTileParam> params;
};
struct TEntry {
  std::string name;
  uint32_t kernel = 0, block_x = 1, phases = 1;
  std::vector<TTile> tiles;
  uint64_t programs_per_row = 0;
  uint32_t rows_per_unit = 1;
};
struct TExecutable {
  plan::TargetKind target = plan::TargetKind::cpu;
  std::string arch = "x86_64";
  std::string binary;
  std::string ptx;
  std::vector<TEntry> entries;
};
struct TLaunch {
  uint32_t kernel = 0;
  std::vector<uint32_t> bindings;
  std::vector<int64_t> scalars;
  uint64_t programs = 0;
  std::string location;
  // plan::TokenGrid, when per_token > 0.
  struct Tokens {
    uint64_t per_token = 0, max_batch = 0, max_seq = 0;
    int32_t batch_symbol = -1, seq_symbol = -1, tokens_scalar = -1, seq_scalar = -1;
  } tokens;
  uint32_t block_x = 0;
};
struct TSpec {
  TSpec() = default;
  TSpec(std::string name, plan::DType dtype, std::vector<int64_t> shape, uint32_t buffer)
      : name(std::move(name)), dtype(dtype), shape(std::move(shape)), buffer(buffer) {}
  std::string name;
  plan::DType dtype = plan::DType::f32;
  std::vector<int64_t> shape;
  uint32_t buffer = 0;
  std::vector<int32_t> dim_symbols;
  bool has_range = false;
  int64_t range_min = 0, range_max = 0;
  int32_t range_max_grows_with = -1;
  std::string range_note;
};
struct TFunction {
  std::string name;
  std::vector<TLaunch> launches;
  std::vector<TSpec> inputs, outputs;
};
struct TWeight {
  std::string name;
  plan::DType dtype = plan::DType::f32;
  std::vector<int64_t> shape;
  uint64_t size_bytes = 0;
  bool packed = false;
  uint64_t packed_offset = 0;
  std::string path;  // external
  uint64_t ext_offset = 0, ext_size = 0, file_size = 0, xxh64 = 0;
};
// Plan.generation.
struct TGeneration {
  std::vector<int32_t> eos_token_ids;
  int32_t bos_token_id = -1;
  bool do_sample = false;
  float temperature = 1.0f;
  int32_t top_k = 50;
  float top_p = 1.0f;
};

struct TWeightFile {
  std::string path;
  uint64_t size = 0, sample_bytes = 0;
  uint32_t sample_count = 0;
  uint64_t sample_xxh64 = 0;
};
struct TPlan {
  uint32_t format_version = 3;
  std::vector<TExecutable> executables;
  std::vector<TKernel> kernels;
  std::vector<TBuffer> buffers;
  uint64_t arena_size = 0;
  std::vector<TLaunch> launches;
  std::vector<TSpec> inputs, outputs;
  std::vector<TWeight> weights;
  std::string weight_data;
  uint64_t state_size = 0;
  std::vector<TFunction> functions;
  // Plan.tokenizer (tokenizer.json bytes) and Plan.generation, when set.
  bool has_tokenizer = false;
  std::string tokenizer_json;
  bool has_generation = false;
  TGeneration generation;
  std::vector<TWeightFile> weight_files;
};

// The plan file: the FlatBuffer (executable checksums computed) and the
// checksum trailer.
std::string Serialize(const TPlan& p);
// Recomputes the checksum trailer of plan bytes changed after Serialize
// (to exercise the checks behind it).
std::string Reseal(std::string bytes);
// Fills in, for every kernel without them, its binding access, in-place
// pairs and grids from the launches that run it, the way the compiler
// records them: a binding is state when its buffer is a state buffer (a
// written one in place of an earlier binding of the same buffer), written
// when it is one of the last `num_written`, read otherwise; one grid per
// distinct (programs, scalars), needing the bytes of the buffers bound.
void CompleteKernels(TPlan& p);
// CompleteKernels from scratch, for tests that changed the launches of a
// plan and want kernels generated for the changed launches.
void RederiveKernels(TPlan& p);
std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& bytes);

// The reference plan: y = x + wp + 2 * we for x: f32 [1, 8], where wp is a
// packed weight (wp[i] = i) and we an external one (we[i] = 10 * i) stored at
// offset 16 of "<dir>/weights.bin", which this writes. Two launches:
//   0: add_f32(x, wp) -> t         1: add_scaled_f32(t, we; s=2) -> y
TPlan MakeAddPlan(const std::string& dir);
// A plan with state and two functions, on f32 [4] tensors:
//   state s: f32 [4] at arena offset 0 (state_size 256)
//   forward(x) -> y:  s = x;      y = x + s
//   decode(x) -> y:   y = x + s;  s = y
// so decode accumulates its inputs into the state.
TPlan MakeStatePlan();
// A toy "language model" with the generation calling convention (see
// runtime.h), batch B, sequence S, vocabulary V: logits[b, s, v] is 1 when
// v == (tokens[b, s] + 1) % V, else 0; both functions store the last token
// into an int32 [B] state. Greedy generation from t yields t+1, t+2, ...
// Inputs carry the value ranges a compiled model would: token ids [0, V),
// positions [0, S) ("the KV cache holds S positions").
// With `last_position_logits`, both functions return logits float32 [B, V]
// (forward: of the last position only), the form of plans that return the
// last position's logits.
TPlan MakeToyLmPlan(int64_t B, int64_t S, int64_t V, bool last_position_logits = false);
// A fresh temporary directory.
std::string MakeTempDir();

}  // namespace kiln::test
