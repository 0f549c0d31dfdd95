// Session: weights, inputs, CPU execution, CUDA availability.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include <cstdio>
#include <cstring>

#include "kiln/runtime.h"
#include "test_plan_builder.h"
#include "weight_hash.h"

namespace kiln::test {
namespace {

using ::testing::HasSubstr;

class SessionTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void SetUp() override { dir_ = MakeTempDir(); plan_ = MakeAddPlan(dir_); }
  std::shared_ptr<const Plan> OpenPlan() {
    std::string path = dir_ + "/model.kplan";
    WriteFile(path, Serialize(plan_));
    auto p = Plan::Open(path);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *p : nullptr;
  }
  // The plan of one launch of reverse_f32 (test_kernels.c: two phases) over
  // an f32 input x of `shape`, its output y, the intermediate tmp between.
  void UseReversePlan(std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const uint64_t bytes = 4 * n, stride = (bytes + 255) / 256 * 256;
    plan_.buffers = {{plan::BufferKind::input, bytes, 0, 0},
                     {plan::BufferKind::intermediate, bytes, stride, 0},
                     {plan::BufferKind::output, bytes, 2 * stride, 0}};
    plan_.arena_size = 3 * stride;
    plan_.launches = {{0, {0, 1, 2}, {n}, static_cast<uint64_t>(n), ""}};
    plan_.inputs = {{"x", plan::DType::f32, shape, 0}};
    plan_.outputs = {{"y", plan::DType::f32, shape, 2}};
    plan_.weights.clear();
    plan_.weight_data.clear();
    plan_.kernels = {{"reverse_f32", 3, 1}};
    plan_.kernels[0].num_written = 2;
    plan_.executables[0].entries = {{"reverse_f32", 0, 1, 2}};
  }
  // Runs x: f32 [1, 8] of 100, then x given as [1, part] of 1 (a token-major
  // plan: the first `part` positions); y after the second run.
  static absl::StatusOr<HostTensor> RunFullThenPart(Session& s, int part) {
    HostTensor full = MakeTensor(DType::kF32, {1, 8});
    for (int i = 0; i < 8; ++i) full.data<float>()[i] = 100.0f;
    if (auto st = s.SetInput("x", full); !st.ok()) return st;
    if (auto st = s.Run(); !st.ok()) return st;
    HostTensor x = MakeTensor(DType::kF32, {1, part});
    for (int i = 0; i < part; ++i) x.data<float>()[i] = 1.0f;
    if (auto st = s.SetInput("x", x); !st.ok()) return st;
    if (auto st = s.Run(); !st.ok()) return st;
    return s.GetOutput("y");
  }
  HostTensor Input() {
    HostTensor x = MakeTensor(DType::kF32, {1, 8});
    for (int i = 0; i < 8; ++i) x.data<float>()[i] = 0.5f * i;
    return x;
  }
  std::string dir_;
  TPlan plan_;
};

void ExpectCorrect(Session& s, const HostTensor& x) {
  ASSERT_TRUE(s.SetInput("x", x).ok());
  auto st = s.Run();
  ASSERT_TRUE(st.ok()) << st;
  auto y = s.GetOutput("y");
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->dtype, DType::kF32);
  EXPECT_EQ(y->shape, (std::vector<int64_t>{1, 8}));
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(y->data<float>()[i], 0.5f * i + i + 2.0f * 10 * i) << i;
}

TEST_F(SessionTest, RunsOnCpuWithOneAndTwoThreads) {
  auto plan = OpenPlan();
  ASSERT_TRUE(plan);
  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE(threads);
    SessionOptions opts;
    opts.num_threads = threads;
    opts.profile_launches = true;
    auto s = Session::Create(plan, Device::kCpu, opts);
    ASSERT_TRUE(s.ok()) << s.status();
    ExpectCorrect(**s, Input());
    ExpectCorrect(**s, Input());  // a second run reuses the arena
    EXPECT_EQ((*s)->stats().runs, 2u);
    EXPECT_EQ((*s)->stats().launch_ms.size(), 2u);
    EXPECT_GE((*s)->stats().total_ms, 0.0);
  }
}

