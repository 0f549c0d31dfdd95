#!/usr/bin/env bash
# The main job: set up, build, then compile the bundled tiny DeepSeek-V3
# architecture model (MLA, MoE with grouped routing, YaRN; random weights
# from models/testing/make_tiny_checkpoint.py, with a tiny tokenizer) and run
# it on the CPU: a prefill, greedy generation through the latent KV cache from
# token ids and from text, with timings.
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
CKPT="$OUT/tiny-deepseek-v3"
python3 "$ROOT/models/testing/make_tiny_checkpoint.py" deepseek_v3 "$CKPT" --dtype bf16 --tokenizer >/dev/null
echo "== kiln-compile $CKPT --target=$TARGETS --max-batch=2 --max-seq=16"
start=$(date +%s%N)
"$BIN/kiln-compile" "$CKPT" -o "$OUT/tiny-deepseek-v3.kplan" --target="$TARGETS" \
  --max-batch=2 --max-seq=16 --dump-ir-dir "$OUT/ir"
end=$(date +%s%N)
printf "compiled in %d ms -> %s (IR dumps in %s)\n" $(( (end - start) / 1000000 )) \
  "$OUT/tiny-deepseek-v3.kplan" "$OUT/ir"

echo "== kiln-inspect (summary)"
"$BIN/kiln-inspect" "$OUT/tiny-deepseek-v3.kplan" | sed -n '1,6p'
"$BIN/kiln-inspect" "$OUT/tiny-deepseek-v3.kplan" | grep -E "^memory|^state|^weights|^  tokenizer|^  eos" || true

python3 -c "
import numpy as np
np.save('$OUT/prompt.npy', np.array([[5, 17, 42, 7], [99, 3, 64, 12]], dtype=np.int32))
np.save('$OUT/tokens.npy', np.arange(32, dtype=np.int32).reshape(2, 16) * 5 % 128)
"
echo "== kiln-run: prefill of [2, 16] tokens on the CPU"
"$BIN/kiln-run" "$OUT/tiny-deepseek-v3.kplan" --input tokens="$OUT/tokens.npy" \
  --output logits="$OUT/logits.npy" --repeat 20
echo "== kiln-run: greedy generation of 10 tokens from a [2, 4] prompt"
"$BIN/kiln-run" "$OUT/tiny-deepseek-v3.kplan" --input tokens="$OUT/prompt.npy" --generate 10
echo "== kiln-run: text in, text out (random weights: the words are noise), 8 new tokens"
"$BIN/kiln-run" "$OUT/tiny-deepseek-v3.kplan" --prompt "hello" --max-new-tokens 8
