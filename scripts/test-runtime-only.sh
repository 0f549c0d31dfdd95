#!/usr/bin/env bash
# Builds and tests the runtime alone (KILN_BUILD_COMPILER=OFF), as on a
# machine without LLVM/MLIR.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" --runtime-only
bash "$ROOT/scripts/build.sh" "$ROOT/build-runtime" -DKILN_BUILD_COMPILER=OFF
ctest --test-dir "$ROOT/build-runtime" --output-on-failure -j2
