// kiln-profile: where a plan's run time goes, kernel by kernel, through the
// runtime's per-launch profile hook (SessionOptions::profile_launches).
//
//   kiln-profile PLAN --input NAME=FILE.npy ... [--function NAME]
//                [--threads N] [--repeat N]
//
// Runs the function --repeat times (after one warm-up run) and prints, per
// distinct kernel, its launches per run, the median over runs of its summed
// launch time, its share of the run and its CPU emitter (from the kernel's
// config text). A benchmark tool (tests/bench/), not a test.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "kiln/npy.h"
#include "kiln/runtime.h"
#include "plan_generated.h"

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int Usage() {
  std::fprintf(stderr,
               "usage: kiln-profile PLAN --input NAME=FILE.npy ... [--function NAME] "
               "[--threads N] [--repeat N]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  std::string plan_path = argv[1], function = "forward";
  std::vector<std::pair<std::string, std::string>> inputs;
  kiln::SessionOptions options;
  options.profile_launches = true;
  int repeat = 5;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) return Usage();
    std::string v = argv[++i];
    if (a == "--input") {
      size_t eq = v.find('=');
      if (eq == std::string::npos) return Usage();
      inputs.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else if (a == "--function") {
      function = v;
    } else if (a == "--threads") {
      options.num_threads = std::atoi(v.c_str());
    } else if (a == "--repeat") {
      repeat = std::max(1, std::atoi(v.c_str()));
    } else {
      return Usage();
    }
  }
  auto plan = kiln::Plan::Open(plan_path);
  if (!plan.ok()) {
    std::fprintf(stderr, "kiln-profile: %s\n", plan.status().ToString().c_str());
    return 1;
  }
  auto session = kiln::Session::Create(*plan, kiln::Device::kCpu, options);
  if (!session.ok()) {
    std::fprintf(stderr, "kiln-profile: %s\n", session.status().ToString().c_str());
    return 1;
  }
  for (auto& [name, path] : inputs) {
    auto t = kiln::ReadNpy(path);
    absl::Status s = t.ok() ? (*session)->SetInput(function, name, *t) : t.status();
    if (!s.ok()) {
      std::fprintf(stderr, "kiln-profile: %s: %s\n", name.c_str(), s.ToString().c_str());
      return 1;
    }
  }
  auto fn = (*plan)->FindFunction(function);
  if (!fn.ok()) {
    std::fprintf(stderr, "kiln-profile: %s\n", fn.status().ToString().c_str());
    return 1;
  }
  const auto& kernels = *(*plan)->fb().kernels();
  std::map<uint32_t, std::vector<double>> per_kernel;  // kernel -> ms per run
  std::map<uint32_t, int> launches;
  std::vector<double> totals;
  for (int r = 0; r <= repeat; ++r) {
    absl::Status s = (*session)->Run(function);
    if (!s.ok()) {
      std::fprintf(stderr, "kiln-profile: %s\n", s.ToString().c_str());
      return 1;
    }
    if (r == 0) continue;  // warm-up
    const kiln::RunStats& st = (*session)->stats();
    std::map<uint32_t, double> sum;
    for (size_t i = 0; i < (*fn)->launches.size() && i < st.launch_ms.size(); ++i) {
      uint32_t k = (*fn)->launches[i]->kernel();
      sum[k] += st.launch_ms[i];
      if (r == 1) ++launches[k];
    }
    for (auto& [k, ms] : sum) per_kernel[k].push_back(ms);
    totals.push_back(st.total_ms);
  }
  double total = Median(totals);
  std::vector<std::pair<double, uint32_t>> order;
  for (auto& [k, v] : per_kernel) order.emplace_back(Median(v), k);
  std::sort(order.rbegin(), order.rend());
  std::printf("%s: %s, %d run(s), median %.2f ms\n\n", plan_path.c_str(), function.c_str(), repeat,
              total);
  std::printf("| kernel | launches | median ms | share | cpu emitter |\n|---|---|---|---|---|\n");
  for (auto& [ms, k] : order) {
    const kiln::plan::Kernel* kr = kernels[k];
    std::string config = kr->config() ? kr->config()->str() : "";
    size_t at = config.find("cpu=");
    std::string emitter = at == std::string::npos ? "reference" : config.substr(at + 4);
    if (emitter.size() > 40) emitter = emitter.substr(0, 40) + "...";
    std::printf("| %s | %d | %.2f | %.1f%% | %s |\n", kr->name()->c_str(), launches[k], ms,
                total > 0 ? 100 * ms / total : 0, emitter.c_str());
  }
  return 0;
}
