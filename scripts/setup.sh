#!/usr/bin/env bash
# Installs everything Kiln needs on a fresh Debian 12 machine (idempotent):
# LLVM/MLIR 22 (Debian's security suite), FlatBuffers, abseil, GoogleTest,
# PCRE2, utf8proc and nlohmann/json (the runtime's tokenizer), Ninja, ccache,
# numpy for the end-to-end references, python3-venv (the virtual environment
# of tests/bench/vs_reference_runtimes.py, which installs its own PyTorch and
# builds its own llama.cpp), and Hugging Face `tokenizers` (pip, test-only:
# the tokenizer end-to-end test compares with it), and cuobjdump + nvdisasm
# (pip wheels, test-only: the sm_90a kernel tests read the SASS).
set -euo pipefail

TOKENIZER_PKGS=(pkg-config libpcre2-dev libutf8proc-dev nlohmann-json3-dev)
PKGS=(cmake ninja-build ccache g++ python3 python3-numpy python3-pip python3-venv
      libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools lld-22
      libflatbuffers-dev flatbuffers-compiler libabsl-dev libgtest-dev "${TOKENIZER_PKGS[@]}")
RUNTIME_ONLY=0
[[ "${1:-}" == "--runtime-only" ]] && RUNTIME_ONLY=1
if [[ $RUNTIME_ONLY == 1 ]]; then
  PKGS=(cmake ninja-build ccache g++ python3 libflatbuffers-dev
        flatbuffers-compiler libabsl-dev libgtest-dev "${TOKENIZER_PKGS[@]}")
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

# The reference of tests/e2e/test_tokenizer.py, pinned: the Unicode tables of
# runtime/src/tokenizer_*update.inc follow its versions
# (scripts/gen-unicode-update.py).
TOKENIZERS_VERSION=0.23.3
if [[ $RUNTIME_ONLY == 0 ]] &&
   ! python3 -c "import tokenizers, sys; sys.exit(tokenizers.__version__ != '$TOKENIZERS_VERSION')" 2>/dev/null; then
  echo "setup: installing tokenizers==$TOKENIZERS_VERSION (test-only)"
  # Debian's own python3 is "externally managed"; pip then needs the flag.
  python3 -m pip install -q "tokenizers==$TOKENIZERS_VERSION" 2>/dev/null ||
    python3 -m pip install -q --break-system-packages "tokenizers==$TOKENIZERS_VERSION"
fi

# cuobjdump and nvdisasm, which the CUDA toolkit here lacks: the Hopper GEMM
# tests read the SASS ptxas made (HGMMA, UTMALDG). Test-only, pinned.
SASS_TOOLS_VERSION=13.5.37
if [[ $RUNTIME_ONLY == 0 ]] &&
   [[ "$(python3 -m pip show nvidia-cuda-nvdisasm 2>/dev/null | sed -n 's/^Version: //p')" != "$SASS_TOOLS_VERSION" ||
      "$(python3 -m pip show nvidia-cuda-cuobjdump 2>/dev/null | sed -n 's/^Version: //p')" != "$SASS_TOOLS_VERSION" ]]; then
  echo "setup: installing cuobjdump and nvdisasm $SASS_TOOLS_VERSION (test-only)"
  SASS_WHEELS=("nvidia-cuda-cuobjdump==$SASS_TOOLS_VERSION" "nvidia-cuda-nvdisasm==$SASS_TOOLS_VERSION")
  python3 -m pip install -q --no-deps "${SASS_WHEELS[@]}" 2>/dev/null ||
    python3 -m pip install -q --no-deps --break-system-packages "${SASS_WHEELS[@]}"
fi
