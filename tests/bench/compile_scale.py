#!/usr/bin/env python3
"""Compile time and peak memory of the full DeepSeek-V3 graph from its config
alone (--no-weights), for 4 and 61 layers, and the distinct-kernel counts.

    python3 tests/bench/compile_scale.py [--bin build/bin] [--repeat 3] [--target cpu]

Reports the median wall time of --repeat runs and the peak RSS of the
compiler process (ru_maxrss of the child), side by side in one run.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--target", default="cpu")
    args = ap.parse_args()
    src = os.path.join(ROOT, "models", "configs", "deepseek-v3", "config.json")
    tmp = tempfile.mkdtemp(prefix="kiln-bench-")
    try:
        print(f"{'layers':>6} {'target':>10} {'median s':>9} {'peak RSS MiB':>13} {'kernels':>8} {'launches':>9} {'plan MiB':>9}")
        for layers in (4, 61):
            d = os.path.join(tmp, f"v3-{layers}")
            os.makedirs(d)
            cfg = json.load(open(src))
            cfg["num_hidden_layers"] = layers
            json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
            plan = os.path.join(tmp, f"v3-{layers}.kplan")
            times, peaks = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                pid = subprocess.Popen([os.path.join(args.bin, "kiln-compile"), d, "--no-weights",
                                        "-o", plan, f"--target={args.target}"])
                _, status, usage = os.wait4(pid.pid, 0)
                times.append(time.perf_counter() - t0)
                if status != 0:
                    sys.exit(f"kiln-compile failed for {layers} layers")
                peaks.append(usage.ru_maxrss / 1024)
            data = json.loads(subprocess.check_output([os.path.join(args.bin, "kiln-inspect"), plan, "--json"]))
            launches = len(data["launches"]) + sum(len(f["launches"]) for f in data.get("functions", []))
            print(f"{layers:>6} {args.target:>10} {statistics.median(times):>9.2f} {max(peaks):>13.0f} "
                  f"{len(data['kernels']):>8} {launches:>9} {os.path.getsize(plan) / 2**20:>9.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
