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
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 'decode': launch 0 (dec:1): kernel 'add' takes 0 scalars, "
                                         "but the launch passes 1"));
  plan_ = MakeStatePlan();
  plan_.functions[0].launches[1].bindings.pop_back();
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 'decode': launch 1 (dec:2): kernel 'copy' takes 2 buffers"));
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
  p.kernels = {{"gather_table", 2, 1}};
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