TEST_F(SessionTest, PhasesRunInOrderOverEveryRange) {
  // reverse_f32 in two phases: tmp = 2 x, then y[i] = tmp[n - 1 - i], which
  // other ranges of phase 0 wrote; 1000 programs over 1 to 4 threads.
  const int n = 1000;
  UseReversePlan({n});
  RederiveKernels(plan_);
  auto plan = OpenPlan();
  ASSERT_TRUE(plan);
  for (int threads : {1, 2, 3, 4}) {
    SCOPED_TRACE(threads);
    SessionOptions opts;
    opts.num_threads = threads;
    auto s = Session::Create(plan, Device::kCpu, opts);
    ASSERT_TRUE(s.ok()) << s.status();
    HostTensor x = MakeTensor(DType::kF32, {n});
    for (int i = 0; i < n; ++i) x.data<float>()[i] = static_cast<float>(i);
    ASSERT_TRUE((*s)->SetInput("x", x).ok());
    ASSERT_TRUE((*s)->Run().ok());
    auto y = (*s)->GetOutput("y");
    ASSERT_TRUE(y.ok());
    for (int i = 0; i < n; ++i) ASSERT_EQ(y->data<float>()[i], 2.0f * (n - 1 - i)) << i;
  }
}

// Phases of a token-major launch: each phase over the request's tokens only,
// after every range of the one before. reverse_f32 over 5 of 8 positions:
// tmp[0..5) = 2 x, then y[i] = tmp[7 - i] for i < 5, of which tmp[5..8) are
// the previous run's (x = 100 there).
TEST_F(SessionTest, PhasesFollowTheTokenWindow) {
  UseReversePlan({1, 8});
  plan_.launches[0].tokens = {1, 1, 8, -1, 0, -1, -1};
  plan_.inputs[0].dim_symbols = {-1, 0};
  RederiveKernels(plan_);
  auto plan = OpenPlan();
  ASSERT_TRUE(plan);
  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE(threads);
    SessionOptions opts;
    opts.num_threads = threads;
    auto s = Session::Create(plan, Device::kCpu, opts);
    ASSERT_TRUE(s.ok()) << s.status();
    auto y = RunFullThenPart(**s, 5);
    ASSERT_TRUE(y.ok()) << y.status();
    const float want[8] = {200, 200, 200, 2, 2, 200, 200, 200};
    for (int i = 0; i < 8; ++i) EXPECT_EQ(y->data<float>()[i], want[i]) << i;
  }
}

TEST_F(SessionTest, MissingPhaseEntryPointIsNamed) {
  plan_.executables[0].entries[0].phases = 2;
  auto plan = OpenPlan();
  ASSERT_TRUE(plan);
  auto s = Session::Create(plan, Device::kCpu, SessionOptions{});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("entry point 'add_f32.phase1' for kernel 0"));
}

TEST_F(SessionTest, LargeGridSplitsAcrossThreads) {
  // 1000 programs over 4 threads; kernels index elements by program.
  const int n = 1000;
  plan_.buffers = {{plan::BufferKind::input, 4 * n, 0, 0},
                   {plan::BufferKind::output, 4 * n, 4096, 0},
                   {plan::BufferKind::weight, 4 * n, 0, 0}};
  plan_.arena_size = 8192;
  plan_.launches = {{0, {0, 2, 1}, {}, static_cast<uint64_t>(n), ""}};
  plan_.inputs = {{"x", plan::DType::f32, {n}, 0}};
  plan_.outputs = {{"y", plan::DType::f32, {n}, 1}};
  plan_.weight_data.assign(4 * n, '\0');
  for (int i = 0; i < n; ++i) {
    float v = static_cast<float>(i);
    std::memcpy(&plan_.weight_data[4 * i], &v, 4);
  }
  plan_.weights = {{"w", plan::DType::f32, {n}, 4 * n, true, 0, "", 0, 0, 0, 0}};
  plan_.kernels.resize(1);
  plan_.executables[0].entries.resize(1);
  RederiveKernels(plan_);
  auto plan = OpenPlan();
  ASSERT_TRUE(plan);
  SessionOptions opts;
  opts.num_threads = 4;
  auto s = Session::Create(plan, Device::kCpu, opts);
  ASSERT_TRUE(s.ok()) << s.status();
  HostTensor x = MakeTensor(DType::kF32, {n});
  for (int i = 0; i < n; ++i) x.data<float>()[i] = 1.0f;
  ASSERT_TRUE((*s)->SetInput("x", x).ok());
  ASSERT_TRUE((*s)->Run().ok());
  auto y = (*s)->GetOutput("y");
  ASSERT_TRUE(y.ok());
  for (int i = 0; i < n; ++i) ASSERT_EQ(y->data<float>()[i], 1.0f + i) << i;
}

