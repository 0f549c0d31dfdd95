// kiln-run: runs a compiled plan on .npy inputs.
//
//   kiln-run PLAN --input NAME=FILE.npy ... [--output NAME=FILE.npy ...]
//            [--device cpu|cuda] [--threads N] [--repeat N] [--print]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kiln/npy.h"
#include "kiln/runtime.h"
#include "plan_generated.h"

namespace {

constexpr char kUsage[] =
    "usage: kiln-run PLAN --input NAME=FILE.npy ... [--output NAME=FILE.npy ...]\n"
    "                [--device cpu|cuda] [--threads N] [--repeat N] [--print]\n";

struct Options {
  std::string plan;
  std::vector<std::pair<std::string, std::string>> inputs, outputs;
  kiln::Device device = kiln::Device::kCpu;
  int threads = 0;
  int repeat = 1;
  bool print = false;
};

absl::Status ParsePair(const std::string& flag, const char* arg,
                       std::vector<std::pair<std::string, std::string>>* out) {
  std::string s = arg;
  size_t eq = s.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == s.size())
    return absl::InvalidArgumentError(absl::StrCat(flag, " expects NAME=FILE.npy, got '", s, "'"));
  for (const auto& [name, file] : *out)
    if (name == s.substr(0, eq))
      return absl::InvalidArgumentError(absl::StrCat(flag, " '", name, "' given twice"));
  out->emplace_back(s.substr(0, eq), s.substr(eq + 1));
  return absl::OkStatus();
}

absl::StatusOr<Options> ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> absl::StatusOr<const char*> {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(a, " needs a value"));
      return argv[++i];
    };
    auto int_value = [&](int min) -> absl::StatusOr<int> {
      auto v = value();
      if (!v.ok()) return v.status();
      int n;
      if (!absl::SimpleAtoi(*v, &n) || n < min)
        return absl::InvalidArgumentError(absl::StrCat(a, " expects an integer >= ", min, ", got '", *v, "'"));
      return n;
    };
    if (a == "--input" || a == "--output") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (auto s = ParsePair(a, *v, a == "--input" ? &o.inputs : &o.outputs); !s.ok()) return s;
    } else if (a == "--device") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (std::strcmp(*v, "cpu") == 0) o.device = kiln::Device::kCpu;
      else if (std::strcmp(*v, "cuda") == 0) o.device = kiln::Device::kCuda;
      else return absl::InvalidArgumentError(absl::StrCat("--device expects cpu or cuda, got '", *v, "'"));
    } else if (a == "--threads") {
      auto v = int_value(0);
      if (!v.ok()) return v.status();
      o.threads = *v;
    } else if (a == "--repeat") {
      auto v = int_value(1);
      if (!v.ok()) return v.status();
      o.repeat = *v;
    } else if (a == "--print") {
      o.print = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (!a.empty() && a[0] == '-') {
      return absl::InvalidArgumentError(absl::StrCat("unknown option '", a, "'"));
    } else if (o.plan.empty()) {
      o.plan = a;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "' (one PLAN only)"));
    }
  }
  if (o.plan.empty()) return absl::InvalidArgumentError("no PLAN given");
  return o;
}

std::string FormatValue(const kiln::HostTensor& t, int64_t i) {
  switch (t.dtype) {
    case kiln::DType::kF32: return absl::StrFormat("%g", t.data<float>()[i]);
    case kiln::DType::kI32: return absl::StrCat(t.data<int32_t>()[i]);
    case kiln::DType::kI64: return absl::StrCat(t.data<int64_t>()[i]);
    case kiln::DType::kU8: case kiln::DType::kF8E4M3: return absl::StrCat(t.data<uint8_t>()[i]);
    case kiln::DType::kF16: case kiln::DType::kBF16: {
      uint16_t h = t.data<uint16_t>()[i];
      float f;
      if (t.dtype == kiln::DType::kBF16) {
        uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(&f, &bits, 4);
      } else {
        int e = (h >> 10) & 0x1f, m = h & 0x3ff;
        float mag = e == 0 ? std::ldexp(static_cast<float>(m), -24)
                  : e == 31 ? (m ? NAN : INFINITY)
                            : std::ldexp(static_cast<float>(m | 0x400), e - 25);
        f = (h & 0x8000) ? -mag : mag;
      }
      return absl::StrFormat("%g", f);
    }
  }
  return "?";
}

