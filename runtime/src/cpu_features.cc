// Host CPU features from CPUID. Each feature is one bit of one CPUID leaf,
// and the vector extensions also need their register state enabled by the
// OS (XCR0): AVX the YMM state, AVX-512 the opmask and ZMM states, AMX the
// tile configuration and tile data states.
#include "cpu_features.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace kiln {
namespace {

enum Reg { kEax, kEbx, kEcx, kEdx };
enum State : unsigned { kNone = 0, kYmm = 1, kZmm = 2, kTile = 4 };

struct Feature {
  const char* name;  // LLVM's name
  unsigned leaf, subleaf;
  Reg reg;
  unsigned bit;
  unsigned state;
};

// Intel SDM vol. 2A, CPUID; AMD's extended leaf 0x80000001 for lzcnt. Not
// rdseed: no generated code can hold it (LLVM emits it only for its
// intrinsic), and Linux masks it on AMD Zen 5 parts whose RDSEED is faulty
// while CPUID still reports it, so requiring it would record a feature the
// OS says is absent.
constexpr Feature kFeatures[] = {
    {"sse3", 1, 0, kEcx, 0, kNone},         {"pclmul", 1, 0, kEcx, 1, kNone},
    {"ssse3", 1, 0, kEcx, 9, kNone},        {"fma", 1, 0, kEcx, 12, kYmm},
    {"cx16", 1, 0, kEcx, 13, kNone},        {"sse4.1", 1, 0, kEcx, 19, kNone},
    {"sse4.2", 1, 0, kEcx, 20, kNone},      {"movbe", 1, 0, kEcx, 22, kNone},
    {"popcnt", 1, 0, kEcx, 23, kNone},      {"aes", 1, 0, kEcx, 25, kNone},
    {"xsave", 1, 0, kEcx, 26, kNone},       {"avx", 1, 0, kEcx, 28, kYmm},
    {"f16c", 1, 0, kEcx, 29, kYmm},         {"rdrnd", 1, 0, kEcx, 30, kNone},
    {"sse", 1, 0, kEdx, 25, kNone},         {"sse2", 1, 0, kEdx, 26, kNone},
    {"bmi", 7, 0, kEbx, 3, kNone},          {"avx2", 7, 0, kEbx, 5, kYmm},
    {"bmi2", 7, 0, kEbx, 8, kNone},         {"avx512f", 7, 0, kEbx, 16, kZmm},
    {"avx512dq", 7, 0, kEbx, 17, kZmm},     {"adx", 7, 0, kEbx, 19, kNone},
    {"avx512ifma", 7, 0, kEbx, 21, kZmm},
    {"avx512cd", 7, 0, kEbx, 28, kZmm},     {"sha", 7, 0, kEbx, 29, kNone},
    {"avx512bw", 7, 0, kEbx, 30, kZmm},     {"avx512vl", 7, 0, kEbx, 31, kZmm},
    {"avx512vbmi", 7, 0, kEcx, 1, kZmm},    {"avx512vbmi2", 7, 0, kEcx, 6, kZmm},
    {"gfni", 7, 0, kEcx, 8, kNone},         {"vaes", 7, 0, kEcx, 9, kYmm},
    {"vpclmulqdq", 7, 0, kEcx, 10, kYmm},   {"avx512vnni", 7, 0, kEcx, 11, kZmm},
    {"avx512bitalg", 7, 0, kEcx, 12, kZmm}, {"avx512vpopcntdq", 7, 0, kEcx, 14, kZmm},
    {"amx-bf16", 7, 0, kEdx, 22, kTile},    {"avx512fp16", 7, 0, kEdx, 23, kZmm},
    {"amx-tile", 7, 0, kEdx, 24, kTile},    {"amx-int8", 7, 0, kEdx, 25, kTile},
    {"avxvnni", 7, 1, kEax, 4, kYmm},       {"avx512bf16", 7, 1, kEax, 5, kZmm},
    {"amx-fp16", 7, 1, kEax, 21, kTile},    {"avxifma", 7, 1, kEax, 23, kYmm},
    {"avxvnniint8", 7, 1, kEdx, 4, kYmm},   {"avxneconvert", 7, 1, kEdx, 5, kYmm},
    {"amx-complex", 7, 1, kEdx, 8, kTile},  {"lzcnt", 0x80000001, 0, kEcx, 5, kNone},
};

#if defined(__x86_64__)
bool Cpuid(unsigned leaf, unsigned subleaf, unsigned out[4]) {
  unsigned max = __get_cpuid_max(leaf & 0x80000000u, nullptr);
  if (max < leaf) return false;
  __cpuid_count(leaf, subleaf, out[0], out[1], out[2], out[3]);
  return true;
}

// The register states the OS saves and restores (XCR0).
unsigned EnabledStates() {
  unsigned r[4];
  if (!Cpuid(1, 0, r) || !(r[kEcx] & (1u << 27))) return kNone;  // OSXSAVE
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  uint64_t xcr0 = (static_cast<uint64_t>(hi) << 32) | lo;
  unsigned s = kNone;
  if ((xcr0 & 0x6) == 0x6) s |= kYmm;                  // SSE + AVX
  if ((xcr0 & 0xe6) == 0xe6) s |= kZmm;                // + opmask, ZMM_Hi256, Hi16_ZMM
  if ((xcr0 & 0x60000) == 0x60000) s |= kTile;         // XTILECFG + XTILEDATA
  return s;
}
#endif

// Debian's abseil has a string_view of its own.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

const Feature* Find(std::string_view name) {
  for (const Feature& f : kFeatures)
    if (name == f.name) return &f;
  return nullptr;
}

bool Has(const Feature& f) {
#if defined(__x86_64__)
  static const unsigned states = EnabledStates();
  unsigned r[4];
  if (!Cpuid(f.leaf, f.subleaf, r)) return false;
  return (r[f.reg] >> f.bit & 1u) && (f.state & states) == f.state;
#else
  (void)f;
  return false;
#endif
}

std::string_view HostArch() {
#if defined(__x86_64__)
  return "x86_64";
#elif defined(__aarch64__)
  return "aarch64";
#else
  return "unknown";
#endif
}

// Linux hands out the AMX tile data state per process, on request.
absl::Status RequestTileState() {
#if defined(__x86_64__) && defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (::syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0)
    return absl::FailedPreconditionError(
        "the kernel refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)");
#endif
  return absl::OkStatus();
}

}  // namespace