// A token-major launch runs only the tokens a request gives: the first
// launch (t = x + wp) over 3 of 8 positions leaves t[3..8) as the previous
// run wrote it, which the second launch (not token-major) reads.
TEST_F(SessionTest, TokenGridRunsOnlyTheGivenTokens) {
  plan_.inputs[0].dim_symbols = {-1, 0};
  plan_.launches[0].tokens = {1, 1, 8, -1, 0, -1, -1};
  auto plan = OpenPlan();
  ASSERT_TRUE(plan);
  auto s = Session::Create(plan, Device::kCpu);
  ASSERT_TRUE(s.ok()) << s.status();
  auto y = RunFullThenPart(**s, 3);
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_EQ(y->shape, (std::vector<int64_t>{1, 8}));
  // y = x + wp + 2 we, wp[i] = i, we[i] = 10 i.
  for (int i = 0; i < 8; ++i) {
    float x = i < 3 ? 1.0f : 100.0f;  // positions 3.. not recomputed
    EXPECT_EQ(y->data<float>()[i], x + 21.0f * i) << i;
  }
}

TEST_F(SessionTest, MissingEntrySymbol) {
  plan_.kernels[1].name = "no_such_kernel";
  plan_.executables[0].entries[1].name = "no_such_kernel";
  auto s = Session::Create(OpenPlan(), Device::kCpu);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(),
              HasSubstr("entry point 'no_such_kernel' for kernel 1 ('no_such_kernel') not found"));
}

TEST_F(SessionTest, BinaryIsNotASharedObject) {
  plan_.executables[0].binary = "this is not an ELF file";
  auto s = Session::Create(OpenPlan(), Device::kCpu);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("cannot load the CPU executable"));
}

TEST_F(SessionTest, ExternalWeightChanged) {
  auto plan = OpenPlan();
  std::string bytes = ReadFile(dir_ + "/weights.bin");
  bytes[20] ^= 0x1;  // same size, different contents
  WriteFile(dir_ + "/weights.bin", bytes);
  auto s = Session::Create(plan, Device::kCpu);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(),
              HasSubstr("weight 'we' in weights.bin: file changed since compile (hash mismatch: XXH64 "));
}

// Records the identity of weights.bin (56 bytes: a 16-byte header, `we` at
// [16, 48), 8 trailing bytes) sampled as `count` chunks of `chunk` bytes.
void RecordIdentity(TPlan& p, const std::string& dir, uint64_t chunk, uint32_t count) {
  std::string file = ReadFile(dir + "/weights.bin");
  const auto* bytes = reinterpret_cast<const uint8_t*>(file.data());
  p.weight_files = {{"weights.bin", file.size(), chunk, count, plan::SampledXxh64(bytes, file.size(), chunk, count)}};
}

void FlipByte(const std::string& path, size_t at) {
  std::string bytes = ReadFile(path);
  bytes[at] ^= 0x1;
  WriteFile(path, bytes);
}

TEST_F(SessionTest, IdentityOfASmallFileIsTheWholeFile) {
  // The compiler's sampling (16 x 64 KiB) covers all of a small file.
  RecordIdentity(plan_, dir_, plan::kSampleBytes, plan::kSampleCount);
  auto plan = OpenPlan();
  FlipByte(dir_ + "/weights.bin", 20);
  auto s = Session::Create(plan, Device::kCpu);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(),
              HasSubstr("weight 'we' in weights.bin: file changed since compile (its sampled contents differ"));
}

