#!/usr/bin/env python3
"""Process replay for Kiln's generated code (after tinygrad's): compiles a
fixed corpus of example models and records every stage a change could
alter: the graph and kernel IR, the CPU code (LLVM IR after O3), the PTX and
ptxas's resource report, and the plan's kernels, launches and memory plan.
Comparing two recordings shows whether a change leaves generated code as it
was; a refactoring step should show no difference.

  replay.py dump OUT [--bin DIR] [--only NAME]   record the corpus with the tools in DIR
  replay.py compare A B                          exit 1 and show diffs if they differ
  scripts/replay.sh [BASE]                       both, for BASE (default HEAD) vs the work tree

The corpus is compiled for a fixed CPU (--cpu=x86-64-v4), not the host, so
recordings from different machines compare; sm_90a is added when ptxas is
on PATH (both recordings must agree on that). Paths and times are
normalized away.
"""
import argparse
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "models", "testing"))
import make_tiny_checkpoint as mk  # noqa: E402

# name -> (source, extra kiln-compile flags); sources: an .mlir file of the
# tree, or ("family", variant, fp8) for a tiny checkpoint.
CORPUS = {
    "tiny_mlp": (os.path.join(SRC, "models", "example", "tiny_mlp.mlir"), []),
    "deepseek_v3": (("deepseek_v3", None, False), ["--max-batch=2", "--max-seq=8"]),
    "deepseek_v3-fp8": (("deepseek_v3", None, True), ["--max-batch=1", "--max-seq=8"]),
    "deepseek_v3-quantize": (("deepseek_v3", None, False),
                             ["--max-batch=1", "--max-seq=8", "--quantize=fp8-block"]),
    "deepseek_v3-unfused": (("deepseek_v3", None, False), ["--max-batch=1", "--max-seq=8", "--no-fuse"]),
    "deepseek_v2": (("deepseek_v2", "group_limited_greedy", False), ["--max-batch=2", "--max-seq=8"]),
    "llama": (("llama", None, False), ["--max-batch=2", "--max-seq=8"]),
    "mixtral": (("mixtral", None, False), ["--max-batch=2", "--max-seq=8"]),
}
# Dumped stages that hold generated code or its inputs (not the raw import).
STAGES = re.compile(r"^\d+-(graph\.mlir|kernel\.mlir|cpu\.ll|.*\.ptx|ptxas-.*\.txt)$")


def normalize(text, roots):
    for root, name in roots:
        text = text.replace(root, name)
    # ptxas reports its own time.
    return re.sub(r"Compile time = [0-9.]+ ms", "Compile time = <T> ms", text)


def plan_summary(inspect_json):
    """What the plan says about the generated code; no paths, sizes of the
    file, hashes of weights or provenance."""
    info = json.loads(inspect_json)
    keep = {}
    keep["kernels"] = [{k: v for k, v in kr.items() if k in ("name", "source_ops", "config",
                                                              "num_buffers", "num_scalars",
                                                              "launches", "entry_points")}
                       for kr in info["kernels"]]
    keep["launches"] = info["launches"]
    keep["functions"] = info.get("functions")
    keep["memory"] = info["memory"]
    keep["inputs"], keep["outputs"] = info["inputs"], info["outputs"]
    keep["targets"] = [{k: v for k, v in t.items() if k != "binary_bytes"} for t in info["targets"]]
    return json.dumps(keep, indent=1, sort_keys=True)


def dump(out, bin_dir, only=None):
    os.makedirs(out, exist_ok=True)
    targets = "cpu,sm_90a" if shutil.which("ptxas") else "cpu"
    manifest = {"targets": targets, "artifacts": {}}
    work = tempfile.mkdtemp(prefix="kiln-replay-")
    env = dict(os.environ, SOURCE_DATE_EPOCH="0")
    try:
        for name, (source, flags) in CORPUS.items():
            if only and name != only:
                continue
            if isinstance(source, tuple):
                family, variant, fp8 = source
                ckpt = os.path.join(work, f"ckpt-{family}-{variant}-{fp8}")
                if not os.path.exists(ckpt):
                    mk.make_checkpoint(family, ckpt, seed=0, variant=variant, fp8=fp8)
                source = ckpt
            ir = os.path.join(work, name + "-ir")
            plan = os.path.join(work, name + ".kplan")
            subprocess.run([os.path.join(bin_dir, "kiln-compile"), source, "-o", plan,
                            f"--target={targets}", "--cpu=x86-64-v4", "--dump-ir-dir", ir, *flags],
                           check=True, env=env, capture_output=True, text=True)
            roots = [(work, "<WORK>"), (SRC, "<SRC>")]
            files = {f: open(os.path.join(ir, f)).read() for f in sorted(os.listdir(ir)) if STAGES.match(f)}
            files["plan.json"] = plan_summary(subprocess.run(
                [os.path.join(bin_dir, "kiln-inspect"), plan, "--json"],
                check=True, capture_output=True, text=True).stdout)
            for f, text in files.items():
                # Stage numbers shift when a stage is added; key by its name.
                key = f"{name}/{re.sub(r'^[0-9]+-', '', f)}"
                text = normalize(text, roots)
                path = os.path.join(out, key)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as fh:
                    fh.write(text)
                manifest["artifacts"][key] = hashlib.sha256(text.encode()).hexdigest()
            print(f"replay: {name}: {len(files)} artifacts", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


def compare(a, b, context_lines=40):
    ma = json.load(open(os.path.join(a, "manifest.json")))
    mb = json.load(open(os.path.join(b, "manifest.json")))
    if ma["targets"] != mb["targets"]:
        print(f"replay: the recordings cover different targets ({ma['targets']} vs {mb['targets']})")
        return 1
    differ = 0
    for key in sorted(set(ma["artifacts"]) | set(mb["artifacts"])):
        ha, hb = ma["artifacts"].get(key), mb["artifacts"].get(key)
        if ha == hb:
            continue
        differ += 1
        if ha is None or hb is None:
            print(f"replay: {key}: only in {'B' if ha is None else 'A'}")
            continue
        la = open(os.path.join(a, key)).read().splitlines()
        lb = open(os.path.join(b, key)).read().splitlines()
        diff = list(difflib.unified_diff(la, lb, f"A/{key}", f"B/{key}", lineterm="", n=2))
        print(f"replay: {key} differs ({sum(l.startswith(('+', '-')) for l in diff) - 2} lines)")
        print("\n".join(diff[:context_lines]))
    total = len(set(ma["artifacts"]) | set(mb["artifacts"]))
    print(f"replay: {total - differ} of {total} artifacts unchanged" + ("" if differ else "; no difference"))
    return 1 if differ else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("out")
    d.add_argument("--bin", default=os.environ.get("KILN_BIN", os.path.join(SRC, "build", "bin")))
    d.add_argument("--only", choices=sorted(CORPUS))
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args(argv)
    if args.cmd == "dump":
        dump(args.out, args.bin, args.only)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
