#!/usr/bin/env bash
# The GPU suite, run on the device machine from the repository root after
# tests/device/prepare.sh ran here (carry build/device):
#   bash build/device/run.sh
# Runs every plan on the CPU and on CUDA, compares the outputs (relative L2
# <= 1e-4, or the plan's .tol: 1e-2 for the bf16 plans, whose GPU GEMMs
# round activations to bf16) and prints a short table of timings (median of
# --repeat runs); then kiln-hopper-check:
# the TMA + wgmma GEMM kernels (bf16, e4m3) against a float64 reference on
# small and edge shapes, and their TFLOPS / GB/s at DeepSeek-V3's shapes.
set -uo pipefail
D="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export LD_LIBRARY_PATH="$D/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
status=0
printf "%-14s %-6s %12s %12s %12s\n" plan device median_ms rel_l2 result
for plan in "$D"/plans/*.kplan; do
  name="$(basename "$plan" .kplan)"
  tokens="$D/plans/$name.tokens.npy"
  for dev in cpu cuda; do
    out="$D/plans/$name.$dev.npy"
    if ! log=$("$D/bin/kiln-run" "$plan" --device "$dev" --input "tokens=$tokens" \
                 --output "logits=$out" --repeat 20 2>&1); then
      printf "%-14s %-6s %12s %12s %12s\n" "$name" "$dev" - - FAIL; echo "$log" | tail -3
      status=1; continue
    fi
    ms=$(echo "$log" | sed -n 's/.*median \([0-9.]*\) ms.*/\1/p' | head -1)
    if [[ $dev == cuda ]]; then
      tol=1e-4; [[ -f "$D/plans/$name.tol" ]] && tol=$(cat "$D/plans/$name.tol")
      cmp=$(python3 "$D/compare.py" "$D/plans/$name.cpu.npy" "$out" "$tol") && r=PASS || { r=FAIL; status=1; }
      printf "%-14s %-6s %12s %12s %12s\n" "$name" "$dev" "$ms" "$cmp" "$r"
    else
      printf "%-14s %-6s %12s %12s %12s\n" "$name" "$dev" "$ms" - ok
    fi
  done
done
echo
# A pipeline deadlock would block forever: bound it.
timeout 300 "$D/bin/kiln-hopper-check" || { echo "kiln-hopper-check failed or timed out (rc $?)"; status=1; }
exit $status
