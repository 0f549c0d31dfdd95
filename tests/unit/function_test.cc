// Functions (entry points beyond forward), state buffers and weight tables:
// verification and execution on the CPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "kiln/runtime.h"
#include "test_plan_builder.h"

namespace kiln::test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class FunctionTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void SetUp() override { dir_ = MakeTempDir(); plan_ = MakeStatePlan(); }
  absl::StatusOr<std::shared_ptr<const Plan>> Open() {
    std::string path = dir_ + "/model.kplan";
    WriteFile(path, Serialize(plan_));
    return Plan::Open(path);
  }
  std::string ErrorOf(const absl::StatusOr<std::shared_ptr<const Plan>>& r) {
    EXPECT_FALSE(r.ok()) << "expected an error";
    return r.ok() ? "" : std::string(r.status().message());
  }
  std::unique_ptr<Session> NewSession() {
    auto plan = Open();
    EXPECT_TRUE(plan.ok()) << plan.status();
    if (!plan.ok()) return nullptr;
    auto s = Session::Create(*plan, Device::kCpu);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  static HostTensor Vec(std::vector<float> v) {
    HostTensor t = MakeTensor(DType::kF32, {static_cast<int64_t>(v.size())});
    std::memcpy(t.bytes.data(), v.data(), 4 * v.size());
    return t;
  }
  static std::vector<float> Values(const HostTensor& t) {
    return std::vector<float>(t.data<float>(), t.data<float>() + t.num_elements());
  }
  // decode(x) through Call; returns y.
  static std::vector<float> Decode(Session& s, std::vector<float> x) {
    auto out = s.Call("decode", {{"x", Vec(std::move(x))}});
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {};
    EXPECT_EQ(out->size(), 1u);
    return Values((*out)[0]);
  }
  std::string dir_;
  TPlan plan_;
};

TEST_F(FunctionTest, FunctionNamesAndLookup) {
  auto plan = Open();
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT((*plan)->FunctionNames(), ElementsAre("forward", "decode"));
  auto decode = (*plan)->FindFunction("decode");
  ASSERT_TRUE(decode.ok());
  EXPECT_EQ((*decode)->launches.size(), 2u);
  EXPECT_EQ((*decode)->inputs.size(), 1u);
  auto missing = (*plan)->FindFunction("decod");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("plan has no function 'decod'; functions: forward, decode"));
  // A plan without Plan.functions has just forward.
  auto add = Plan::OpenFromMemory(Serialize(MakeAddPlan(dir_)), dir_);
  ASSERT_TRUE(add.ok()) << add.status();
  EXPECT_THAT((*add)->FunctionNames(), ElementsAre("forward"));
}

TEST_F(FunctionTest, StatePersistsAcrossCallsAndResets) {
  auto s = NewSession();
  ASSERT_TRUE(s);
  // forward: s = x; y = x + s.
  auto y = s->Call("forward", {{"x", Vec({1, 2, 3, 4})}});
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(Values((*y)[0]), ElementsAre(2, 4, 6, 8));
  // decode: y = x + s; s = y (accumulates).
  EXPECT_THAT(Decode(*s, {10, 10, 10, 10}), ElementsAre(11, 12, 13, 14));
  EXPECT_THAT(Decode(*s, {100, 0, 0, 0}), ElementsAre(111, 12, 13, 14));
  EXPECT_EQ(s->stats().function, "decode");
  EXPECT_EQ(s->stats().runs, 3u);
  // ResetState zeroes the state.
  ASSERT_TRUE(s->ResetState().ok());
  EXPECT_THAT(Decode(*s, {5, 6, 7, 8}), ElementsAre(5, 6, 7, 8));
  EXPECT_THAT(Decode(*s, {1, 1, 1, 1}), ElementsAre(6, 7, 8, 9));
  // A new session starts zeroed.
  auto fresh = NewSession();
  ASSERT_TRUE(fresh);
  EXPECT_THAT(Decode(*fresh, {1, 2, 3, 4}), ElementsAre(1, 2, 3, 4));
  // The single-name API is forward.
  ASSERT_TRUE(fresh->SetInput("x", Vec({1, 1, 1, 1})).ok());
  ASSERT_TRUE(fresh->Run().ok());
  auto fy = fresh->GetOutput("y");
  ASSERT_TRUE(fy.ok());
  EXPECT_THAT(Values(*fy), ElementsAre(2, 2, 2, 2));
  EXPECT_EQ(fresh->stats().function, "forward");
  EXPECT_THAT(Decode(*fresh, {0, 0, 0, 1}), ElementsAre(1, 1, 1, 2));
}

