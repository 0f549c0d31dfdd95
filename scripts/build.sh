#!/usr/bin/env bash
# Configures and builds Kiln with Ninja and ccache (cache outside the tree).
#   scripts/build.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"; shift || true
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
# Relative paths in the cache keys: clones in other folders (CI) hit too.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
cmake -G Ninja -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
ninja -C "$BUILD" -j"$(nproc)"
# Generated dialect and pass docs (build/docs/), when the compiler is built.
if ninja -C "$BUILD" -t targets all 2>/dev/null | grep -q '^mlir-doc:'; then
  ninja -C "$BUILD" mlir-doc >/dev/null
fi