TEST_F(SessionTest, IdentityChecksSampledChunksAndTheFullCheckEveryByte) {
  // Two chunks of 8 bytes: [0, 8) and [48, 56); byte 20 lies between them.
  RecordIdentity(plan_, dir_, 8, 2);
  FlipByte(dir_ + "/weights.bin", 20);
  {
    auto plan = OpenPlan();
    ASSERT_TRUE(Session::Create(plan, Device::kCpu).ok()) << "the default check samples; byte 20 is not sampled";
    SessionOptions full;
    full.weight_check = WeightCheck::kFull;
    auto s = Session::Create(plan, Device::kCpu, full);
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(s.status().message(), HasSubstr("weight 'we' in weights.bin: file changed since compile (hash mismatch"));
    EXPECT_THAT(s.status().message(), HasSubstr(dir_ + "/weights.bin"));
    std::vector<std::pair<uint64_t, uint64_t>> reports;
    WeightVerifyOptions verify;
    verify.num_threads = 2;
    verify.progress = [&](uint64_t done, uint64_t total) { reports.push_back({done, total}); };
    absl::Status v = plan->VerifyWeights(verify);
    EXPECT_THAT(v.message(), HasSubstr("weight 'we' in weights.bin"));
    ASSERT_FALSE(reports.empty());
    EXPECT_EQ(reports.back(), std::make_pair(uint64_t{32}, uint64_t{32}));  // the external weight's bytes
  }
  FlipByte(dir_ + "/weights.bin", 20);  // restored: the full check passes
  {
    SessionOptions full;
    full.weight_check = WeightCheck::kFull;
    auto s = Session::Create(OpenPlan(), Device::kCpu, full);
    ASSERT_TRUE(s.ok()) << s.status();
    ExpectCorrect(**s, Input());
  }
  for (size_t at : {size_t{0}, size_t{7}, size_t{48}, size_t{55}}) {  // sampled bytes: caught by default
    SCOPED_TRACE(at);
    auto plan = OpenPlan();
    FlipByte(dir_ + "/weights.bin", at);
    auto s = Session::Create(plan, Device::kCpu);
    FlipByte(dir_ + "/weights.bin", at);
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(s.status().message(), HasSubstr("its sampled contents differ"));
    EXPECT_THAT(s.status().message(), HasSubstr("the file was replaced or rewritten"));
  }
}

TEST_F(SessionTest, IdentityOfAnotherSizeIsRefused) {
  RecordIdentity(plan_, dir_, 8, 2);
  plan_.weight_files[0].size += 1;
  WriteFile(dir_ + "/model.kplan", Serialize(plan_));
  auto p = Plan::Open(dir_ + "/model.kplan");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("weight 1 ('we'): its file 'weights.bin' has 56 bytes, but weight file 0 records 57"));
  RecordIdentity(plan_, dir_, 8, 0);
  WriteFile(dir_ + "/model.kplan", Serialize(plan_));
  p = Plan::Open(dir_ + "/model.kplan");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("weight file 0 ('weights.bin'): sampling 0 chunks of 8 bytes"));
}

TEST_F(SessionTest, ExternalWeightSizeChanged) {
  auto plan = OpenPlan();
  WriteFile(dir_ + "/weights.bin", ReadFile(dir_ + "/weights.bin") + "more");
  auto s = Session::Create(plan, Device::kCpu);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("file changed since compile (size 60 bytes, expected 56)"));
}

TEST_F(SessionTest, ExternalWeightMissing) {
  auto plan = OpenPlan();
  std::remove((dir_ + "/weights.bin").c_str());
  auto s = Session::Create(plan, Device::kCpu);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("weight 'we' in weights.bin"));
  EXPECT_THAT(s.status().message(), HasSubstr(dir_ + "/weights.bin"));
}

TEST_F(SessionTest, WeightResolutionIsCached) {
  auto plan = OpenPlan();
  ASSERT_TRUE(Session::Create(plan, Device::kCpu).ok());
  // Hashes were checked once; a later session reuses the mapping.
  std::remove((dir_ + "/weights.bin").c_str());
  auto s = Session::Create(plan, Device::kCpu);
  ASSERT_TRUE(s.ok()) << s.status();
  ExpectCorrect(**s, Input());
}

