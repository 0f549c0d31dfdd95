#!/usr/bin/env bash
# cmake --install of the build tree into a temporary prefix, then what a user
# does with it: the installed tools run (kiln-compile compiles the example
# model when the compiler is built), and a separate project finds the package
# (as find_package(Kiln) and find_package(kiln)), builds against the installed
# runtime and headers alone, and runs the plan.
#   test_install.sh BUILD_DIR SOURCE_DIR COMPILER(ON|OFF)
set -euo pipefail
BUILD="$1"; SRC="$2"; COMPILER="$3"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/kiln-install-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
PREFIX="$TMP/prefix"
cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null

TOOLS=(kiln-run kiln-inspect kiln-tokenize kiln-verify kiln-bench)
[[ "$COMPILER" == ON ]] && TOOLS+=(kiln-compile kiln-opt)
for t in "${TOOLS[@]}"; do
  [[ -x "$PREFIX/bin/$t" ]] || { echo "FAIL: $t is not installed in $PREFIX/bin"; exit 1; }
  "$PREFIX/bin/$t" --help >/dev/null || { echo "FAIL: installed $t --help failed"; exit 1; }
done
for h in runtime.h tensor.h dtype.h npy.h tokenizer.h schema/plan_generated.h schema/plan_support.h \
         schema/weight_hash.h; do
  [[ -f "$PREFIX/include/kiln/$h" ]] || { echo "FAIL: header kiln/$h is not installed"; exit 1; }
done

PLAN=""
if [[ "$COMPILER" == ON ]]; then
  "$PREFIX/bin/kiln-compile" --version | grep -q "plan format version" || { echo "FAIL: kiln-compile --version"; exit 1; }
  PLAN="$TMP/tiny.kplan"
  "$PREFIX/bin/kiln-compile" "$SRC/models/example/tiny_mlp.mlir" -o "$PLAN" --quiet
  "$PREFIX/bin/kiln-verify" "$PLAN" --quiet | grep -q "all match the plan"
fi

for name in Kiln kiln; do
  B="$TMP/consumer-$name"
  # Only the prefix: the package must find its dependencies itself.
  cmake -S "$SRC/tests/install/consumer" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_PREFIX_PATH="$PREFIX" -DKILN_PACKAGE_NAME=$name >"$TMP/configure.log" 2>&1 ||
    { cat "$TMP/configure.log"; echo "FAIL: find_package($name) in a consumer project"; exit 1; }
  cmake --build "$B" >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log"; echo "FAIL: consumer build"; exit 1; }
  if [[ -n "$PLAN" ]]; then
    out="$("$B/consumer" "$PLAN")"
    [[ "$out" == "logits float32 [2, 8, 256]" ]] || { echo "FAIL: consumer printed '$out'"; exit 1; }
  else
    "$B/consumer" | grep -q "cannot open '/nonexistent/model.kplan'" || { echo "FAIL: consumer error"; exit 1; }
  fi
done
echo "install OK: ${TOOLS[*]}, runtime and headers; find_package(Kiln|kiln) consumers built and ran"
