// The host CPU's instruction-set features, read with CPUID (and XGETBV for
// the register state the OS enables), under LLVM's feature names, so that
// the features a plan's CPU code was compiled for can be checked before it
// is loaded.
#ifndef KILN_RUNTIME_CPU_FEATURES_H_
#define KILN_RUNTIME_CPU_FEATURES_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace kiln {

// The features this runtime can check, in LLVM's spelling ("avx512bf16").
const std::vector<std::string>& CheckableCpuFeatures();

// Whether the host has `feature` (false for a feature it cannot check).
bool HostHasCpuFeature(std::string_view feature);

// The host's features among CheckableCpuFeatures().
std::vector<std::string> HostCpuFeatures();

// OK when the host can run code compiled for `arch` (e.g. "x86_64") with
// `features`; otherwise an error naming the missing (or uncheckable)
// features. `what` names the executable in the message. Requests the AMX
// tile state from the kernel (Linux's ARCH_REQ_XCOMP_PERM) when the code
// needs it.
absl::Status CheckHostCanRun(const std::string& what, std::string_view arch, std::string_view cpu,
                             const std::vector<std::string>& features);

}  // namespace kiln

#endif  // KILN_RUNTIME_CPU_FEATURES_H_