TEST_F(FunctionTest, SessionErrorsNameTheFunction) {
  auto s = NewSession();
  ASSERT_TRUE(s);
  EXPECT_THAT(s->SetInput("decode", "x", Vec({1, 2})).message(),
              HasSubstr("function 'decode': input 'x': expected float32 [4], got float32 [2]"));
  absl::Status unknown = s->SetInput("decode", "position", Vec({1}));
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.message(),
              HasSubstr("function 'decode': unknown input 'position'; the function's inputs are: 'x'"));
  EXPECT_THAT(s->Run("decod").message(), HasSubstr("plan has no function 'decod'; functions: forward, decode"));
  EXPECT_THAT(s->GetOutput("decode", "z").status().message(), HasSubstr("function 'decode': unknown output 'z'"));
  EXPECT_THAT(s->Call("decode", {}).status().message(), HasSubstr("function 'decode': missing input 'x'"));
  EXPECT_THAT(s->Call("decode", {{"x", Vec({1, 2, 3, 4})}, {"x", Vec({1, 2, 3, 4})}}).status().message(),
              HasSubstr("function 'decode': input 'x' given twice"));
  // Forward errors keep their unprefixed form.
  EXPECT_THAT(s->SetInput("x", Vec({1})).message(), HasSubstr("input 'x': expected float32 [4], got float32 [1]"));
}

TEST_F(FunctionTest, StateBufferOutsideStateRegion) {
  plan_.buffers[0].size_bytes = 300;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("buffer 0 (state): [0, 300) lies outside the state region [0, 256)"));
  plan_ = MakeStatePlan();
  plan_.buffers[0].offset = 256;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("buffer 0 (state): [256, 272) lies outside the state region [0, 256)"));
}

TEST_F(FunctionTest, NonStateBufferInsideStateRegion) {
  plan_.buffers[1].offset = 0;
  EXPECT_THAT(ErrorOf(Open()),
              HasSubstr("buffer 1 (input): offset 0 lies inside the state region [0, 256), which only state "
                        "buffers may use"));
  plan_ = MakeStatePlan();
  plan_.state_size = 512;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("buffer 1 (input): offset 256 lies inside the state region [0, 512)"));
  plan_ = MakeStatePlan();
  plan_.state_size = 1024;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("state_size 1024 exceeds arena_size 768"));
}

TEST_F(FunctionTest, DuplicateAndReservedFunctionNames) {
  plan_.functions.push_back(plan_.functions[0]);
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 1 ('decode'): duplicate name (also function 0)"));
  plan_ = MakeStatePlan();
  plan_.functions[0].name = "forward";
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 0 is named 'forward', which is the top-level entry point"));
  plan_ = MakeStatePlan();
  plan_.functions[0].name = "";
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 0: empty name"));
}

TEST_F(FunctionTest, FunctionLaunchesAndSpecsAreVerified) {
  plan_.functions[0].launches[1].bindings[0] = 9;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 'decode': launch 1 (dec:2): binding 0 refers to buffer 9, "
                                         "but the plan has 3 buffers"));
  plan_ = MakeStatePlan();
  plan_.functions[0].launches[0].kernel = 7;
  EXPECT_THAT(ErrorOf(Open()),
              HasSubstr("function 'decode': launch 0 (dec:1): refers to kernel 7, but the plan has 2 kernels"));
  plan_ = MakeStatePlan();
  plan_.functions[0].launches[0].scalars = {3};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 'decode': launch 0 (dec:1): kernel 'add_f32' takes 0 scalars, "
                                         "but the launch passes 1"));
  plan_ = MakeStatePlan();
  plan_.functions[0].launches[1].bindings.pop_back();
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 'decode': launch 1 (dec:2): kernel 'copy_f32' takes 2 buffers"));
  plan_ = MakeStatePlan();
  plan_.functions[0].inputs[0].shape = {5};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 'decode': input 0 ('x'): float32 [5] is 20 bytes, but buffer 1 "
                                         "is 16 bytes"));
  plan_ = MakeStatePlan();
  plan_.functions[0].outputs[0].buffer = 0;
  EXPECT_THAT(ErrorOf(Open()),
              HasSubstr("function 'decode': output 0 ('y'): buffer 0 has kind state, expected output"));
  plan_ = MakeStatePlan();
  plan_.functions[0].inputs.push_back(plan_.functions[0].inputs[0]);
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 'decode': input 1 ('x'): duplicate name (also input 0)"));
}

