#!/usr/bin/env python3
"""Decode at memory bandwidth: one decode step of two models with random
bf16 weights, as ms per token and as the GB/s at which it reads the weights
a token touches, against the read bandwidth of the machine (kiln-membw).

    python3 tests/bench/cpu_decode.py [--bin build/bin] [--threads 1,2] [--rounds 3]
        [--models llama,deepseek] [--variants avx512-f32,bf16,fp8] [--workdir DIR]
        [--plans NAME=DIR ...] [--position 64]

Models (written once into --workdir, transformers' config names):

- llama: hidden 2048, 8 layers, 32 heads / 4 KV heads of 64, intermediate
  5632, vocab 32000 (483M parameters; tests/bench/cpu_gemm.py's);
- deepseek: DeepSeek-V3's architecture at hidden 1024, 4 layers (the first
  dense, intermediate 2688), 16 heads, MLA (q_lora 256, kv_lora 512, nope
  128, rope 64, v 128), 64 routed experts of 256 (top 6 of 8 groups, 4
  kept, sigmoid, correction bias) + 1 shared, vocab 32000.

Bytes a token touches: every weight but the embedding (a gathered row),
of the routed experts only top_k per MoE layer; the KV cache at --position
is left out (under 1 % here). Each round runs every (model, variant,
threads) once (kiln-run --function decode --repeat 20, its median), so the
variants see the same load; the table shows the medians over rounds and the
load average before and after. `--plans NAME=DIR` adds plans compiled
earlier (DIR/MODEL-VARIANT.kplan, e.g. by another build) as variant NAME:
before/after comparisons measured interleaved.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tiny_checkpoint as mk  # noqa: E402
import cpu_gemm  # noqa: E402

import numpy as np  # noqa: E402

VARIANTS = {"reference": ["--cpu-emitter=reference"], "avx512-f32": [],
            "bf16": ["--cpu-gemm-precision=bf16"],
            # DeepSeek only: its projections and experts at one byte.
            "fp8": ["--quantize=fp8-block"]}
QUANTIZED = ("q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
             "gate_proj", "up_proj", "down_proj")  # docs/fp8.md: what --quantize=fp8-block quantizes
DEEPSEEK = dict(hidden_size=1024, num_hidden_layers=4, num_attention_heads=16,
                num_key_value_heads=16, q_lora_rank=256, kv_lora_rank=512,
                qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                intermediate_size=2688, moe_intermediate_size=256, n_routed_experts=64,
                n_shared_experts=1, num_experts_per_tok=6, n_group=8, topk_group=4,
                first_k_dense_replace=1, vocab_size=32000, max_position_embeddings=4096,
                rope_scaling=None)


def write_deepseek(out_dir):
    cfg_path = os.path.join(out_dir, "config.json")
    cfg = mk.make_config("deepseek_v3", dtype="bf16")
    cfg.update(DEEPSEEK)
    if os.path.exists(cfg_path) and json.load(open(cfg_path)) == cfg:
        return cfg
    os.makedirs(out_dir, exist_ok=True)
    encoded = [(n, "F32" if keep else "BF16", a.shape, mk.encode_tensor(a, "F32" if keep else "BF16"))
               for n, a, keep in mk.make_weights(cfg, seed=0)]
    mk.write_safetensors(os.path.join(out_dir, "model.safetensors"), encoded, {"format": "pt"})
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    return cfg


def touched_bytes(ck, cfg, fp8=False):
    """Bytes of weights one decode token reads (`fp8`: DeepSeek's quantized
    projections at one byte, their 128 x 128 block scales left out)."""
    with open(os.path.join(ck, "model.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    total = 0
    size = {"BF16": 2, "F16": 2, "F32": 4}
    routed = cfg.get("n_routed_experts", 0)
    top_k = cfg.get("num_experts_per_tok", 0)
    for name, t in header.items():
        if name == "__metadata__" or "embed_tokens" in name:
            continue
        parts = name.split(".")
        one_byte = fp8 and name.startswith("model.layers.") and parts[-2] in QUANTIZED
        b = int(np.prod(t["shape"])) * (1 if one_byte else size[t["dtype"]])
        m = re.search(r"\.mlp\.experts\.(\d+)\.", name)
        if m and routed:
            b = b * top_k / routed  # each routed expert: top_k of `routed`
        total += b
    return total


def membw(bin_dir, threads):
    out = subprocess.run([os.path.join(bin_dir, "kiln-membw"), "--threads", str(threads)],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"median ([0-9.]+) GB/s", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="llama,deepseek")
    ap.add_argument("--variants", default="avx512-f32,bf16,fp8")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "kiln-bench-decode"))
    ap.add_argument("--plans", action="append", default=[], help="NAME=DIR of plans compiled earlier")
    ap.add_argument("--position", type=int, default=64)
    ap.add_argument("--compile-only", action="store_true")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    models = args.models.split(",")
    work = args.workdir
    os.makedirs(work, exist_ok=True)
    cks, cfgs = {}, {}
    for m in models:
        cks[m] = os.path.join(work, m)
        cfgs[m] = (cpu_gemm.write_llama(cks[m], 8) if m == "llama" else write_deepseek(cks[m]))
    plans = {}  # (model, variant) -> path
    for v in filter(None, args.variants.split(",")):
        for m in models:
            if v == "fp8" and m != "deepseek":
                continue
            plans[(m, v)] = os.path.join(work, f"{m}-{v}.kplan")
            cpu_gemm.compile_plan(args.bin, cks[m], plans[(m, v)],
                                  ["--max-batch=1", "--max-seq=256", *VARIANTS[v]])
    for spec in args.plans:
        name, d = spec.split("=", 1)
        for m in models:
            for v in VARIANTS:
                p = os.path.join(d, f"{m}-{v}.kplan")
                if os.path.exists(p):
                    plans[(m, f"{name}:{v}")] = p
    if args.compile_only:
        return
    tok = os.path.join(work, "tok.npy")
    pos = os.path.join(work, "pos.npy")
    np.save(tok, np.array([[5]], dtype=np.int32))
    np.save(pos, np.array([args.position], dtype=np.int32))

    def decode_ms(plan, t):
        out = subprocess.run([os.path.join(args.bin, "kiln-run"), plan, "--function", "decode",
                              "--input", f"tokens={tok}", "--input", f"position={pos}",
                              "--threads", str(t), "--repeat", "20"],
                             capture_output=True, text=True, check=True).stdout
        return float(re.search(r"median ([0-9.]+) ms", out).group(1))

    print(f"load average before: {cpu_gemm.load()}", file=sys.stderr)
    times, bw = {}, {}
    for _ in range(args.rounds):
        for t in threads:
            bw.setdefault(t, []).append(membw(args.bin, t))
            for key, plan in plans.items():
                times.setdefault((key, t), []).append(decode_ms(plan, t))
    print(f"load average after: {cpu_gemm.load()}", file=sys.stderr)
    for t in threads:
        print(f"read bandwidth, {t} thread(s): {statistics.median(bw[t]):.1f} GB/s (kiln-membw)")
    print("\n| model | GB touched per token | variant | threads | ms/token | GB/s | of read bandwidth |")
    print("|---|---|---|---|---|---|---|")
    for (m, v), _ in plans.items():
        gb = touched_bytes(cks[m], cfgs[m], fp8=v.endswith("fp8")) / 1e9
        for t in threads:
            ms = statistics.median(times[((m, v), t)])
            rate = gb / ms * 1e3
            print(f"| {m} | {gb:.3f} | {v} | {t} | {ms:.2f} | {rate:.1f} | "
                  f"{100 * rate / statistics.median(bw[t]):.0f} % |")


if __name__ == "__main__":
    main()
