// What the runtime tools (kiln-run, kiln-inspect) share on the command line:
// exit codes and --version. kiln-compile follows the same numbering for
// 0, 1 and 2 (docs/tools.md).
#pragma once

#include <cstdio>

#include "kiln/runtime.h"

namespace kiln::tools {

enum ExitCode : int {
  kExitOk = 0,
  kExitRunFailed = 1,  // running the plan failed (the device, a kernel, the session)
  kExitUsage = 2,      // unknown flag, bad or missing value, flags that do not go together
  kExitBadInput = 3,   // an input file, prompt or name that does not fit the plan
  kExitBadPlan = 4,    // the plan cannot be opened or verified, or lacks what the mode needs
  kExitCacheFull = 5,  // generation stopped because the KV cache was full (output kept)
};

// "<tool> (kiln X.Y.Z)" and the plan format version the runtime reads.
inline void PrintVersion(const char* tool) {
  std::printf("%s (kiln %s)\nreads plan format version %u\n", tool, kiln::Version(), kiln::kPlanFormatVersion);
}

}  // namespace kiln::tools
