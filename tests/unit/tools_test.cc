// End-to-end checks of kiln-run and kiln-inspect on a generated plan.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <sys/wait.h>

#include <cstdio>

#include "kiln/npy.h"
#include "test_plan_builder.h"

namespace kiln::test {
namespace {

using ::testing::HasSubstr;

struct Result {
  int code = -1;
  std::string output;
};

Result Shell(const std::string& cmd) {
  Result r;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) r.output.append(buf, n);
  int status = pclose(f);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class ToolsTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void SetUp() override {
    dir_ = MakeTempDir();
    plan_path_ = dir_ + "/model.kplan";
    WriteFile(plan_path_, Serialize(MakeAddPlan(dir_)));
    HostTensor x = MakeTensor(DType::kF32, {1, 8});
    for (int i = 0; i < 8; ++i) x.data<float>()[i] = 1.0f;
    ASSERT_TRUE(WriteNpy(dir_ + "/x.npy", x).ok());
  }
  std::string dir_, plan_path_;
};

TEST_F(ToolsTest, KilnRunWritesOutputs) {
  Result r = Shell(std::string(KILN_RUN_EXE) + " " + plan_path_ + " --input x=" + dir_ +
                 "/x.npy --output y=" + dir_ + "/y.npy --threads 2 --repeat 3");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("y: float32 [1, 8]"));
  auto y = ReadNpy(dir_ + "/y.npy");
  ASSERT_TRUE(y.ok()) << y.status();
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(y->data<float>()[i], 1.0f + 21.0f * i);
}

TEST_F(ToolsTest, KilnRunErrors) {
  Result missing = Shell(std::string(KILN_RUN_EXE) + " " + plan_path_);
  EXPECT_EQ(missing.code, 1);
  EXPECT_THAT(missing.output, HasSubstr("kiln-run: error: missing input 'x'"));
  Result bad_out = Shell(std::string(KILN_RUN_EXE) + " " + plan_path_ + " --input x=" + dir_ +
                       "/x.npy --output nope=" + dir_ + "/n.npy");
  EXPECT_EQ(bad_out.code, 1);
  EXPECT_THAT(bad_out.output, HasSubstr("kiln-run: error: unknown output 'nope'"));
  Result no_plan = Shell(std::string(KILN_RUN_EXE) + " " + dir_ + "/none.kplan");
  EXPECT_EQ(no_plan.code, 1);
  EXPECT_THAT(no_plan.output, HasSubstr("kiln-run: error: plan: cannot open"));
}

TEST_F(ToolsTest, KilnInspect) {
  Result text = Shell(std::string(KILN_INSPECT_EXE) + " " + plan_path_);
  ASSERT_EQ(text.code, 0) << text.output;
  EXPECT_THAT(text.output, HasSubstr("add_scaled"));
  EXPECT_THAT(text.output, HasSubstr("weights.bin"));
  Result json = Shell(std::string(KILN_INSPECT_EXE) + " " + plan_path_ + " --json");
  ASSERT_EQ(json.code, 0) << json.output;
  EXPECT_THAT(json.output, HasSubstr("\"format_version\": 1"));
  EXPECT_THAT(json.output, HasSubstr("\"name\": \"add_scaled\""));
  WriteFile(plan_path_, "garbage!garbage!");
  Result bad = Shell(std::string(KILN_INSPECT_EXE) + " " + plan_path_);
  EXPECT_EQ(bad.code, 1);
  EXPECT_THAT(bad.output, HasSubstr("kiln-inspect: error: plan '"));
}

}  // namespace
}  // namespace kiln::test
