#!/usr/bin/env python3
"""Prefill time against prompt length on one plan (issue 10: the request
decides the work). Compiles a tiny DeepSeek-V3 (MLA + MoE) for --max-seq
MAX and, for comparison, one plan per prompt length compiled for exactly
that length; runs each prompt length on both with kiln-run --repeat and
prints medians and their ratio. CPU, batch 1, random weights.

  python3 tests/bench/prompt_length.py [--max-seq 4096] [--lengths 1,8,64,512,4096]
      [--repeat 20] [--threads 2] [--bin build/bin]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "models", "testing"))
import make_tiny_checkpoint as mk  # noqa: E402


def median_ms(bin_dir, plan, tokens, repeat, threads):
    out = subprocess.run([os.path.join(bin_dir, "kiln-run"), plan, "--input", f"tokens={tokens}",
                          "--repeat", str(repeat), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"median ([0-9.]+) ms", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-seq", type=int, default=4096)
    ap.add_argument("--lengths", default="1,8,64,512,4096")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(SRC, "build", "bin"))
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    with tempfile.TemporaryDirectory(prefix="kiln-bench-len-") as tmp:
        ck = os.path.join(tmp, "ckpt")
        mk.make_checkpoint("deepseek_v3", ck, overrides={"max_position_embeddings": args.max_seq})
        compile_ = lambda seq: subprocess.run(
            [os.path.join(args.bin, "kiln-compile"), ck, "-o", os.path.join(tmp, f"p{seq}.kplan"),
             f"--max-seq={seq}"], check=True, capture_output=True) and os.path.join(tmp, f"p{seq}.kplan")
        big = compile_(args.max_seq)
        print(f"tiny deepseek_v3, batch 1, {args.threads} threads, median of {args.repeat}")
        print(f"| prompt | on a {args.max_seq}-token plan | on a plan of its length | ratio |")
        print("|---|---|---|---|")
        rng = np.random.default_rng(0)
        for n in lengths:
            tokens = os.path.join(tmp, f"t{n}.npy")
            np.save(tokens, rng.integers(0, 128, size=(1, n)).astype(np.int32))
            own = compile_(n)
            # Interleaved: the two plans alternate, three rounds, medians.
            a, b = [], []
            for _ in range(3):
                a.append(median_ms(args.bin, big, tokens, args.repeat, args.threads))
                b.append(median_ms(args.bin, own, tokens, args.repeat, args.threads))
            ma, mb = sorted(a)[1], sorted(b)[1]
            print(f"| {n} | {ma:.3f} ms | {mb:.3f} ms | {ma / mb:.2f} |")


if __name__ == "__main__":
    main()
