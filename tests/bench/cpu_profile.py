#!/usr/bin/env python3
"""Where the CPU time goes in the issue-11 models: prefill of 128 tokens and
decode steps, end to end and per kernel family, for several plan sets
measured interleaved.

    python3 tests/bench/cpu_profile.py [--bin build/bin] [--threads 2] [--rounds 3]
        [--variants llama-bf16,deepseek-bf16,deepseek-fp8] [--workdir DIR]
        [--plans NAME=DIR ...] [--compile-only] [--json FILE]

Models: tests/bench/cpu_decode.py's (random weights written once into
--workdir): the llama-like model (hidden 2048, 8 layers, GQA 32/4,
intermediate 5632, vocab 32000) and the DeepSeek-V3 shape (hidden 1024, 4
layers, MLA, 64 experts top-6 + 1 shared). Variants (kiln-compile flags,
--max-batch=1 --max-seq=256 on top):

- llama-bf16, deepseek-bf16: --cpu-gemm-precision=bf16 (AMX for GEMMs of
  >= 16 rows; "Kiln bf16" of docs/benchmarks.md);
- deepseek-fp8: --quantize=fp8-block --cpu-gemm-precision=bf16 (the
  projections and experts at one byte, DeepSeek's block scales; lm_head and
  router stay bf16).

`--plans NAME=DIR` adds plans compiled earlier (DIR/VARIANT.kplan, e.g. by a
build of another commit) as NAME:VARIANT, so before/after figures come
from the same rounds. Each round runs kiln-bench once per (plan set,
variant): prefill of 128 tokens and 16 decode steps after it, 3 timed calls
after a warm-up, and --profile (the median call's time per kernel, from a
session with profile_launches). The tables give medians over the rounds;
kernels are grouped by family (the kernel name up to its shape suffix).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import cpu_decode  # noqa: E402
import cpu_gemm  # noqa: E402

VARIANTS = {
    "llama-bf16": ("llama", ["--cpu-gemm-precision=bf16"]),
    "deepseek-bf16": ("deepseek", ["--cpu-gemm-precision=bf16"]),
    "deepseek-fp8": ("deepseek", ["--quantize=fp8-block", "--cpu-gemm-precision=bf16"]),
}


def family(kernel):
    """gemm_swiglu_fp8_n256_k1024_... -> gemm_swiglu_fp8: the name up to the
    first part that starts with a digit-bearing shape tag."""
    parts = kernel.split("_")
    out = []
    for part in parts:
        if re.fullmatch(r"[a-z]+\d+.*|\d+.*", part) and out:
            break
        out.append(part)
    return "_".join(out)


def bench(bin_dir, plan, threads, prompt):
    out = subprocess.run([os.path.join(bin_dir, "kiln-bench"), plan, "--threads", str(threads),
                          "--prompt-lengths", str(prompt), "--decode-tokens", "16", "--rounds", "3",
                          "--warmup", "1", "--profile", "--json", "-"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("{"):])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "kiln-bench-decode"))
    ap.add_argument("--plans", action="append", default=[], help="NAME=DIR of plans compiled earlier")
    ap.add_argument("--no-compile", action="store_true", help="only the --plans sets")
    ap.add_argument("--compile-only", action="store_true")
    ap.add_argument("--json", help="write every sample here")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    os.makedirs(args.workdir, exist_ok=True)
    plans = {}  # (set, variant) -> path
    if not args.no_compile:
        cks = {}
        for v in variants:
            model, flags = VARIANTS[v]
            if model not in cks:
                cks[model] = os.path.join(args.workdir, model)
                if model == "llama":
                    cpu_gemm.write_llama(cks[model], 8)
                else:
                    cpu_decode.write_deepseek(cks[model])
            plans[("new", v)] = os.path.join(args.workdir, f"{v}.kplan")
            cpu_gemm.compile_plan(args.bin, cks[model], plans[("new", v)],
                                  ["--max-batch=1", "--max-seq=256", *flags])
    for spec in args.plans:
        name, d = spec.split("=", 1)
        for v in variants:
            p = os.path.join(d, f"{v}.kplan")
            if os.path.exists(p):
                plans[(name, v)] = p
    if args.compile_only:
        return
    print(f"load average before: {cpu_gemm.load()}", file=sys.stderr)
    samples = {}
    for _ in range(args.rounds):
        for key, plan in plans.items():
            samples.setdefault(key, []).append(bench(args.bin, plan, args.threads, args.prompt))
    print(f"load average after: {cpu_gemm.load()}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}:{k[1]}": v for k, v in samples.items()}, f)

    print(f"\n{args.threads} thread(s), medians of {args.rounds} rounds\n")
    print("| plans | variant | prefill ms | decode ms/step |")
    print("|---|---|---|---|")
    for (name, v), runs in samples.items():
        pre = statistics.median(r["prefill"][0]["median_ms"] for r in runs)
        dec = statistics.median(r["decode"]["median_ms_per_step"] for r in runs)
        print(f"| {name} | {v} | {pre:.2f} | {dec:.3f} |")
    for phase in ("prefill", "decode"):
        for (name, v), runs in samples.items():
            fams = {}
            totals = []
            for r in runs:
                prof = r["profile"][phase]
                totals.append(prof["launch_ms"])
                per = {}
                for k in prof["kernels"]:
                    per[family(k["kernel"])] = per.get(family(k["kernel"]), 0.0) + k["ms"]
                for f, ms in per.items():
                    fams.setdefault(f, []).append(ms)
            total = statistics.median(totals)
            print(f"\n{phase}, {name}:{v}: launches {total:.2f} ms (median round)\n")
            print("| kernel family | ms | share |")
            print("|---|---|---|")
            rows = sorted(((statistics.median(ms + [0.0] * (len(runs) - len(ms))), f)
                           for f, ms in fams.items()), reverse=True)
            for ms, f in rows:
                print(f"| {f} | {ms:.3f} | {100 * ms / total:.1f} % |")


if __name__ == "__main__":
    main()
