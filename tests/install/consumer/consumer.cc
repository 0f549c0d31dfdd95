// Runs the forward function of a plan on zero inputs and prints each output's
// name, dtype and shape, through the installed public headers only:
//   consumer PLAN
// Without a plan, checks that opening a missing one is a clean error.
#include <cstdio>

#include "kiln/runtime.h"
#include "plan_generated.h"
#include "plan_support.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    auto plan = kiln::Plan::Open("/nonexistent/model.kplan");
    std::printf("%s\n", plan.ok() ? "opened?" : std::string(plan.status().message()).c_str());
    return plan.ok() ? 1 : 0;
  }
  auto plan = kiln::Plan::Open(argv[1]);
  if (!plan.ok()) {
    std::fprintf(stderr, "consumer: %s\n", std::string(plan.status().message()).c_str());
    return 1;
  }
  auto session = kiln::Session::Create(*plan, kiln::Device::kCpu);
  if (!session.ok()) {
    std::fprintf(stderr, "consumer: %s\n", std::string(session.status().message()).c_str());
    return 1;
  }
  const kiln::Function& f = (*plan)->functions()[0];
  for (const kiln::plan::TensorSpec* in : f.inputs) {
    kiln::HostTensor t = kiln::MakeTensor(static_cast<kiln::DType>(in->dtype()), kiln::plan::ToVector(in->shape()));
    if (auto s = (*session)->SetInput(in->name()->str(), t); !s.ok()) {
      std::fprintf(stderr, "consumer: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  if (auto s = (*session)->Run(); !s.ok()) {
    std::fprintf(stderr, "consumer: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  for (const kiln::plan::TensorSpec* out : f.outputs) {
    auto t = (*session)->GetOutput(out->name()->str());
    if (!t.ok()) return 1;
    std::printf("%s %s\n", out->name()->c_str(), kiln::DescribeTensor(t->dtype, t->shape).c_str());
  }
  return 0;
}
