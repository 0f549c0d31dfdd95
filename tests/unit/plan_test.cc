// Plan::Open: structure, version and semantic verification.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "kiln/runtime.h"
#include "test_plan_builder.h"

namespace kiln::test {
namespace {

using ::testing::HasSubstr;

class PlanTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void SetUp() override { dir_ = MakeTempDir(); plan_ = MakeAddPlan(dir_); }
  // Serializes plan_ (or `bytes`) to a file and opens it.
  absl::StatusOr<std::shared_ptr<const Plan>> Open() { return OpenBytes(Serialize(plan_)); }
  absl::StatusOr<std::shared_ptr<const Plan>> OpenBytes(const std::string& bytes) {
    std::string path = dir_ + "/model.kplan";
    WriteFile(path, bytes);
    return Plan::Open(path);
  }
  std::string ErrorOf(const absl::StatusOr<std::shared_ptr<const Plan>>& r) {
    EXPECT_FALSE(r.ok()) << "expected an error";
    return r.ok() ? "" : std::string(r.status().message());
  }
  std::string dir_;
  TPlan plan_;
};

TEST_F(PlanTest, ValidPlanOpens) {
  auto p = Open();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->fb().format_version(), 1u);
  EXPECT_EQ((*p)->fb().launches()->size(), 2u);
  EXPECT_EQ((*p)->base_dir(), dir_);
  auto mem = Plan::OpenFromMemory(Serialize(plan_), dir_);
  ASSERT_TRUE(mem.ok()) << mem.status();
}

TEST_F(PlanTest, MissingFile) {
  auto r = Plan::Open(dir_ + "/nope.kplan");
  EXPECT_THAT(ErrorOf(r), HasSubstr("nope.kplan"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(PlanTest, Truncated) {
  std::string bytes = Serialize(plan_);
  for (size_t cut : {size_t{0}, size_t{7}, size_t{8}, size_t{64}, bytes.size() / 2, bytes.size() - 1}) {
    SCOPED_TRACE(cut);
    std::string msg = ErrorOf(OpenBytes(bytes.substr(0, cut)));
    if (cut < 8)
      EXPECT_THAT(msg, HasSubstr("too small"));
    else
      EXPECT_THAT(msg, HasSubstr("corrupt plan"));
  }
}

TEST_F(PlanTest, CorruptMiddle) {
  std::string bytes = Serialize(plan_);
  // Overwrite a stretch of the table/vtable area with garbage offsets.
  for (size_t i = 8; i < 72 && i < bytes.size(); ++i) bytes[i] = static_cast<char>(0xff);
  EXPECT_THAT(ErrorOf(OpenBytes(bytes)), HasSubstr("corrupt plan"));
}

TEST_F(PlanTest, WrongIdentifier) {
  std::string bytes = Serialize(plan_);
  bytes.replace(4, 4, "ABCD");
  EXPECT_THAT(ErrorOf(OpenBytes(bytes)), HasSubstr("file identifier 'ABCD', expected 'KPLN'"));
}

TEST_F(PlanTest, WrongFormatVersion) {
  plan_.format_version = 2;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("unsupported format_version 2 (this runtime supports 1)"));
}

TEST_F(PlanTest, BindingOutOfRange) {
  plan_.launches[1].bindings[2] = 17;
  EXPECT_THAT(ErrorOf(Open()),
              HasSubstr("launch 1 (test.py:2): binding 2 refers to buffer 17, but the plan has 5 buffers"));
}

TEST_F(PlanTest, KernelOutOfRange) {
  plan_.launches[0].kernel = 9;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 0 (test.py:1): refers to kernel 9, but the plan has 2 kernels"));
}

TEST_F(PlanTest, BindingCountMismatch) {
  plan_.launches[0].bindings.pop_back();
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("kernel 'add' takes 3 buffers, but the launch binds 2"));
}

TEST_F(PlanTest, ScalarCountMismatch) {
  plan_.launches[1].scalars.clear();
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("kernel 'add_scaled' takes 1 scalars, but the launch passes 0"));
}

TEST_F(PlanTest, ArenaOverflow) {
  plan_.buffers[2].offset = 768;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("buffer 2 (output): [768, 800) overflows the arena (arena_size 768)"));
}

TEST_F(PlanTest, UnalignedArenaOffset) {
  plan_.buffers[1].offset = 100;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("buffer 1 (intermediate): arena offset 100 is not 256-aligned"));
}

TEST_F(PlanTest, WeightIndexOutOfRange) {
  plan_.buffers[4].weight = 5;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("buffer 4: refers to weight 5, but the plan has 2 weights"));
}

TEST_F(PlanTest, PackedWeightOutsideWeightData) {
  plan_.weights[0].packed_offset = 128;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("weight 0 ('wp'): packed bytes [128, 160) lie outside weight_data"));
}

TEST_F(PlanTest, ExternalWeightWithoutPath) {
  plan_.weights[1].path = "";
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("weight 1 ('we'): external weight without a path"));
}

TEST_F(PlanTest, WeightSizeDisagreesWithShape) {
  plan_.weights[1].shape = {9};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("weight 1 ('we'): float32 [9] is 36 bytes, but size_bytes is 32"));
}

TEST_F(PlanTest, MissingEntryPointForKernel) {
  plan_.executables[0].entries.pop_back();
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("no entry point for kernel 1 ('add_scaled')"));
}

TEST_F(PlanTest, EntryKernelOutOfRange) {
  plan_.executables[0].entries[1].kernel = 4;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("entry point 1 ('add_scaled_f32') refers to kernel 4"));
}

TEST_F(PlanTest, InputSpecChecks) {
  plan_.inputs[0].shape = {2, 8};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("input 0 ('x'): float32 [2, 8] is 64 bytes, but buffer 0 is 32 bytes"));
  plan_ = MakeAddPlan(dir_);
  plan_.inputs[0].buffer = 1;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("input 0 ('x'): buffer 1 has kind intermediate, expected input"));
  plan_ = MakeAddPlan(dir_);
  plan_.outputs[0].buffer = 42;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("output 0 ('y'): refers to buffer 42"));
  plan_ = MakeAddPlan(dir_);
  plan_.outputs[0].dtype = static_cast<plan::DType>(99);
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("output 0 ('y'): unknown dtype 99"));
}

TEST_F(PlanTest, Fnv1a64KnownValues) {
  EXPECT_EQ(Fnv1a64("", 0), 14695981039346656037ull);
  EXPECT_EQ(Fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);
}

}  // namespace
}  // namespace kiln::test