// A kernel that reads weights through a weight_table buffer.
TEST_F(FunctionTest, WeightTable) {
  TPlan p;
  TExecutable cpu;
  cpu.binary = ReadFile(KILN_TEST_KERNELS_SO);
  cpu.entries = {{"gather_table_f32", 0, 1}};
  p.executables.push_back(cpu);
  p.kernels = {{"gather_table_f32", 2, 1}};
  // Weights: w0 = [0, 1, 2, 3], w1 = [10, 11, 12, 13], packed at 0 and 64.
  p.weight_data.assign(128, '\0');
  for (int i = 0; i < 4; ++i) {
    float a = static_cast<float>(i), b = 10.0f + i;
    std::memcpy(&p.weight_data[4 * i], &a, 4);
    std::memcpy(&p.weight_data[64 + 4 * i], &b, 4);
  }
  p.weights = {{"w0", plan::DType::f32, {4}, 16, true, 0, "", 0, 0, 0, 0},
               {"w1", plan::DType::f32, {4}, 16, true, 64, "", 0, 0, 0, 0}};
  // Buffers: 0 the table [w1, w0], 1 y (output).
  p.buffers = {{plan::BufferKind::weight_table, 32, 0, 0, {1, 0}}, {plan::BufferKind::output, 32, 0, 0}};
  p.arena_size = 256;
  p.launches = {{0, {0, 1}, {4}, 8, "table"}};
  p.outputs = {{"y", plan::DType::f32, {8}, 1}};
  CompleteKernels(p);
  ASSERT_EQ(p.kernels[0].grids[0].table_entries, (std::vector<uint32_t>{2, 0}));
  auto plan = Plan::OpenFromMemory(Serialize(p), dir_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (int threads : {1, 3}) {
    SessionOptions opts;
    opts.num_threads = threads;
    auto s = Session::Create(*plan, Device::kCpu, opts);
    ASSERT_TRUE(s.ok()) << s.status();
    auto y = (*s)->Call("forward", {});
    ASSERT_TRUE(y.ok()) << y.status();
    EXPECT_THAT(Values((*y)[0]), ElementsAre(10, 11, 12, 13, 0, 1, 2, 3));
  }
  // Verification: sizes and weight indices.
  TPlan good = p;
  p.buffers[0].size_bytes = 40;
  auto bad = Plan::OpenFromMemory(Serialize(p), dir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("buffer 0: size_bytes 40 != the sum of its weights' sizes 32"));
  p.buffers[0].size_bytes = 32;
  p.buffers[0].weight_list = {1, 2};
  bad = Plan::OpenFromMemory(Serialize(p), dir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              HasSubstr("buffer 0: weight_list[1] refers to weight 2, but the plan has 2 weights"));
  // What the kernel reads: a table of two 16-byte entries.
  auto error = [&](const TPlan& t) {
    auto r = Plan::OpenFromMemory(Serialize(t), dir_);
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : std::string(r.status().message());
  };
  p = good;
  p.weights[1].shape = {3};  // w1 12 bytes, w0 20: the same 32 in all
  p.weights[1].size_bytes = 12;
  p.weights[0].shape = {5};
  p.weights[0].size_bytes = 20;
  EXPECT_THAT(error(p), HasSubstr("launch 0 (table): binding 0 is buffer 0 (weight_table, 32 bytes): its entry 0 "
                                  "(weight 1 'w1') is 12 bytes, but kernel 'gather_table_f32' at 8 programs "
                                  "reads 16 bytes of each entry"));
  p = good;
  p.buffers[0].weight_list = {1};
  p.buffers[0].size_bytes = 16;
  p.kernels[0].grids[0].binding_bytes[0] = 16;
  EXPECT_THAT(error(p), HasSubstr("binding 0 is buffer 0 (weight_table, 16 bytes) listing 1 weights, but kernel "
                                  "'gather_table_f32' at 8 programs reads a table of 2"));
  p = good;
  p.kernels[0].grids[0].table_entries.clear();
  EXPECT_THAT(error(p), HasSubstr("binding 0 is buffer 0 (weight_table, 32 bytes), but kernel 'gather_table_f32' "
                                  "at 8 programs reads plain memory there"));
  // A plain weight where the kernel reads a table of pointers.
  p = good;
  p.buffers.push_back({plan::BufferKind::weight, 16, 0, 0});
  p.launches[0].bindings[0] = 2;
  p.kernels[0].grids[0].binding_bytes[0] = 16;
  EXPECT_THAT(error(p), HasSubstr("binding 0 is buffer 2 (weight, 16 bytes), but kernel 'gather_table_f32' at 8 "
                                  "programs reads a weight table of 2 entries there"));
}

// Bindings that hold state: a state buffer, the same one on both sides of
// an in-place update.
TEST_F(FunctionTest, StateBindings) {
  plan_.functions[0].launches[1].bindings = {2, 1};  // decode's `s = y` onto the input x
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 'decode': launch 1 (dec:2): binding 1 is buffer 1 (input, 16 "
                                         "bytes), but kernel 'copy_f32' keeps persistent state there (a state "
                                         "buffer)"));
  // An in-place update (s += x) whose result binding moves to another
  // state buffer.
  plan_ = MakeStatePlan();
  plan_.buffers.push_back({plan::BufferKind::state, 16, 0, 0});  // buffer 3, a second state at offset 0
  plan_.kernels.push_back({"add_state_f32", 3, 0});
  plan_.executables[0].entries.push_back({"add_state_f32", 2, 1});
  plan_.launches.push_back({2, {1, 0, 0}, {}, 4, "fwd:3"});
  CompleteKernels(plan_);
  EXPECT_EQ(plan_.kernels[2].in_place_of, (std::vector<int32_t>{-1, -1, 1}));
  TPlan good = plan_;
  plan_.launches.back().bindings = {1, 0, 3};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 2 (fwd:3): binding 2 updates binding 1 in place, so both must be "
                                         "the same buffer, but they are buffers 3 and 0"));
  // Unchanged, it is accepted (the executable lacks the symbol, which only a
  // session would notice).
  plan_ = good;
  EXPECT_TRUE(Open().ok());
}

