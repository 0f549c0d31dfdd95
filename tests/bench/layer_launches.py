#!/usr/bin/env python3
"""The launch sequence of one DeepSeek-V3 MoE layer, kernel by kernel, with
the bytes each launch binds (every bound buffer once: an upper bound for the
routed experts, which read only the selected experts' weights).

    python3 tests/bench/layer_launches.py [--bin build/bin] [--layer 3]
        [--max-seq 16] [--function forward|decode] [--extra-flags "--no-fuse"]

Compiles models/configs/deepseek-v3 with --no-weights and prints a markdown
table.
"""
import argparse
import json
import os
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def human(n):
    for unit in ["B", "KiB", "MiB", "GiB"]:
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--max-seq", type=int, default=16)
    ap.add_argument("--function", default="forward")
    ap.add_argument("--extra-flags", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plan = os.path.join(tmp, "v3.kplan")
        subprocess.check_call([os.path.join(args.bin, "kiln-compile"),
                               os.path.join(ROOT, "models", "configs", "deepseek-v3"),
                               "--no-weights", "-o", plan, "--target=cpu",
                               f"--max-seq={args.max_seq}", *args.extra_flags.split()])
        data = json.loads(subprocess.check_output([os.path.join(args.bin, "kiln-inspect"), plan, "--json"]))
    launches = data["launches"] if args.function == "forward" else next(
        f for f in data["functions"] if f["name"] == args.function)["launches"]
    ops = {k["name"]: k["source_ops"] for k in data["kernels"]}
    prefix = f"model.layers.{args.layer}."
    rows = [l for l in launches if prefix in l["location"] + "."]
    print(f"| # | kernel | fused graph ops | programs | bytes bound | location |")
    print("|---|---|---|---|---|---|")
    total = 0
    for i, l in enumerate(rows):
        total += l["bytes"]
        name = l["kernel"].split("_f32")[0].split("_bf16")[0][:48]
        print(f"| {i} | `{name}` | {', '.join(ops[l['kernel']])} | {l['programs']} | "
              f"{human(l['bytes'])} | {l['location'].replace(prefix, '')} |")
    print(f"\n{len(rows)} launches, {human(total)} bound in all "
          f"({args.function}, max-seq {args.max_seq}).")


if __name__ == "__main__":
    main()