const std::vector<std::string>& CheckableCpuFeatures() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const Feature& f : kFeatures) v.push_back(f.name);
    return v;
  }();
  return names;
}

bool HostHasCpuFeature(std::string_view feature) {
  const Feature* f = Find(feature);
  return f && Has(*f);
}

std::vector<std::string> HostCpuFeatures() {
  std::vector<std::string> v;
  for (const Feature& f : kFeatures)
    if (Has(f)) v.push_back(f.name);
  return v;
}

absl::Status CheckHostCanRun(const std::string& what, std::string_view arch, std::string_view cpu,
                             const std::vector<std::string>& features) {
  std::string_view host = HostArch();
  // "x86_64-<cpu>" is how format-1 plans spelled the architecture.
  if (arch != host && arch.substr(0, arch.find('-')) != host)
    return absl::FailedPreconditionError(
        absl::StrCat(what, " was compiled for ", Sv(arch), ", but this host is ", Sv(host)));
  std::vector<std::string> missing, unknown;
  bool tiles = false;
  // Features earlier plans recorded that no generated code can use: accepted
  // without a check (rdseed, see kFeatures).
  constexpr std::string_view kRetired[] = {"rdseed"};
  for (const std::string& f : features) {
    const Feature* known = Find(f);
    if (!known && std::find(std::begin(kRetired), std::end(kRetired), f) != std::end(kRetired))
      continue;
    if (!known)
      unknown.push_back(f);
    else if (!Has(*known))
      missing.push_back(f);
    else
      tiles |= known->state == kTile;
  }
  std::string target = cpu.empty() ? "" : absl::StrCat(" (compiled with --cpu=", Sv(cpu), ")");
  if (!missing.empty())
    return absl::FailedPreconditionError(absl::StrCat(
        what, target, " needs CPU features this host lacks: ", absl::StrJoin(missing, ", "),
        "; recompile on this host (--cpu=host) or for a CPU it covers (e.g. --cpu=x86-64-v2)"));
  if (!unknown.empty())
    return absl::FailedPreconditionError(absl::StrCat(what, target,
                                                      " needs CPU features this runtime cannot check: ",
                                                      absl::StrJoin(unknown, ", ")));
  if (tiles) return RequestTileState();
  return absl::OkStatus();
}

}  // namespace kiln