// The toy language model used by the kiln-run --generate tests, driven
// through the API.
TEST_F(FunctionTest, ToyLanguageModel) {
  plan_ = MakeToyLmPlan(2, 4, 10);
  auto s = NewSession();
  ASSERT_TRUE(s);
  HostTensor tokens = MakeTensor(DType::kI32, {2, 4});
  for (int i = 0; i < 8; ++i) tokens.data<int32_t>()[i] = i + 2;  // [[2, 3, 4, 5], [6, 7, 8, 9]]
  auto out = s->Call("forward", {{"tokens", tokens}});
  ASSERT_TRUE(out.ok()) << out.status();
  const HostTensor& logits = (*out)[0];
  ASSERT_EQ(logits.shape, (std::vector<int64_t>{2, 4, 10}));
  EXPECT_EQ(logits.data<float>()[(0 * 4 + 3) * 10 + 6], 1.0f);  // after 5: 6
  EXPECT_EQ(logits.data<float>()[(1 * 4 + 3) * 10 + 0], 1.0f);  // after 9: 0 (wraps)
  EXPECT_EQ(logits.data<float>()[(1 * 4 + 3) * 10 + 9], 0.0f);
}

}  // namespace
}  // namespace kiln::test

namespace kiln::test {
namespace {

// Run-time inputs against their value ranges (the toy model's: token ids
// [0, 10), positions [0, 4)), before any kernel runs.
class InputRangeTest : public ::testing::Test {
 protected:
  void SetUp() override { plan_ = MakeToyLmPlan(2, 4, 10); }
  std::unique_ptr<Session> NewSession() {
    auto plan = Plan::OpenFromMemory(Serialize(plan_));
    EXPECT_TRUE(plan.ok()) << plan.status();
    if (!plan.ok()) return nullptr;
    auto s = Session::Create(*plan, Device::kCpu);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  static HostTensor Ints(std::vector<int64_t> shape, std::vector<int32_t> v) {
    HostTensor t = MakeTensor(DType::kI32, std::move(shape));
    std::memcpy(t.bytes.data(), v.data(), 4 * v.size());
    return t;
  }
  absl::Status Decode(Session& s, std::vector<int32_t> tokens, std::vector<int32_t> position) {
    return s.Call("decode", {{"tokens", Ints({2, 1}, tokens)}, {"position", Ints({2}, position)}}).status();
  }
  TPlan plan_;
};

TEST_F(InputRangeTest, PositionsPerRow) {
  auto s = NewSession();
  ASSERT_TRUE(s);
  EXPECT_TRUE(Decode(*s, {1, 2}, {0, 3}).ok());
  EXPECT_THAT(Decode(*s, {1, 2}, {0, -16}).message(),
              HasSubstr("function 'decode': input 'position' row 1: value -16 is outside [0, 3] (the KV cache "
                        "holds 4 positions)"));
  EXPECT_THAT(Decode(*s, {1, 2}, {4, 0}).message(),
              HasSubstr("function 'decode': input 'position' row 0: value 4 is outside [0, 3]"));
  EXPECT_THAT(Decode(*s, {1, 2}, {-1, 0}).message(), HasSubstr("input 'position' row 0: value -1 is outside"));
  // A refused input stops the call before any kernel runs.
  EXPECT_EQ(s->stats().runs, 1u);
}

TEST_F(InputRangeTest, TokenIds) {
  auto s = NewSession();
  ASSERT_TRUE(s);
  EXPECT_THAT(Decode(*s, {1, 10}, {0, 0}).message(),
              HasSubstr("function 'decode': input 'tokens' row 1, element [1, 0]: value 10 is outside [0, 9] (it "
                        "indexes a table of 10 rows)"));
  EXPECT_THAT(Decode(*s, {-5, 1}, {0, 0}).message(),
              HasSubstr("input 'tokens' row 0, element [0, 0]: value -5 is outside [0, 9]"));
  HostTensor tokens = Ints({2, 4}, {1, 2, 3, 4, 5, 6, 99, 8});
  EXPECT_THAT(s->SetInput("tokens", tokens).message(),
              HasSubstr("input 'tokens' row 1, element [1, 2]: value 99 is outside [0, 9]"));
  tokens.data<int32_t>()[6] = 9;
  EXPECT_TRUE(s->SetInput("tokens", tokens).ok());
  EXPECT_EQ(s->stats().runs, 0u);
}

// Inputs whose memory another function reused are checked again in the
// arena: functions share it above the state region.
TEST_F(InputRangeTest, InputsReusedByAnotherFunction) {
  plan_ = MakeToyLmPlan(1, 4, 10);
  plan_.buffers[4].offset = plan_.buffers[2].offset;  // decode's position over forward's logits
  auto s = NewSession();
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->SetInput("decode", "tokens", Ints({1, 1}, {3})).ok());
  ASSERT_TRUE(s->SetInput("decode", "position", Ints({1}, {2})).ok());
  ASSERT_TRUE(s->Run("decode").ok());
  ASSERT_TRUE(s->Run("decode").ok());  // its own runs leave its inputs alone
  // forward's logits for token 9 start with a 1.0f (0x3f800000), where
  // decode's position was.
  ASSERT_TRUE(s->Call("forward", {{"tokens", Ints({1, 4}, {9, 1, 2, 3})}}).ok());
  EXPECT_THAT(s->Run("decode").message(),
              HasSubstr("function 'decode': input 'position' row 0: value 1065353216 is outside [0, 3] (the KV "
                        "cache holds 4 positions); it was set before function 'forward' ran, which reuses its "
                        "memory: set it again"));
  ASSERT_TRUE(s->SetInput("decode", "position", Ints({1}, {2})).ok());
  EXPECT_TRUE(s->Run("decode").ok());
  // Never set: the arena's zeros are checked too.
  plan_ = MakeToyLmPlan(1, 4, 10);
  plan_.functions[0].inputs[1].range_min = 1;
  auto fresh = NewSession();
  ASSERT_TRUE(fresh);
  EXPECT_THAT(fresh->Run("decode").message(),
              HasSubstr("input 'position' row 0: value 0 is outside [1, 3] (the KV cache holds 4 positions); the "
                        "input was never set"));
}

}  // namespace
}  // namespace kiln::test
