#!/usr/bin/env bash
# Prepares the GPU check on this (build) machine: compiles the example and
# tiny checkpoint plans for sm_90a + cpu and gathers kiln-run with the shared
# libraries it needs into build/device/, which `run` carries to the GPU
# machine (it has no compiler, MLIR or abseil).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$ROOT/build/bin"
OUT="$ROOT/build/device"
rm -rf "$OUT"; mkdir -p "$OUT/plans" "$OUT/lib" "$OUT/bin"
"$BIN/kiln-compile" "$ROOT/models/example/tiny_mlp.mlir" -o "$OUT/plans/tiny_mlp.kplan" \
  --target=sm_90a,cpu --embed-weights
python3 -c "import numpy as np; np.save('$OUT/plans/tiny_mlp.tokens.npy', (np.arange(16, dtype=np.int32).reshape(2, 8) * 7) % 256)"
for fam in deepseek_v3 llama mixtral; do
  python3 "$ROOT/models/testing/make_tiny_checkpoint.py" "$fam" "$OUT/ck-$fam" >/dev/null
  "$BIN/kiln-compile" "$OUT/ck-$fam" -o "$OUT/plans/$fam.kplan" --target=sm_90a,cpu \
    --embed-weights --max-batch=2 --max-seq=8
  python3 -c "import numpy as np; np.save('$OUT/plans/$fam.tokens.npy', np.random.default_rng(0).integers(0, 128, size=(2, 8)).astype(np.int32))"
  rm -rf "$OUT/ck-$fam"
done
# bf16 checkpoints: their dense GEMMs run as the TMA + wgmma tile kernels
# on the GPU (activations rounded to bf16, f32 sums), which run.sh compares
# against the CPU's f32 GEMMs at 1e-2 (the rounding alone is ~1e-3 here).
# Portable CPU code: the GPU machine's host may lack this one's features.
# Shapes that tile: DeepSeek's experts 64 wide (moe_down grouped), Llama's
# k and v 64 rows each (gemm_dual).
for fam in deepseek_v3 llama; do
  shape=(--set num_key_value_heads=4)
  [[ $fam == deepseek_v3 ]] && shape=(--set moe_intermediate_size=64)
  python3 "$ROOT/models/testing/make_tiny_checkpoint.py" "$fam" "$OUT/ck-$fam" --dtype bf16 "${shape[@]}" >/dev/null
  "$BIN/kiln-compile" "$OUT/ck-$fam" -o "$OUT/plans/$fam-bf16.kplan" --target=sm_90a,cpu \
    --cpu=x86-64-v3 --embed-weights --max-batch=2 --max-seq=64
  python3 -c "import numpy as np; np.save('$OUT/plans/$fam-bf16.tokens.npy', np.random.default_rng(1).integers(0, 128, size=(2, 8)).astype(np.int32))"
  echo 1e-2 > "$OUT/plans/$fam-bf16.tol"
  rm -rf "$OUT/ck-$fam"
done
# An FP8 checkpoint: its block-scaled GEMMs run as the e4m3 tile kernels
# (exact products, f32 sums promoted per 128 of K, as the CPU's), 1e-3.
# Shapes that tile: hidden and the dense MLP 256 wide (gemm_swiglu_fp8's
# quantizing form), q_a 128 and kv_a 112 + 16 rows (gemm_dual_fp8), the
# experts 128 wide (moe_down_fp8 grouped).
python3 "$ROOT/models/testing/make_tiny_checkpoint.py" deepseek_v3 "$OUT/ck-fp8" --fp8 --variant fp8dims \
  --set hidden_size=256 --set intermediate_size=256 --set q_lora_rank=128 --set kv_lora_rank=112 \
  --set moe_intermediate_size=128 >/dev/null
"$BIN/kiln-compile" "$OUT/ck-fp8" -o "$OUT/plans/deepseek_v3-fp8.kplan" --target=sm_90a,cpu \
  --cpu=x86-64-v3 --embed-weights --max-batch=2 --max-seq=64
python3 -c "import numpy as np; np.save('$OUT/plans/deepseek_v3-fp8.tokens.npy', np.random.default_rng(2).integers(0, 128, size=(2, 8)).astype(np.int32))"
echo 1e-3 > "$OUT/plans/deepseek_v3-fp8.tol"
# The same with the experts' layout in 64-row blocks: moe_up_fp8's grouped
# quantized SwiGLU over gathered e4m3 tokens, moe_down_fp8 unswapped.
"$BIN/kiln-compile" "$OUT/ck-fp8" -o "$OUT/plans/deepseek_v3-fp8-bm64.kplan" --target=sm_90a,cpu \
  --cpu=x86-64-v3 --embed-weights --max-batch=2 --max-seq=64 --moe-block-m=64
cp "$OUT/plans/deepseek_v3-fp8.tokens.npy" "$OUT/plans/deepseek_v3-fp8-bm64.tokens.npy"
echo 1e-3 > "$OUT/plans/deepseek_v3-fp8-bm64.tol"
rm -rf "$OUT/ck-fp8"
cp "$BIN/kiln-run" "$BIN/kiln-inspect" "$BIN/kiln-hopper-check" "$OUT/bin/"
# Shared libraries outside the base system (abseil, flatbuffers, libstdc++ is there).
ldd "$BIN/kiln-run" "$BIN/kiln-hopper-check" | awk '/=> \// {print $3}' | grep -E 'absl|flatbuffers' | sort -u | xargs -r -I{} cp -L {} "$OUT/lib/"
cp "$ROOT/tests/device/run.sh" "$ROOT/tests/device/compare.py" "$OUT/"
du -sh "$OUT"
