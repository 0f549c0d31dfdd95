#!/usr/bin/env python3
"""CPU GEMM emitters side by side: the reference (scalar programs), the
optimized emitter at fp32 (AVX-512) and at --cpu-gemm-precision=bf16
(AMX-BF16 tiles, or AVX-512-BF16 on a CPU without AMX), measured
interleaved, medians of repeated runs.

    python3 tests/bench/cpu_gemm.py gemms   [--bin build/bin] [--threads 1,2] [--rounds 3]
    python3 tests/bench/cpu_gemm.py prefill [--bin build/bin] [--threads 1,2] [--rounds 3]
        [--layers 8] [--seq 128] [--workdir DIR] [--skip-reference]

`gemms`: one kiln-dialect model per GEMM kernel of the llama-like model
below (the kernels its prefill launches: fused q/k projection, v, o with
the residual, gate/up + SwiGLU, down with the residual, lm_head), bf16
weights, M = --seq rows; GFLOP/s = 2 M N K / the median of kiln-run's
timings (--repeat). `prefill`: a llama-like checkpoint with random bf16
weights (hidden 2048, 8 layers, 32 heads / 4 KV heads of 64, intermediate
5632, vocab 32000: 483M parameters; written once into --workdir), compiled
for --max-seq=--seq, one forward of --seq tokens.

Each round runs every variant once per thread count, so the variants see
the same machine load; the load average is printed before and after. The
machine is shared: run it when `uptime` shows a low load.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "models", "testing"))
import make_tiny_checkpoint as mk  # noqa: E402

import numpy as np  # noqa: E402

VARIANTS = {  # name -> kiln-compile flags
    "reference": ["--cpu-emitter=reference"],
    "avx512-f32": [],
    "bf16": ["--cpu-gemm-precision=bf16"],
}
LLAMA = dict(hidden_size=2048, num_hidden_layers=8, num_attention_heads=32,
             num_key_value_heads=4, head_dim=64, intermediate_size=5632, vocab_size=32000,
             max_position_embeddings=4096)


def load():
    return open("/proc/loadavg").read().split()[0]


def timed(bin_dir, plan, inputs, threads, repeat):
    args = [os.path.join(bin_dir, "kiln-run"), plan, "--threads", str(threads),
            "--repeat", str(repeat)]
    for name, path in inputs.items():
        args += ["--input", f"{name}={path}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    m = re.search(r"median ([0-9.]+) ms", out)
    return float(m.group(1))


def compile_plan(bin_dir, src, plan, flags):
    subprocess.run([os.path.join(bin_dir, "kiln-compile"), src, "-o", plan, *flags],
                   check=True, capture_output=True, text=True)


def gemm_shapes(seq):
    h, i, v = LLAMA["hidden_size"], LLAMA["intermediate_size"], LLAMA["vocab_size"]
    kv = LLAMA["num_key_value_heads"] * LLAMA["head_dim"]
    # name, kind, N (or (N1, N2)), K, addends
    return [("q+k (gemm_dual)", "dual", (h, kv), h, 0),
            ("v", "gemm", kv, h, 0),
            ("o + residual", "gemm", h, h, 1),
            ("gate/up + SwiGLU", "swiglu", i, h, 0),
            ("down + residual", "gemm", h, i, 1),
            ("lm_head", "gemm", v, h, 0)]


def gemm_model(kind, m, n, k, addends):
    x_t = f"tensor<{m}x{k}xf32>"
    if kind == "dual":
        (n1, n2) = n
        outs = f'tensor<{m}x{n1}xf32> {{kiln.name = "p1"}}, tensor<{m}x{n2}xf32> {{kiln.name = "p2"}}'
        body = f"""    %w1 = kiln.weight "w1" : tensor<{n1}x{k}xbf16>
    %w2 = kiln.weight "w2" : tensor<{n2}x{k}xbf16>
    %p1 = kiln.linear %x, %w1 : ({x_t}, tensor<{n1}x{k}xbf16>) -> tensor<{m}x{n1}xf32>
    %p2 = kiln.linear %x, %w2 : ({x_t}, tensor<{n2}x{k}xbf16>) -> tensor<{m}x{n2}xf32>
    return %p1, %p2 : tensor<{m}x{n1}xf32>, tensor<{m}x{n2}xf32>"""
        weights = [("w1", (n1, k)), ("w2", (n2, k))]
        args = f'%x: {x_t} {{kiln.name = "x"}}'
    else:
        y_t = f"tensor<{m}x{n}xf32>"
        outs = f'{y_t} {{kiln.name = "y"}}'
        args = f'%x: {x_t} {{kiln.name = "x"}}' + "".join(
            f', %r{j}: {y_t} {{kiln.name = "r{j}"}}' for j in range(addends))
        if kind == "swiglu":
            body = f"""    %wg = kiln.weight "wg" : tensor<{n}x{k}xbf16>
    %wu = kiln.weight "wu" : tensor<{n}x{k}xbf16>
    %g = kiln.linear %x, %wg : ({x_t}, tensor<{n}x{k}xbf16>) -> {y_t}
    %u = kiln.linear %x, %wu : ({x_t}, tensor<{n}x{k}xbf16>) -> {y_t}
    %y = kiln.swiglu %g, %u : ({y_t}, {y_t}) -> {y_t}
    return %y : {y_t}"""
            weights = [("wg", (n, k)), ("wu", (n, k))]
        else:
            body = f"""    %w = kiln.weight "w" : tensor<{n}x{k}xbf16>
    %y0 = kiln.linear %x, %w : ({x_t}, tensor<{n}x{k}xbf16>) -> {y_t}"""
            for j in range(addends):
                body += f"\n    %y{j + 1} = kiln.add %y{j}, %r{j} : ({y_t}, {y_t}) -> {y_t}"
            body += f"\n    return %y{addends} : {y_t}"
            weights = [("w", (n, k))]
    text = f"""module attributes {{kiln.weights = "w.safetensors"}} {{
  func.func @forward({args}) -> ({outs}) {{
{body}
  }}
}}
"""
    return text, weights


def bench_gemms(args):
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-gemm-") as tmp:
        cases = []
        for name, kind, n, k, addends in gemm_shapes(args.seq):
            d = os.path.join(tmp, re.sub(r"[^a-z0-9]+", "_", name))
            os.makedirs(d)
            text, weights = gemm_model(kind, args.seq, n, k, addends)
            with open(os.path.join(d, "m.mlir"), "w") as f:
                f.write(text)
            mk.write_safetensors(os.path.join(d, "w.safetensors"), [
                (wn, "BF16", shape, mk.encode_tensor(
                    (rng.standard_normal(shape, dtype=np.float32) * k ** -0.5), "BF16"))
                for wn, shape in weights])
            inputs = {"x": os.path.join(d, "x.npy")}
            np.save(inputs["x"], rng.standard_normal((args.seq, k), dtype=np.float32))
            ntot = sum(n) if isinstance(n, tuple) else n
            for j in range(addends):
                inputs[f"r{j}"] = os.path.join(d, f"r{j}.npy")
                np.save(inputs[f"r{j}"], rng.standard_normal((args.seq, ntot), dtype=np.float32))
            for v, flags in VARIANTS.items():
                compile_plan(args.bin, os.path.join(d, "m.mlir"), os.path.join(d, f"{v}.kplan"), flags)
            flops = 2 * args.seq * ntot * k * (2 if kind == "swiglu" else 1)
            cases.append((name, d, inputs, flops))
        print(f"load average before: {load()}", file=sys.stderr)
        times = {}
        for _ in range(args.rounds):
            for name, d, inputs, flops in cases:
                for t in args.threads:
                    for v in VARIANTS:
                        rep = 2 if v == "reference" else 20
                        times.setdefault((name, t, v), []).append(
                            timed(args.bin, os.path.join(d, f"{v}.kplan"), inputs, t, rep))
        print(f"load average after: {load()}", file=sys.stderr)
        print(f"M = {args.seq} rows, bf16 weights; GFLOP/s (median ms) per variant\n")
        head = "| kernel | N x K | threads | " + " | ".join(VARIANTS) + " |"
        print(head)
        print("|" + "---|" * (3 + len(VARIANTS)))
        for (name, kind, n, k, addends), (_, d, inputs, flops) in zip(gemm_shapes(args.seq), cases):
            for t in args.threads:
                cells = []
                for v in VARIANTS:
                    ms = statistics.median(times[(name, t, v)])
                    cells.append(f"{flops / ms / 1e6:.0f} ({ms:.2f})")
                nk = f"{'+'.join(map(str, n)) if isinstance(n, tuple) else n} x {k}"
                print(f"| {name} | {nk} | {t} | " + " | ".join(cells) + " |")
    return rows


def write_llama(out_dir, layers):
    """A llama-like checkpoint with random bf16 weights (written once)."""
    cfg_path = os.path.join(out_dir, "config.json")
    cfg = mk.make_config("llama", dtype="bf16")
    cfg.update(LLAMA, num_hidden_layers=layers)
    if os.path.exists(cfg_path) and json.load(open(cfg_path)) == cfg:
        return cfg
    os.makedirs(out_dir, exist_ok=True)
    encoded = [(n, "BF16", a.shape, mk.encode_tensor(a, "BF16"))
               for n, a, _ in mk.make_weights(cfg, seed=0)]
    mk.write_safetensors(os.path.join(out_dir, "model.safetensors"), encoded, {"format": "pt"})
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    return cfg


def bench_prefill(args):
    work = args.workdir or os.path.join(tempfile.gettempdir(), "kiln-bench-llama")
    ck = os.path.join(work, f"llama-{args.layers}l")
    cfg = write_llama(ck, args.layers)
    with open(os.path.join(ck, "model.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    params = sum(int(np.prod(t["shape"])) for k, t in header.items() if k != "__metadata__")
    variants = {v: f for v, f in VARIANTS.items() if not (args.skip_reference and v == "reference")}
    plans = {}
    for v, flags in variants.items():
        plans[v] = os.path.join(work, f"llama-{args.layers}l-{args.seq}-{v}.kplan")
        compile_plan(args.bin, ck, plans[v], [f"--max-seq={args.seq}", "--max-batch=1", *flags])
    tokens = os.path.join(work, f"tokens-{args.seq}.npy")
    np.save(tokens, np.random.default_rng(1).integers(0, cfg["vocab_size"], (1, args.seq), dtype=np.int32))
    print(f"load average before: {load()}", file=sys.stderr)
    times = {}
    for _ in range(args.rounds):
        for t in args.threads:
            for v in variants:
                rep = 1 if v == "reference" else 5
                times.setdefault((t, v), []).append(timed(args.bin, plans[v], {"tokens": tokens}, t, rep))
    print(f"load average after: {load()}", file=sys.stderr)
    flops = 2 * args.seq * (params - cfg["vocab_size"] * cfg["hidden_size"])  # embedding is a gather
    print(f"llama-like, {params / 1e6:.0f}M parameters (bf16), prefill of {args.seq} tokens: "
          f"median ms ({flops / 1e9:.0f} GFLOP of GEMMs -> GFLOP/s)\n")
    print("| threads | " + " | ".join(variants) + " |")
    print("|" + "---|" * (1 + len(variants)))
    for t in args.threads:
        cells = [f"{statistics.median(times[(t, v)]):.0f} ({flops / statistics.median(times[(t, v)]) / 1e6:.0f})"
                 for v in variants]
        print(f"| {t} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["gemms", "prefill"])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--workdir")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    if args.what == "gemms":
        bench_gemms(args)
    else:
        bench_prefill(args)


if __name__ == "__main__":
    main()