TEST_F(SessionTest, InputChecks) {
  auto s = Session::Create(OpenPlan(), Device::kCpu);
  ASSERT_TRUE(s.ok()) << s.status();
  HostTensor bad_shape = MakeTensor(DType::kF32, {2, 4});
  EXPECT_THAT((*s)->SetInput("x", bad_shape).message(),
              HasSubstr("input 'x': expected float32 [1, 8], got float32 [2, 4]"));
  HostTensor bad_dtype = MakeTensor(DType::kI32, {1, 8});
  EXPECT_THAT((*s)->SetInput("x", bad_dtype).message(),
              HasSubstr("input 'x': expected float32 [1, 8], got int32 [1, 8]"));
  auto unknown = (*s)->SetInput("tokens", Input());
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.message(), HasSubstr("unknown input 'tokens'; the plan's inputs are: 'x'"));
  HostTensor short_bytes = Input();
  short_bytes.bytes.resize(4);
  EXPECT_THAT((*s)->SetInput("x", short_bytes).message(), HasSubstr("holds 4 bytes, expected 32"));
  EXPECT_THAT((*s)->GetOutput("z").status().message(), HasSubstr("unknown output 'z'"));
}

TEST_F(SessionTest, NoExecutableForTarget) {
  plan_.executables[0].target = plan::TargetKind::cuda;
  plan_.executables[0].arch = "sm_90a";
  plan_.executables[0].ptx = "// ptx";
  auto s = Session::Create(OpenPlan(), Device::kCpu);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("plan has no executable for target cpu; compiled targets: cuda"));
}

TEST_F(SessionTest, CudaWithoutCudaExecutable) {
  auto s = Session::Create(OpenPlan(), Device::kCuda);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("plan has no executable for target cuda; compiled targets: cpu"));
}

// Hand-written PTX kernels with the Kiln CUDA ABI: (a, w, out, programs),
// out[i] = a[i] + w[i]; the same code as add_f32 and as add_state_f32 (for
// launches that update a state buffer in place).
constexpr char kPtxHeader[] = R"(
.version 7.0
.target sm_52
.address_size 64
)";
constexpr char kAddPtxBody[] = R"(
.visible .entry NAME(.param .u64 pa, .param .u64 pw, .param .u64 po, .param .u64 pn)
{
  .reg .pred %p<2>;
  .reg .b32 %r<4>;
  .reg .f32 %f<4>;
  .reg .b64 %rd<16>;
  ld.param.u64 %rd1, [pa];
  ld.param.u64 %rd2, [pw];
  ld.param.u64 %rd3, [po];
  ld.param.u64 %rd4, [pn];
  mov.u32 %r1, %ctaid.x;
  mov.u32 %r2, %ntid.x;
  mov.u32 %r3, %tid.x;
  mul.wide.u32 %rd5, %r1, %r2;
  cvt.u64.u32 %rd6, %r3;
  add.s64 %rd7, %rd5, %rd6;
  setp.ge.s64 %p1, %rd7, %rd4;
  @%p1 bra DONE;
  shl.b64 %rd8, %rd7, 2;
  cvta.to.global.u64 %rd9, %rd1;
  cvta.to.global.u64 %rd10, %rd2;
  cvta.to.global.u64 %rd11, %rd3;
  add.s64 %rd12, %rd9, %rd8;
  add.s64 %rd13, %rd10, %rd8;
  add.s64 %rd14, %rd11, %rd8;
  ld.global.f32 %f1, [%rd12];
  ld.global.f32 %f2, [%rd13];
  add.f32 %f3, %f1, %f2;
  st.global.f32 [%rd14], %f3;
DONE:
  ret;
}
)";
std::string AddPtx(const std::vector<std::string>& names) {
  std::string ptx = kPtxHeader;
  for (const std::string& name : names) {
    std::string body = kAddPtxBody;
    ptx += body.replace(body.find("NAME"), 4, name);
  }
  return ptx;
}
const std::string kAddPtx = AddPtx({"add_f32"});

