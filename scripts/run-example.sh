#!/usr/bin/env bash
# The main job: set up, build, compile the bundled example model, run it on
# the CPU and print its outputs and timings.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/build.sh" "$ROOT/build"
BIN="$ROOT/build/bin"
OUT="$ROOT/build/example"
mkdir -p "$OUT"

TARGETS=cpu
if command -v ptxas >/dev/null || [[ -x /usr/local/cuda/bin/ptxas ]]; then
  TARGETS=sm_90a,cpu
fi
MODEL="$ROOT/models/example/tiny_mlp.mlir"
echo "== kiln-compile $MODEL --target=$TARGETS"
start=$(date +%s%N)
"$BIN/kiln-compile" "$MODEL" -o "$OUT/tiny_mlp.kplan" --target="$TARGETS" \
  --dump-ir-dir "$OUT/ir"
end=$(date +%s%N)
printf "compiled in %d ms -> %s (IR dumps in %s)\n" $(( (end - start) / 1000000 )) \
  "$OUT/tiny_mlp.kplan" "$OUT/ir"

python3 -c "
import numpy as np
np.save('$OUT/tokens.npy', np.arange(16, dtype=np.int32).reshape(2, 8) * 7 % 256)
"
echo "== kiln-inspect (summary)"
"$BIN/kiln-inspect" "$OUT/tiny_mlp.kplan" | head -40
echo "== kiln-run on the CPU"
"$BIN/kiln-run" "$OUT/tiny_mlp.kplan" --input tokens="$OUT/tokens.npy" \
  --output logits="$OUT/logits.npy" --repeat 20
