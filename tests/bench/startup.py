#!/usr/bin/env python3
"""Start-up and compile time on a large synthetic checkpoint (issue 13: a
session's cost is mapping, not hashing). Writes a Llama-shaped bf16
checkpoint of --gb GB (hidden 4096, GQA 32/8 heads of 128, intermediate 14336,
vocab 32000, as many layers as it takes; shards of about --shard-gb GB; the
values are random bytes, the check does not care), compiles it (weights by
reference), then times, interleaved over --rounds rounds:

  - kiln-compile (hashes every weight on all cores; its progress lines on stderr);
  - Session::Create with the default check (sizes + sampled file identities)
    and with the full check (XXH64 of every byte) on 1 and on all threads
    (kiln-bench --startup-only --weight-check ...); one thread is what every
    session cost before;

each with the page cache holding the files (warm) and without them (cold:
posix_fadvise DONTNEED on every shard first, so the bytes come from the disk).
Prints a markdown table of medians of wall and CPU seconds (user + system of
the command: on a shared machine the CPU time of hashing says more than the
wall time) and deletes the checkpoint unless --keep.

  python3 tests/bench/startup.py --dir DIR [--gb 10] [--rounds 3] [--bin build/bin] [--keep]
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER, VOCAB = 4096, 32, 8, 128, 14336, 32000


def tensors(layers):
    """(name, shape) of a Llama checkpoint, in file order."""
    out = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (HIDDEN,)),
                (p + "self_attn.q_proj.weight", (HEADS * HEAD_DIM, HIDDEN)),
                (p + "self_attn.k_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
                (p + "self_attn.v_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
                (p + "self_attn.o_proj.weight", (HIDDEN, HEADS * HEAD_DIM)),
                (p + "post_attention_layernorm.weight", (HIDDEN,)),
                (p + "mlp.gate_proj.weight", (INTER, HIDDEN)),
                (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
                (p + "mlp.down_proj.weight", (HIDDEN, INTER))]
    return out + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def nbytes(shape):
    return 2 * int(np.prod(shape))


def write_checkpoint(d, gb, shard_gb):
    per_layer = sum(nbytes(s) for _, s in tensors(1)) - sum(nbytes(s) for _, s in tensors(0))
    layers = max(1, -(-int(gb * 1e9 - 2 * nbytes((VOCAB, HIDDEN))) // per_layer))
    all_tensors = tensors(layers)
    shards, cur, size = [], [], 0
    for name, shape in all_tensors:
        if cur and size + nbytes(shape) > shard_gb * 1e9:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += nbytes(shape)
    shards.append(cur)
    os.makedirs(d, exist_ok=True)
    block = np.random.default_rng(0).integers(0, 1 << 16, size=32 << 20, dtype=np.uint16).tobytes()
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {}, 0
        for name, shape in shard:
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nbytes(shape)]}
            off += nbytes(shape)
            weight_map[name] = fname
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * ((-len(hb)) % 8)
        with open(os.path.join(d, fname), "wb") as f:
            f.write(struct.pack("<Q", len(hb)) + hb)
            rot = i * 4099
            for name, shape in shard:
                left = nbytes(shape)
                while left:
                    n = min(left, len(block) - rot)
                    f.write(block[rot:rot + n])
                    left -= n
                    rot = (rot + n) % len(block)
            f.flush()
            os.fsync(f.fileno())
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
              "hidden_size": HIDDEN, "num_hidden_layers": layers, "num_attention_heads": HEADS,
              "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "intermediate_size": INTER,
              "rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "rope_theta": 500000.0,
              "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "bfloat16",
              "bos_token_id": 1, "eos_token_id": 2}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    return layers, len(shards), sum(nbytes(s) for _, s in all_tensors)


def evict(d):
    """Drops the shards' pages from the page cache (clean pages: no root needed)."""
    for f in os.listdir(d):
        if f.endswith(".safetensors"):
            fd = os.open(os.path.join(d, f), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


CPU = []  # CPU seconds (user + system) of the last timed() command


def timed(args):
    """Wall seconds of `args` and its result; its CPU seconds go to CPU[-1]."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{p.stderr}")
    return wall, p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="where to write the checkpoint (deleted afterwards)")
    ap.add_argument("--gb", type=float, default=10)
    ap.add_argument("--shard-gb", type=float, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(SRC, "build", "bin"))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    ckpt = os.path.join(args.dir, "ckpt")
    plan = os.path.join(args.dir, "big.kplan")
    tool = lambda name: os.path.join(args.bin, name)  # noqa: E731
    try:
        t = time.perf_counter()
        layers, shards, total = write_checkpoint(ckpt, args.gb, args.shard_gb)
        print(f"wrote {total / 1e9:.2f} GB ({layers} layers, {shards} shards) in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        compile_cmd = [tool("kiln-compile"), ckpt, "-o", plan, "--max-batch=1", "--max-seq=64"]
        cases = {
            "compile": lambda: timed(compile_cmd)[0],
            "compile, 1 hashing thread": lambda: timed(compile_cmd + ["--hash-threads=1"])[0],
        }
        for check, threads in (("identity", 0), ("full", 1), ("full", 0)):
            def session(check=check, threads=threads):
                _, p = timed([tool("kiln-bench"), plan, "--startup-only", "--weight-check", check,
                              "--threads", str(threads), "--json", "-"])
                r = json.loads(p.stdout)["startup"]
                return (r["plan_open_ms"] + r["session_create_ms"]) / 1000
            cases[f"session, {check} check" + (", 1 thread" if threads == 1 else "")] = session
        evict(ckpt)
        first_compile, p = timed(compile_cmd)  # the plan the sessions open; its progress (cold)
        compile_log = p.stderr
        results = {(name, cache): [] for name in cases for cache in ("cold", "warm")}
        cpu = {(name, cache): [] for name in cases for cache in ("cold", "warm")}
        loads = []
        for r in range(args.rounds):
            for name, run in cases.items():
                for cache in ("cold", "warm"):
                    if cache == "cold":  # the cold run fills the page cache for the warm one
                        evict(ckpt)
                    results[(name, cache)].append(run())
                    cpu[(name, cache)].append(CPU[-1])
                    loads.append(os.getloadavg()[0])
            print(f"round {r + 1}/{args.rounds} done (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
        info = json.loads(timed([tool("kiln-inspect"), plan, "--json"])[1].stdout)
        print(f"\n{total / 1e9:.2f} GB bf16, {layers} layers, {shards} files, "
              f"{info['weights']['count']} weights; {os.cpu_count()} cores; "
              f"load average {min(loads):.2f}-{max(loads):.2f} during the runs\n")
        print("| what | cold: wall s | cold: CPU s | warm: wall s | warm: CPU s | warm: GB per CPU s |\n"
              "|---|---|---|---|---|---|")
        med = statistics.median
        for name in cases:
            c, w = med(results[(name, "cold")]), med(results[(name, "warm")])
            cc, wc = med(cpu[(name, "cold")]), med(cpu[(name, "warm")])
            print(f"| {name} | {c:.3f} | {cc:.3f} | {w:.3f} | {wc:.3f} | {total / 1e9 / wc:.2f} |")
        print(f"\nkiln-compile's progress (cold, {first_compile:.1f} s):\n" + "\n".join("    " + l for l in compile_log.splitlines()))
        print(json.dumps({"wall": {f"{n} [{c}]": v for (n, c), v in results.items()},
                          "cpu": {f"{n} [{c}]": v for (n, c), v in cpu.items()}}))
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