// y = x + wp (one launch), CUDA only.
TEST_F(SessionTest, CudaRunsOrReportsUnavailable) {
  plan_.executables[0] = TExecutable{plan::TargetKind::cuda, "sm_52", "", kAddPtx, {{"add_f32", 0, 64}}};
  plan_.kernels = {{"add_f32", 3, 0}};
  plan_.launches = {{0, {0, 3, 2}, {}, 8, ""}};
  plan_.buffers.resize(4);
  plan_.weights.resize(1);
  CompleteKernels(plan_);
  auto s = Session::Create(OpenPlan(), Device::kCuda);
  if (!s.ok()) {
    std::string msg(s.status().message());
#if defined(KILN_ENABLE_CUDA)
    EXPECT_TRUE(msg.find("CUDA driver not available") != std::string::npos ||
                msg.find("no CUDA device") != std::string::npos)
        << msg;
#else
    EXPECT_THAT(msg, HasSubstr("built without CUDA support"));
#endif
    GTEST_SKIP() << "no usable CUDA: " << msg;
  }
  HostTensor x = Input();
  ASSERT_TRUE((*s)->SetInput("x", x).ok());
  auto st = (*s)->Run();
  ASSERT_TRUE(st.ok()) << st;
  auto y = (*s)->GetOutput("y");
  ASSERT_TRUE(y.ok()) << y.status();
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(y->data<float>()[i], 0.5f * i + i) << i;
}

// State and functions on CUDA: forward s += x (in place); decode y = x + s.
TEST_F(SessionTest, CudaStateAndFunctionsOrUnavailable) {
  plan_.executables[0] = TExecutable{plan::TargetKind::cuda, "sm_52", "", AddPtx({"add_f32", "add_state_f32"}),
                                     {{"add_f32", 0, 64}, {"add_state_f32", 1, 64}}};
  plan_.kernels = {{"add_f32", 3, 0}, {"add_state_f32", 3, 0}};
  plan_.weights.clear();
  plan_.weight_data.clear();
  // Buffers: 0 s (state), 1 x (input), 2 y (output).
  plan_.buffers = {{plan::BufferKind::state, 32, 0, 0},
                   {plan::BufferKind::input, 32, 256, 0},
                   {plan::BufferKind::output, 32, 512, 0}};
  plan_.arena_size = 768;
  plan_.state_size = 256;
  plan_.launches = {{1, {1, 0, 0}, {}, 8, ""}};
  plan_.inputs = {{"x", plan::DType::f32, {1, 8}, 1}};
  plan_.outputs = {};
  plan_.functions = {{"decode", {{0, {1, 0, 2}, {}, 8, ""}}, {{"x", plan::DType::f32, {1, 8}, 1}},
                      {{"y", plan::DType::f32, {1, 8}, 2}}}};
  CompleteKernels(plan_);
  auto plan = OpenPlan();
  ASSERT_TRUE(plan);
  auto s = Session::Create(plan, Device::kCuda);
  if (!s.ok()) GTEST_SKIP() << "no usable CUDA: " << s.status();
  HostTensor x = Input();
  auto decode = [&](float scale) {
    auto y = (*s)->Call("decode", {{"x", x}});
    ASSERT_TRUE(y.ok()) << y.status();
    for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ((*y)[0].data<float>()[i], scale * 0.5f * i) << i;
  };
  decode(1);  // a new session's state is zero
  ASSERT_TRUE((*s)->Call("forward", {{"x", x}}).ok());
  decode(2);
  ASSERT_TRUE((*s)->Call("forward", {{"x", x}}).ok());
  decode(3);
  ASSERT_TRUE((*s)->ResetState().ok());
  decode(1);
}

TEST_F(SessionTest, CudaBadPtxIsAnError) {
  plan_.executables[0] = TExecutable{plan::TargetKind::cuda, "sm_52", "", "garbage ptx", {{"add_f32", 0, 64}}};
  plan_.kernels = {{"add_f32", 3, 0}};
  plan_.launches = {{0, {0, 3, 2}, {}, 8, ""}};
  plan_.buffers.resize(4);
  plan_.weights.resize(1);
  CompleteKernels(plan_);
  auto s = Session::Create(OpenPlan(), Device::kCuda);
  ASSERT_FALSE(s.ok());
  std::string msg(s.status().message());
  EXPECT_TRUE(msg.find("cuModuleLoadData") != std::string::npos ||
              msg.find("CUDA driver not available") != std::string::npos ||
              msg.find("no CUDA device") != std::string::npos ||
              msg.find("built without CUDA support") != std::string::npos)
      << msg;
}

}  // namespace
}  // namespace kiln::test
