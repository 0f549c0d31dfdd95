#!/usr/bin/env bash
# Installs everything Kiln needs on a fresh Debian 12 machine (idempotent):
# LLVM/MLIR 22 (Debian's security suite), FlatBuffers, abseil, GoogleTest,
# Ninja, ccache, and numpy for the end-to-end references.
set -euo pipefail

PKGS=(cmake ninja-build ccache g++ python3 python3-numpy
      libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools lld-22
      libflatbuffers-dev flatbuffers-compiler libabsl-dev libgtest-dev)
RUNTIME_ONLY=0
[[ "${1:-}" == "--runtime-only" ]] && RUNTIME_ONLY=1
if [[ $RUNTIME_ONLY == 1 ]]; then
  PKGS=(cmake ninja-build ccache g++ python3 libflatbuffers-dev
        flatbuffers-compiler libabsl-dev libgtest-dev)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) != 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if ! python3 -c "import numpy" 2>/dev/null; then
  echo "setup: installing numpy"
  python3 -m pip install -q numpy
fi
