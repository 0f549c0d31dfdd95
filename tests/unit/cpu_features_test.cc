// The runtime's host CPU check: the plan's architecture and features
// against what CPUID reports.
#include "cpu_features.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace kiln {
namespace {

TEST(CpuFeaturesTest, HostFeaturesAreCheckable) {
  for (const std::string& f : HostCpuFeatures()) {
    EXPECT_TRUE(HostHasCpuFeature(f)) << f;
    EXPECT_NE(std::find(CheckableCpuFeatures().begin(), CheckableCpuFeatures().end(), f),
              CheckableCpuFeatures().end())
        << f;
  }
  EXPECT_FALSE(HostHasCpuFeature("no-such-feature"));
}

#if defined(__x86_64__)
TEST(CpuFeaturesTest, X86HostRunsBaselineCode) {
  EXPECT_TRUE(HostHasCpuFeature("sse2"));  // part of x86-64 itself
  EXPECT_TRUE(CheckHostCanRun("code", "x86_64", "x86-64", {"sse", "sse2"}).ok());
  EXPECT_TRUE(CheckHostCanRun("code", "x86_64", "", HostCpuFeatures()).ok());
}

TEST(CpuFeaturesTest, RefusesOtherArchitectures) {
  absl::Status s = CheckHostCanRun("the plan's CPU code", "aarch64", "neoverse-v2", {});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("compiled for aarch64, but this host is x86_64"), std::string::npos)
      << s.message();
}

TEST(CpuFeaturesTest, NamesMissingAndUnknownFeatures) {
  std::vector<std::string> missing;
  for (const std::string& f : CheckableCpuFeatures())
    if (!HostHasCpuFeature(f)) missing.push_back(f);
  if (!missing.empty()) {
    absl::Status s = CheckHostCanRun("the plan's CPU code", "x86_64", "graniterapids", {"sse2", missing[0]});
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(s.message().find("needs CPU features this host lacks: " + missing[0]), std::string::npos)
        << s.message();
    EXPECT_NE(s.message().find("--cpu=graniterapids"), std::string::npos) << s.message();
  }
  absl::Status s = CheckHostCanRun("code", "x86_64", "", {"sse2", "warp-drive"});
  EXPECT_NE(s.message().find("cannot check: warp-drive"), std::string::npos) << s.message();
  // Plans before rdseed left the recorded features still name it.
  EXPECT_TRUE(CheckHostCanRun("code", "x86_64", "", {"sse2", "rdseed"}).ok());
}
#endif

}  // namespace
}  // namespace kiln
