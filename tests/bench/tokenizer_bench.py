#!/usr/bin/env python3
"""Load and encode times of a DeepSeek-V3-sized tokenizer: a byte-level BPE
with DeepSeek-V3's pre-tokenizer, trained here to a 128,000-token vocabulary
(~127k merges) plus 800 added special tokens, saved as tokenizer.json; then
kiln-tokenize against Hugging Face tokenizers on a 1 MB text.

    python3 tests/bench/tokenizer_bench.py [--bin build/bin] [--repeat 5] [--keep DIR]

kiln's load time is a kiln-tokenize run on empty input (process start, read,
parse, tables); its encode time is the run on the 1 MB text less that (and
includes printing the ids). Hugging Face's are in-process (from_file, encode).
Medians of --repeat runs; the ids must agree.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import tokenizer_builders as tb  # noqa: E402
from tokenizers import AddedToken, Tokenizer  # noqa: E402


def build(out_dir):
    path = os.path.join(out_dir, "deepseek_v3_128k.json")
    if os.path.exists(path):
        return path
    start = time.perf_counter()
    added = [AddedToken(t, special=True, normalized=False) for t in tb.DS_SPECIALS]
    added += [AddedToken(f"<｜place▁holder▁no▁{i}｜>", special=True, normalized=False)
              for i in range(800 - len(added))]
    built = tb.byte_level(out_dir, "deepseek_v3_128k", tb.DEEPSEEK_V3_SPLITS,
                          vocab_size=128000, lines=400000, seed=21, bos=tb.BOS_DS,
                          specials=[tb.EOS_DS, tb.PAD_DS], added=added)
    print(f"trained in {time.perf_counter() - start:.0f} s")
    return built


def one_mb_text():
    lines, size = [], 0
    for line in tb.corpus_lines(99, 1000000):
        lines.append(line)
        size += len(line.encode()) + 1
        if size >= 1 << 20:
            return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", help="directory for the tokenizer.json (reused when present)")
    args = ap.parse_args()
    tmp = args.keep or tempfile.mkdtemp(prefix="kiln-tokbench-")
    os.makedirs(tmp, exist_ok=True)
    try:
        path = build(tmp)
        ref = Tokenizer.from_file(path)
        text = one_mb_text()
        data = text.encode()
        tool = [os.path.join(args.bin, "kiln-tokenize"), path, "--encode"]

        def kiln_run(stdin):
            start = time.perf_counter()
            p = subprocess.run(tool, input=stdin, capture_output=True, check=True)
            return time.perf_counter() - start, p.stdout

        kiln_load = statistics.median(kiln_run(b"")[0] for _ in range(args.repeat))
        runs = [kiln_run(data) for _ in range(args.repeat)]
        kiln_total = statistics.median(r[0] for r in runs)
        ids = [int(t) for t in runs[0][1].split()]

        def timed(fn):
            start = time.perf_counter()
            value = fn()
            return time.perf_counter() - start, value

        hf_load = statistics.median(timed(lambda: Tokenizer.from_file(path))[0]
                                    for _ in range(args.repeat))
        hf_runs = [timed(lambda: ref.encode(text).ids) for _ in range(args.repeat)]
        hf_encode = statistics.median(r[0] for r in hf_runs)
        if ids != hf_runs[0][1]:
            sys.exit("kiln and tokenizers disagree on the 1 MB text")
        print(f"tokenizer.json: {os.path.getsize(path) / 2**20:.1f} MiB, vocabulary "
              f"{ref.get_vocab_size(with_added_tokens=True)} ({ref.get_vocab_size(False)} model "
              f"tokens); text {len(data) / 2**20:.2f} MiB -> {len(ids)} ids (equal)")
        print(f"{'':24}{'load s':>8}{'encode 1 MB s':>15}")
        print(f"{'kiln-tokenize':24}{kiln_load:8.3f}{kiln_total - kiln_load:15.3f}")
        print(f"{'tokenizers (Python)':24}{hf_load:8.3f}{hf_encode:15.3f}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
