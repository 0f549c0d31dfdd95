// kiln-verify: the full check of a plan's external weights (WeightCheck::kFull):
// XXH64 of every weight byte against the plan, on every core, with progress.
//
//   kiln-verify PLAN [--threads N] [--quiet]
//
// A session checks only each file's size and sampled identity when it starts
// (milliseconds whatever the checkpoint's size); this reads all of it.
// Exit codes: 0 every weight matches, 1 a weight differs or its file is
// missing, 2 usage, 4 the plan cannot be opened or is invalid.
#include <chrono>
#include <cstdio>
#include <set>
#include <string>

#include "absl/strings/numbers.h"
#include "kiln/runtime.h"
#include "plan_generated.h"

namespace {

// As the other runtime tools (tools/common/tool_cli.h, docs/tools.md).
enum ExitCode { kOk = 0, kMismatch = 1, kUsage = 2, kBadPlan = 4 };

constexpr char kUsageText[] =
    "usage: kiln-verify PLAN [--threads N] [--quiet]\n"
    "  Hashes every external weight of PLAN (XXH64) and compares it with the plan; reports the\n"
    "  first weight that differs, by name and file.\n"
    "  --threads N  hashing threads (default: all cores)\n"
    "  --quiet      no progress on stderr\n"
    "  exit codes: 0 all weights match, 1 a weight differs or a file is missing, 2 usage,\n"
    "  4 the plan cannot be opened\n";

int Usage(const std::string& error) {
  std::fprintf(stderr, "kiln-verify: error: %s\n%s", error.c_str(), kUsageText);
  return kUsage;
}

double Gb(uint64_t bytes) { return static_cast<double>(bytes) / 1e9; }

// "12.35 GB", "1.2 MB"
std::string Amount(uint64_t bytes) {
  char buf[32];
  if (bytes >= 1000000000)
    std::snprintf(buf, sizeof(buf), "%.2f GB", Gb(bytes));
  else
    std::snprintf(buf, sizeof(buf), "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  kiln::WeightVerifyOptions options;
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsageText, stdout);
      return kOk;
    } else if (a == "--quiet") {
      quiet = true;
    } else if (a == "--threads") {
      if (i + 1 >= argc) return Usage("--threads needs a value");
      if (!absl::SimpleAtoi(argv[++i], &options.num_threads) || options.num_threads < 0)
        return Usage(std::string("--threads expects a count >= 0, got '") + argv[i] + "'");
    } else if (!a.empty() && a[0] == '-') {
      return Usage("unknown flag " + a);
    } else if (path.empty()) {
      path = a;
    } else {
      return Usage("more than one plan given");
    }
  }
  if (path.empty()) return Usage("no plan given");

  auto plan = kiln::Plan::Open(path);
  if (!plan.ok()) {
    std::fprintf(stderr, "kiln-verify: error: %s\n", std::string(plan.status().message()).c_str());
    return kBadPlan;
  }
  const auto* weights = (*plan)->fb().weights();
  uint64_t count = 0, bytes = 0;
  std::set<std::string> files;
  for (uint32_t w = 0; w < (weights ? weights->size() : 0); ++w) {
    const kiln::plan::Weight* wt = weights->Get(w);
    if (wt->packed()) continue;
    ++count;
    bytes += wt->size_bytes();
    if (wt->external()) files.insert(wt->external()->path()->str());
  }
  auto start = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  bool reported = false;
  if (!quiet)  // every second; nothing for a check done within the first
    options.progress = [&](uint64_t done, uint64_t total) {
      if (done == total && !reported) return;
      reported = true;
      double s = seconds();
      std::fprintf(stderr, "kiln-verify: %s of %s hashed (%.0f%%, %.2f GB/s)\n", Amount(done).c_str(),
                   Amount(total).c_str(), total ? 100.0 * done / total : 100.0, s > 0 ? Gb(done) / s : 0.0);
    };
  absl::Status s = (*plan)->VerifyWeights(options);
  if (!s.ok()) {
    std::fprintf(stderr, "kiln-verify: error: %s\n", std::string(s.message()).c_str());
    return kMismatch;
  }
  double t = seconds();
  std::printf("%s: %llu external weights in %zu file%s, %s: all match the plan (XXH64) in %.2f s (%.2f GB/s)\n",
              path.c_str(), static_cast<unsigned long long>(count), files.size(), files.size() == 1 ? "" : "s",
              Amount(bytes).c_str(), t, t > 0 ? Gb(bytes) / t : 0.0);
  return kOk;
}