void PrintTensor(const std::string& name, const kiln::HostTensor& t, bool all) {
  int64_t n = t.num_elements();
  int64_t limit = all ? std::min<int64_t>(n, 10000) : std::min<int64_t>(n, 8);
  std::string values;
  for (int64_t i = 0; i < limit; ++i) absl::StrAppend(&values, i ? ", " : "", FormatValue(t, i));
  if (limit < n) absl::StrAppend(&values, ", ... (", n - limit, " more)");
  std::printf("%s: %s = [%s]\n", name.c_str(), kiln::DescribeTensor(t.dtype, t.shape).c_str(),
              values.c_str());
}

absl::Status Main(int argc, char** argv) {
  auto opts = ParseArgs(argc, argv);
  if (!opts.ok()) return opts.status();
  auto plan = kiln::Plan::Open(opts->plan);
  if (!plan.ok()) return plan.status();
  const kiln::plan::Plan& fb = (*plan)->fb();

  // Every plan input must be given; every --input/--output name must exist.
  for (const auto& [name, file] : opts->inputs)
    if (auto s = (*plan)->FindInput(name); !s.ok()) return s.status();
  for (const auto& [name, file] : opts->outputs)
    if (auto s = (*plan)->FindOutput(name); !s.ok()) return s.status();
  if (fb.inputs()) {
    for (const auto* spec : *fb.inputs()) {
      bool given = std::any_of(opts->inputs.begin(), opts->inputs.end(),
                               [&](const auto& p) { return p.first == spec->name()->str(); });
      if (!given)
        return absl::InvalidArgumentError(absl::StrCat("missing input '", spec->name()->str(),
                                                       "' (give --input ", spec->name()->str(), "=FILE.npy)"));
    }
  }

  kiln::SessionOptions so;
  so.num_threads = opts->threads;
  auto session = kiln::Session::Create(*plan, opts->device, so);
  if (!session.ok()) return session.status();
  for (const auto& [name, file] : opts->inputs) {
    auto t = kiln::ReadNpy(file);
    if (!t.ok()) return t.status();
    if (auto s = (*session)->SetInput(name, *t); !s.ok()) return s;
  }

  std::vector<double> times;
  for (int r = 0; r < opts->repeat; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    if (auto s = (*session)->Run(); !s.ok()) return s;
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  std::printf("ran %s on %s: %d run(s), median %.3f ms, min %.3f ms\n", opts->plan.c_str(),
              kiln::DeviceName(opts->device), opts->repeat, times[times.size() / 2], times[0]);

  // Summaries for every output; files for the requested ones.
  for (uint32_t i = 0; i < (fb.outputs() ? fb.outputs()->size() : 0); ++i) {
    std::string name = fb.outputs()->Get(i)->name()->str();
    auto t = (*session)->GetOutput(name);
    if (!t.ok()) return t.status();
    PrintTensor(name, *t, opts->print);
    for (const auto& [oname, file] : opts->outputs) {
      if (oname != name) continue;
      if (auto s = kiln::WriteNpy(file, *t); !s.ok()) return s;
      std::printf("  wrote %s\n", file.c_str());
    }
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::Status s = Main(argc, argv);
  if (!s.ok()) {
    std::fprintf(stderr, "kiln-run: error: %s\n", std::string(s.message()).c_str());
    if (s.message().find("usage") == absl::string_view::npos && argc < 2) std::fputs(kUsage, stderr);
    return 1;
  }
  return 0;
}
