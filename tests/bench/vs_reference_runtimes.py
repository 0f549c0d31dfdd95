#!/usr/bin/env python3
"""Kiln against PyTorch and llama.cpp on this CPU, side by side (issue 11).

    python3 tests/bench/vs_reference_runtimes.py [--rounds 5] [--threads 1,2]
        [--models llama,deepseek] [--bin build/bin] [--cache ~/.cache/kiln-bench]
        [--max-load 0.5 | --allow-load] [--check-only] [--json FILE]

One command does everything, caching what it builds under --cache (reused by
later runs): a virtual environment with PyTorch (CPU use of PyPI's wheel),
transformers and safetensors; llama.cpp built with cmake (Release,
GGML_NATIVE) from the sources vendored in the llama-cpp-python sdist, plus
a small harness against libllama (tests/bench/llama_logits.cc) that prints
logits; the two models of issue 11 written with random weights through
transformers' classes in bf16 and saved as safetensors checkpoints; GGUF
files (bf16 with llama.cpp's convert_hf_to_gguf.py, Q8_0 with
llama-quantize); Kiln plans (kiln-compile, fp32 GEMMs,
--cpu-gemm-precision=bf16, and FP8: --quantize=fp8-block --fp8-lm-head).

Then:
1. Agreement: every position's logits of the timed prompt from every
   system (and of a shorter one through Kiln's decode path) against a
   float64 PyTorch eager reference (median relative L2 error under a
   tolerance per arithmetic, top-1 tokens agreeing); any failure stops the
   run with the numbers.
2. Speed: prefill of --prefill tokens (ms) and decode (ms/token over
   --decode tokens after a --decode-prompt-token prompt) for Kiln fp32,
   Kiln bf16, Kiln FP8, PyTorch bf16, llama.cpp bf16 and llama.cpp Q8_0, at each
   thread count; interleaved (every round runs every system once per thread
   count), medians over the rounds; a table of times, of Kiln's speed
   relative to each system, and of thread scaling. The load average is
   printed before and after; above --max-load the run is refused unless
   --allow-load is given (then the tables are marked as measured loaded).

docs/benchmarks.md ("Kiln against PyTorch and llama.cpp") describes the
method, the models and what a run needs. Not a test: CI does not run it.
"""
import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Pinned so that a rerun measures the same software.
TORCH_REQUIREMENTS = ["torch==2.13.0", "transformers==5.24.0", "safetensors==0.8.0", "numpy==2.4.6"]
LLAMA_CPP_PYTHON = "0.3.36"  # its sdist vendors llama.cpp (ggml 0.25.3, commit 0c1e570)
LLAMA_CMAKE_FLAGS = ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=ON",
                     "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                     "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF"]
LLAMA_TARGETS = ["llama-bench", "llama-quantize", "llama"]
IN_VENV = "KILN_BENCH_IN_VENV"

# The two models of issue 11. Written with transformers' classes; every field
# that changes the computation is explicit in config.json (transformers 5
# leaves out class defaults, and llama.cpp's converter reads the file).
MODELS = {
    "llama": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 2048, "num_hidden_layers": 8, "num_attention_heads": 32,
        "num_key_value_heads": 4, "head_dim": 64, "intermediate_size": 5632, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
    },
    # DeepSeek-V3's structure scaled to hidden 1024: per-head MLA dims and the
    # latent (kv_lora_rank 512 + qk_rope 64 = V3's 576 cached values per token
    # and layer) as V3, so the attention kernels see V3's shapes; 16 heads and
    # q_lora_rank 256 scale V3's 128 and 1536 with the hidden size (rounded to
    # a multiple of 128, the FP8 block); 64 routed experts of width 256 (V3:
    # 2048 at 7168) top-6 in 8 groups of which 4 are kept (V3: 256 experts,
    # top-8, 8 groups, 4 kept), 1 shared expert; 1 dense layer of width 2688
    # (V3: 3 of 61, 18432) then 3 MoE layers; no YaRN (V3's factor 40 serves
    # its 160k context). Every dimension is a multiple of 128, except the
    # 576-wide latent projection (as in V3).
    "deepseek": {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "hidden_size": 1024, "num_hidden_layers": 4, "first_k_dense_replace": 1,
        "intermediate_size": 2688, "moe_intermediate_size": 256, "n_routed_experts": 64,
        "num_experts_per_tok": 6, "n_shared_experts": 1, "n_group": 8, "topk_group": 4,
        "routed_scaling_factor": 2.5, "norm_topk_prob": True, "scoring_func": "sigmoid",
        "topk_method": "noaux_tc", "num_attention_heads": 16, "num_key_value_heads": 16,
        "q_lora_rank": 256, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "vocab_size": 32000, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_interleave": True, "hidden_act": "silu",
        "tie_word_embeddings": False, "attention_bias": False,
    },
}
SEED = 0

# Agreement tolerances on the last position's logits, as the relative L2
# error ||x - ref|| / ||ref|| against the float64 reference (the errors seen
# here are given in docs/benchmarks.md; each bound leaves a few times that).
# fp32: float32 arithmetic over bf16 weights (unit roundoff 6e-8, a few
# thousand-term sums). bf16: activations rounded to bf16 (unit roundoff
# 3.9e-3) somewhere, at the GEMM inputs, in the KV cache or everywhere
# (PyTorch bf16), compounded over the layers. q8_0: bf16 arithmetic plus
# 8-bit weights with a scale per 32 (llama.cpp Q8_0). fp8: DeepSeek's FP8
# scheme (Kiln --quantize=fp8-block --fp8-lm-head): e4m3 weights (unit
# roundoff 6.25e-2) with a scale per 128 x 128 and e4m3 activations with a
# scale per 1 x 128 at every projection's input, against the unquantized
# model: the error is the quantization's (0.14-0.21 on these random-weight
# models; the kernels' own FP8 numerics are tested against a float64 FP8
# reference, tests/e2e/fp8_reference.py).
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "q8_0": 1.5e-1, "fp8": 3.5e-1}
# The share of positions whose top-1 token must be in the reference's top 5
# (fp32: the top-1 itself at every position). fp8: an error of ~0.2 on
# near-flat random-weight logits, whose top-5 membership flips with any
# perturbation of the FP8 computation (a requantized activation crossing a
# rounding boundary), and measured (llama, 64 decode positions) 94 % for
# the exact plan, 88 % for the default one (GEMV rows reading e4m3
# subnormal weights as zero, docs/fp8.md) at the same median error, and
# 81-100 % between such plans over 16; a wrong kernel gives ~0 %.
TOP5_SHARE = {"bf16": 0.9, "q8_0": 0.9, "fp8": 0.75}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, both=False, **kw):
    """Runs a command; on failure raises with its output (never a silent failure).
    Its stdout, or with `both` stdout then stderr (kiln-run's timings)."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n"
                           f"{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p.stdout + p.stderr if both else p.stdout


def loadavg():
    return float(open("/proc/loadavg").read().split()[0])


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def stamp_ok(path, content):
    return os.path.exists(path) and open(path).read() == content


def write_stamp(path, content):
    with open(path + ".tmp", "w") as f:
        f.write(content)
    os.replace(path + ".tmp", path)


# --------------------------------------------------------------------------
# Setup: virtual environment, llama.cpp
# --------------------------------------------------------------------------

def llama_src(cache):
    return os.path.join(cache, "src", f"llama_cpp_python-{LLAMA_CPP_PYTHON}", "vendor", "llama.cpp")


def ensure_sdist(cache):
    src = llama_src(cache)
    if os.path.exists(os.path.join(src, "convert_hf_to_gguf.py")):
        return src
    dl = os.path.join(cache, "src")
    os.makedirs(dl, exist_ok=True)
    tgz = os.path.join(dl, f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz")
    if not os.path.exists(tgz):
        log(f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON} sdist (77 MB)")
        run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "--no-deps",
             "--no-binary", ":all:", "-d", dl])
    with tempfile.TemporaryDirectory(dir=dl) as tmp:
        with tarfile.open(tgz) as t:
            try:
                t.extractall(tmp, filter="data")
            except TypeError:  # Python < 3.11.4: no extraction filters
                t.extractall(tmp)
        shutil.rmtree(os.path.join(dl, f"llama_cpp_python-{LLAMA_CPP_PYTHON}"), ignore_errors=True)
        os.replace(os.path.join(tmp, f"llama_cpp_python-{LLAMA_CPP_PYTHON}"),
                   os.path.join(dl, f"llama_cpp_python-{LLAMA_CPP_PYTHON}"))
    return src


def ensure_venv(cache):
    """The virtual environment (created once, reinstalled when the pins change)."""
    venv = os.path.join(cache, "venv")
    py = os.path.join(venv, "bin", "python3")
    src = ensure_sdist(cache)
    want = "\n".join(TORCH_REQUIREMENTS + [f"gguf from {src}/gguf-py"]) + "\n"
    stamp = os.path.join(venv, "kiln-bench-requirements.txt")
    if os.path.exists(py) and stamp_ok(stamp, want):
        return py
    if not os.path.exists(py):
        log(f"creating the virtual environment {venv}")
        run([sys.executable, "-m", "venv", venv])
    log("installing " + " ".join(TORCH_REQUIREMENTS) + " and gguf (PyPI's torch wheel pulls ~4 GB of "
        "CUDA libraries it does not use here; a few minutes)")
    run([py, "-m", "pip", "install", "-q", *TORCH_REQUIREMENTS])
    run([py, "-m", "pip", "install", "-q", os.path.join(src, "gguf-py")])
    write_stamp(stamp, want)
    return py


def ensure_llama_cpp(cache, jobs):
    """llama.cpp's tools and libllama, plus the logits harness; returns the bin folder."""
    src = ensure_sdist(cache)
    build = os.path.join(cache, "llama-build")
    bindir = os.path.join(build, "bin")
    harness = os.path.join(bindir, "kiln-llama-logits")
    harness_src = os.path.join(HERE, "llama_logits.cc")
    want = json.dumps({"version": LLAMA_CPP_PYTHON, "flags": LLAMA_CMAKE_FLAGS,
                       "harness": hashlib.sha256(open(harness_src, "rb").read()).hexdigest()})
    stamp = os.path.join(build, "kiln-bench-stamp.json")
    if stamp_ok(stamp, want) and all(os.path.exists(os.path.join(bindir, t)) for t in
                                     ["llama-bench", "llama-quantize", "kiln-llama-logits"]):
        return bindir
    log(f"building llama.cpp in {build} (ninja -j{jobs}; on 2 busy cores this takes 20-40 minutes "
        "the first time)")
    t0 = time.time()
    run(["cmake", "-G", "Ninja", "-S", src, "-B", build, *LLAMA_CMAKE_FLAGS])
    run(["ninja", "-C", build, f"-j{jobs}", *LLAMA_TARGETS])
    lib = os.path.join(bindir, "libllama.so")
    if not os.path.exists(lib):
        raise RuntimeError(f"the llama.cpp build did not produce {lib}")
    run(["c++", "-O2", "-std=c++17", "-Wall", "-Wextra", harness_src, "-o", harness,
         "-I", os.path.join(src, "include"), "-I", os.path.join(src, "ggml", "include"),
         "-L", bindir, "-lllama", f"-Wl,-rpath,{bindir}"])
    log(f"llama.cpp built in {time.time() - t0:.0f} s")
    write_stamp(stamp, want)
    return bindir


# --------------------------------------------------------------------------
# Models: checkpoints (transformers), GGUF (llama.cpp), plans (Kiln)
# --------------------------------------------------------------------------

def write_checkpoint(name, out_dir):
    """Random weights through transformers' class, in bf16, saved as safetensors."""
    import torch
    import transformers
    cfg = MODELS[name]
    want = json.dumps({"config": cfg, "seed": SEED, "transformers": transformers.__version__,
                       "torch": torch.__version__}, sort_keys=True)
    stamp = os.path.join(out_dir, "kiln-bench-stamp.json")
    if stamp_ok(stamp, want):
        return
    log(f"writing the {name} checkpoint to {out_dir}")
    shutil.rmtree(out_dir, ignore_errors=True)
    torch.manual_seed(SEED)
    config_cls = transformers.AutoConfig.for_model(cfg["model_type"]).__class__
    kwargs = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type")}
    config = config_cls(**kwargs)
    model_cls = getattr(transformers, cfg["architectures"][0])
    model = model_cls(config)
    with torch.no_grad():
        for mod_name, mod in model.named_modules():
            # RMSNorm weights initialize to ones: random ones catch a missing or misplaced norm.
            if mod_name.endswith("norm") or mod_name.endswith("layernorm"):
                mod.weight.normal_(1.0, 0.1)
            if hasattr(mod, "e_score_correction_bias"):
                mod.e_score_correction_bias.normal_(0.0, 0.05)
    model = model.to(torch.bfloat16)
    # DeepSeek's checkpoints keep the routing bias in float32.
    for mod in model.modules():
        if hasattr(mod, "e_score_correction_bias"):
            mod.e_score_correction_bias = torch.nn.Buffer(mod.e_score_correction_bias.to(torch.float32))
    os.makedirs(out_dir)
    model.save_pretrained(out_dir)
    # Explicit fields: transformers 5 leaves class defaults out; the readers
    # here (Kiln, llama.cpp's converter) must not depend on guessing them.
    path = os.path.join(out_dir, "config.json")
    saved = json.load(open(path))
    for k, v in cfg.items():
        if k == "rope_theta":
            continue  # saved in rope_parameters
        saved[k] = v
    with open(path, "w") as f:
        json.dump(saved, f, indent=2)
    write_stamp(stamp, want)


def convert_gguf(py, src, bindir, ck, out_dir):
    """bf16 GGUF with convert_hf_to_gguf.py, then Q8_0 with llama-quantize."""
    bf16 = os.path.join(out_dir, "model-bf16.gguf")
    q8 = os.path.join(out_dir, "model-q8_0.gguf")
    want = open(os.path.join(ck, "kiln-bench-stamp.json")).read() + LLAMA_CPP_PYTHON
    stamp = os.path.join(out_dir, "gguf-stamp.txt")
    if stamp_ok(stamp, want) and os.path.exists(bf16) and os.path.exists(q8):
        return {"bf16": bf16, "q8_0": q8}
    log(f"converting {ck} to GGUF (bf16, Q8_0)")
    os.makedirs(out_dir, exist_ok=True)
    run([py, os.path.abspath(__file__), "--internal-convert", src, ck, bf16 + ".tmp"])
    os.replace(bf16 + ".tmp", bf16)
    run([os.path.join(bindir, "llama-quantize"), bf16, q8 + ".tmp", "Q8_0"])
    os.replace(q8 + ".tmp", q8)
    write_stamp(stamp, want)
    return {"bf16": bf16, "q8_0": q8}


def internal_convert(src, ck, out):
    """Runs llama.cpp's converter; the random checkpoints have no tokenizer,
    so both models take llama.cpp's bundled LLaMA SentencePiece vocabulary
    (32000 tokens, models/ggml-vocab-llama-spm.gguf). Token ids are fed
    directly everywhere, so the vocabulary only has to load."""
    sys.path.insert(0, src)  # _set_vocab_builtin finds models/ through sys.path[0]
    sys.argv = ["convert_hf_to_gguf.py", ck, "--outtype", "bf16", "--outfile", out]
    import convert_hf_to_gguf
    from conversion import get_model_class
    for arch in ("LlamaForCausalLM", "DeepseekV3ForCausalLM"):
        get_model_class(arch).set_vocab = (
            lambda self: self._set_vocab_builtin("llama-spm", self.hparams["vocab_size"]))
    convert_hf_to_gguf.main()


# --------------------------------------------------------------------------
# Systems. Each has .name, .arith (a TOLERANCE key), .logits(model, tokens)
# -> float64 [P, V], the logits of the prompt's last P positions (all of them,
# or the last one where that is all a system returns), and .measure(model, threads, reps,
# prefill_tokens, decode_prompt, n_decode) -> (prefill ms, decode ms/token).
# --------------------------------------------------------------------------

class Kiln:
    """Kiln through kiln-compile and kiln-run (the one place that knows them)."""

    VARIANTS = {"f32": [], "bf16": ["--cpu-gemm-precision=bf16"],
                "fp8": ["--cpu-gemm-precision=bf16", "--quantize=fp8-block", "--fp8-lm-head"]}

    compiled = {}  # (checkpoint, flags) -> plan, so identical plans compile once

    def __init__(self, bin_dir, variant, work, max_seq, kv_cache=None, logits="last"):
        self.bin, self.variant, self.work, self.max_seq = bin_dir, variant, work, max_seq
        self.flags = list(self.VARIANTS[variant]) + ([f"--kv-cache-dtype={kv_cache}"] if kv_cache else [])
        self.name = f"kiln-{variant}" + (f" ({kv_cache} cache)" if kv_cache else "")
        self.arith = ("fp32" if variant == "f32" and kv_cache == "f32" else
                      "fp8" if variant == "fp8" else "bf16")
        self.plans = {}
        for tool in ("kiln-compile", "kiln-run"):
            if not os.access(os.path.join(bin_dir, tool), os.X_OK):
                raise RuntimeError(f"{os.path.join(bin_dir, tool)} not found: build Kiln first "
                                   "(bash scripts/build.sh) or give --bin")
        help_text = run([os.path.join(bin_dir, "kiln-compile"), "--help"])
        # Forward returns every position's logits today. Once kiln-compile has
        # --logits, timed plans ask for the last position only (what the other
        # systems compute) and the check's plans for all of them.
        if "--logits=" in help_text:
            self.flags.append(f"--logits={logits}")

    def prepare(self, model, ck):
        key = (ck, tuple(self.flags))
        if key not in Kiln.compiled:
            tag = re.sub(r"[^a-z0-9]+", "-", " ".join([self.name, *self.flags]).lower()).strip("-")
            plan = os.path.join(self.work, f"{model}-{tag}-{self.max_seq}.kplan")
            run([os.path.join(self.bin, "kiln-compile"), ck, "-o", plan, f"--max-seq={self.max_seq}",
                 "--max-batch=1", *self.flags])
            Kiln.compiled[key] = plan
        self.plans[model] = Kiln.compiled[key]

    def _kiln_run(self, model, args):
        return run([os.path.join(self.bin, "kiln-run"), self.plans[model], *args], both=True)

    def logits(self, model, tokens):
        import numpy as np
        tok = os.path.join(self.work, f"{model}-check-tokens.npy")
        out = os.path.join(self.work, f"{model}-check-logits.npy")
        np.save(tok, np.asarray([tokens], dtype=np.int32))
        self._kiln_run(model, ["--input", f"tokens={tok}", "--output", f"logits={out}", "--threads", "2"])
        x = np.load(out)
        if x.ndim == 3:      # [B, S, V]: every position
            return x[0].astype(np.float64)
        if x.ndim == 2:      # [B, V]: the last position
            return x.astype(np.float64)
        raise RuntimeError(f"Kiln's logits have shape {x.shape}: expected [1, S, V] or [1, V]")

    def decode_logits(self, model, tokens):
        """The prompt through decode one token at a time (the decode kernels)."""
        import numpy as np
        tok = os.path.join(self.work, f"{model}-check-tokens.npy")
        out = os.path.join(self.work, f"{model}-check-decode-logits.npy")
        np.save(tok, np.asarray([tokens], dtype=np.int32))
        self._kiln_run(model, ["--input", f"tokens={tok}", "--decode-each", out])
        return np.load(out)[0].astype(np.float64)

    def measure(self, model, threads, reps, prefill_tokens, decode_prompt, n_decode):
        import numpy as np
        pt = os.path.join(self.work, f"{model}-prefill-{len(prefill_tokens)}.npy")
        dt = os.path.join(self.work, f"{model}-decode-prompt-{len(decode_prompt)}.npy")
        np.save(pt, np.asarray([prefill_tokens], dtype=np.int32))
        np.save(dt, np.asarray([decode_prompt], dtype=np.int32))
        # One warm-up run (the first maps the weights), then reps; kiln-run's median.
        out = self._kiln_run(model, ["--input", f"tokens={pt}", "--threads", str(threads),
                                     "--repeat", str(reps + 1)])
        prefill = float(re.search(r"median ([0-9.]+) ms", out).group(1))
        # --generate N: the prompt's forward, then N - 1 decode steps.
        out = self._kiln_run(model, ["--input", f"tokens={dt}", "--generate", str(n_decode + 1),
                                     "--ignore-eos", "--threads", str(threads)])
        m = re.search(r"decode: (\d+) step\(s\), median ([0-9.]+) ms/token", out)
        if not m or int(m.group(1)) != n_decode:
            raise RuntimeError(f"kiln-run --generate did not run {n_decode} decode steps:\n{out}")
        return prefill, float(m.group(2))


class Torch:
    """PyTorch eager through transformers, in-process (models loaded once)."""

    def __init__(self, dtype_name, checkpoints):
        import torch
        self.torch = torch
        self.dtype = {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
        self.name = f"torch-{dtype_name}"
        self.arith = {"fp64": "fp32", "fp32": "fp32", "bf16": "bf16"}[dtype_name]
        self.checkpoints = checkpoints
        self.models = {}

    def model(self, name):
        if name not in self.models:
            import transformers
            # grouped_mm (transformers' default for the experts) has no float64 kernel.
            extra = {"experts_implementation": "eager"} if self.dtype == self.torch.float64 else {}
            self.models[name] = transformers.AutoModelForCausalLM.from_pretrained(
                self.checkpoints[name], dtype=self.dtype, **extra).eval()
        return self.models[name]

    def release(self):
        import gc
        self.models.clear()
        gc.collect()

    def logits(self, model, tokens):
        torch = self.torch
        torch.set_num_threads(2)
        with torch.inference_mode():
            out = self.model(model)(torch.tensor([tokens]), use_cache=False)
        return out.logits[0].to(torch.float64).numpy()

    def measure(self, model, threads, reps, prefill_tokens, decode_prompt, n_decode):
        torch = self.torch
        torch.set_num_threads(threads)
        m = self.model(model)
        clock = time.perf_counter
        with torch.inference_mode():
            ids = torch.tensor([prefill_tokens])
            times = []
            for r in range(reps + 1):  # the first is a warm-up
                t0 = clock()
                m(ids, use_cache=True, logits_to_keep=1)
                times.append((clock() - t0) * 1e3)
            prefill = statistics.median(times[1:])
            out = m(torch.tensor([decode_prompt]), use_cache=True, logits_to_keep=1)
            cache, nxt = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
            steps = []
            for _ in range(n_decode):
                t0 = clock()
                out = m(nxt, cache=cache, use_cache=True)
                cache, nxt = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
                steps.append((clock() - t0) * 1e3)
        return prefill, statistics.median(steps)


class LlamaCpp:
    """llama.cpp: llama-bench for time, the libllama harness for logits.

    Q8_0 runs without the CPU's extra weight buffers (--repack 0): with them
    this build puts Q8_0 weights in its AMX buffer, whose kernel dies of
    SIGILL on its first tile instruction here (tilezero in
    tinygemm_kernel_amx: the tile configuration is not in force; upstream PR
    ggml-org/llama.cpp#26954), and with which the DeepSeek model's graph
    stops at the scheduler's GGML_ASSERT(*cur_backend_id != -1). Without it
    Q8_0 takes the AVX512-VNNI kernels. bf16 weights never use those buffers."""

    def __init__(self, bindir, quant, ggufs, work):
        self.bin, self.quant, self.ggufs, self.work = bindir, quant, ggufs, work
        self.name = f"llama.cpp-{quant}"
        self.arith = quant
        self.repack = "0" if quant == "q8_0" else "1"

    def logits(self, model, tokens):
        import numpy as np
        out = os.path.join(self.work, f"{model}-{self.quant}-llama-logits.npy")
        run([os.path.join(self.bin, "kiln-llama-logits"), self.ggufs[model][self.quant],
             ",".join(map(str, tokens)), out, "2", self.repack])
        return np.load(out).astype(np.float64)

    def _bench(self, model, threads, reps, args):
        out = run([os.path.join(self.bin, "llama-bench"), "-m", self.ggufs[model][self.quant],
                   "-t", str(threads), "-r", str(reps), "--repack", self.repack, "-o", "json", *args])
        res = json.loads(out)
        if len(res) != 1:
            raise RuntimeError(f"llama-bench gave {len(res)} results, expected 1:\n{out}")
        return res[0]["samples_ns"]

    def measure(self, model, threads, reps, prefill_tokens, decode_prompt, n_decode):
        # llama-bench feeds random tokens of its own; the depth (-d) prompt is
        # processed before each timed repetition and not timed.
        pp = self._bench(model, threads, reps, ["-p", str(len(prefill_tokens)), "-n", "0"])
        tg = self._bench(model, threads, max(1, reps // 2),
                         ["-p", "0", "-n", str(n_decode), "-d", str(len(decode_prompt))])
        return statistics.median(pp) / 1e6, statistics.median(tg) / 1e6 / n_decode


# --------------------------------------------------------------------------
# Agreement and speed
# --------------------------------------------------------------------------

def check_agreement(model, what, systems, reference, tokens):
    """Every position's logits of `tokens` from every system against the
    float64 reference. Per position, the relative L2 error
    ||x - ref|| / ||ref||; a system passes when the median over the positions
    is within the tolerance of its arithmetic and its top-1 token is the
    reference's at every position (float32 arithmetic) or within the
    reference's top 5 at >= 90 % of them (bf16, Q8_0; FP8 75 %,
    TOP5_SHARE). The median, because
    bf16 noise flips a near-tie in the experts' routing at a few positions
    of the MoE model, and such a position's logits move by ~0.1 (in every
    bf16 system, PyTorch's included); a wrong kernel moves most positions.
    Returns the failures."""
    import numpy as np
    ref = reference.logits(model, tokens)
    order = np.argsort(ref, axis=1)[:, ::-1]
    rows, failed = [], []
    for s, get in systems:
        x = get(model, tokens)
        p = x.shape[0]
        if x.ndim != 2 or x.shape[1] != ref.shape[1] or p > ref.shape[0]:
            failed.append(f"{what}, {s.name}: logits of shape {x.shape}, the reference's are {ref.shape}")
            continue
        r, top = ref[-p:], order[-p:]
        err = np.linalg.norm(x - r, axis=1) / np.linalg.norm(r, axis=1)
        top1 = np.argmax(x, axis=1)
        exact = float(np.mean(top1 == top[:, 0]))
        in5 = float(np.mean([t in row[:5] for t, row in zip(top1, top)]))
        tol = TOLERANCE[s.arith]
        med = float(np.median(err))
        top_ok = exact == 1.0 if s.arith == "fp32" else in5 >= TOP5_SHARE[s.arith]
        ok = bool(np.all(np.isfinite(x))) and med <= tol and top_ok
        rows.append((s.name, p, med, float(err.max()), float(err[-1]), exact, in5, tol, ok))
        if not ok:
            failed.append(f"{what}, {s.name}: median relative L2 error {med:.2e} over {p} positions "
                          f"(tolerance {tol:.2g}), top-1 equal at {exact:.0%}, in the reference's top 5 at "
                          f"{in5:.0%}")
    print(f"\n{model}, {what}: logits of a {len(tokens)}-token prompt against PyTorch float64 eager "
          f"(relative L2 error per position)\n")
    print("| system | positions | median error | max error | last position | top-1 equal | "
          "in top 5 | tolerance (median) | |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, p, med, mx, last, exact, in5, tol, ok in rows:
        print(f"| {name} | {p} | {med:.2e} | {mx:.2e} | {last:.2e} | {exact:.0%} | {in5:.0%} | {tol:.2g} | "
              f"{'ok' if ok else 'FAIL'} |")
    sys.stdout.flush()
    return failed


def bench(models, systems, args, tokens):
    """Round robin: every round runs every system once per thread count."""
    times = {}
    t0 = time.time()
    for r in range(args.rounds):
        for model in models:
            for t in args.threads:
                for s in systems:
                    p, d = s.measure(model, t, args.reps, tokens[model]["prefill"], tokens[model]["decode"],
                                     args.decode)
                    times.setdefault((model, t, s.name), []).append((p, d))
        log(f"round {r + 1}/{args.rounds} done after {time.time() - t0:.0f} s (load {loadavg():.2f})")
    return {k: (statistics.median(p for p, _ in v), statistics.median(d for _, d in v), v)
            for k, v in times.items()}


def print_tables(models, systems, args, med, note):
    names = [s.name for s in systems]
    kilns = [n for n in names if n.startswith("kiln-")]
    others = [n for n in names if not n.startswith("kiln-")]
    print(f"\nTimes, medians of {args.rounds} interleaved rounds{note}: prefill of {args.prefill} tokens (ms), "
          f"decode (ms/token over {args.decode} tokens after {args.decode_prompt})\n")
    print("| model | test | threads | " + " | ".join(names) + " |")
    print("|" + "---|" * (3 + len(names)))
    for model in models:
        for test, i in (("prefill", 0), ("decode", 1)):
            for t in args.threads:
                cells = [f"{med[(model, t, n)][i]:.1f}" for n in names]
                print(f"| {model} | {test} | {t} | " + " | ".join(cells) + " |")
    print("\nKiln's speed relative to each system (its time / Kiln's time; > 1: Kiln is faster)\n")
    print("| model | test | threads | Kiln | " + " | ".join(f"vs {n}" for n in others) + " |")
    print("|" + "---|" * (4 + len(others)))
    for model in models:
        for test, i in (("prefill", 0), ("decode", 1)):
            for t in args.threads:
                for k in kilns:
                    cells = [f"{med[(model, t, n)][i] / med[(model, t, k)][i]:.2f}" for n in others]
                    print(f"| {model} | {test} | {t} | {k} | " + " | ".join(cells) + " |")
    if len(args.threads) > 1:
        lo, hi = min(args.threads), max(args.threads)
        print(f"\nThread scaling: time at {lo} thread(s) / time at {hi}\n")
        print("| model | test | " + " | ".join(names) + " |")
        print("|" + "---|" * (2 + len(names)))
        for model in models:
            for test, i in (("prefill", 0), ("decode", 1)):
                cells = [f"{med[(model, lo, n)][i] / med[(model, hi, n)][i]:.2f}" for n in names]
                print(f"| {model} | {test} | " + " | ".join(cells) + " |")
    sys.stdout.flush()


def main_in_venv(args):
    import numpy as np
    import torch
    import transformers
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    cache = args.cache
    if loadavg() > args.max_load and not args.allow_load and not args.check_only:
        log(f"note: the load average is {loadavg():.2f} (> --max-load {args.max_load}); the timing "
            "after the agreement check will be refused unless it drops (or --allow-load is given)")
    src = ensure_sdist(cache)
    bindir = ensure_llama_cpp(cache, args.jobs)
    work = os.path.join(cache, "work")
    os.makedirs(work, exist_ok=True)
    cks, ggufs = {}, {}
    for m in args.models:
        cks[m] = os.path.join(cache, "models", m)
        write_checkpoint(m, cks[m])
        ggufs[m] = convert_gguf(sys.executable, src, bindir, cks[m], os.path.join(cache, "gguf", m))

    max_seq = max(args.prefill, args.decode_prompt + args.decode, args.check_tokens)
    kiln = {v: Kiln(args.bin, v, work, max_seq) for v in ("f32", "bf16", "fp8")}         # timed
    kiln_check = [Kiln(args.bin, "f32", work, max_seq, kv_cache="f32", logits="all"),
                  *(Kiln(args.bin, v, work, max_seq, logits="all") for v in ("f32", "bf16", "fp8"))]
    for m in args.models:
        for k in (*kiln.values(), *kiln_check):
            k.prepare(m, cks[m])
    llama = {q: LlamaCpp(bindir, q, ggufs, work) for q in ("bf16", "q8_0")}

    tokens = {}
    for m in args.models:  # a stream per model: the prompts do not depend on --models
        rng = np.random.default_rng([SEED, list(MODELS).index(m)])
        tokens[m] = {what: rng.integers(0, MODELS[m]["vocab_size"], n).tolist() for what, n in
                     (("check", args.check_tokens), ("prefill", args.prefill), ("decode", args.decode_prompt))}

    # 1. Agreement: every system's forward on the timed prefill prompt (so
    # Kiln's AMX GEMMs, which need >= 16 rows per thread, are the ones
    # checked), and Kiln's decode path (kiln-run --decode-each) on a shorter one.
    failed = []
    torch_bf16 = Torch("bf16", cks)  # checked, then timed
    for m in args.models:
        ref = Torch("fp64", cks)
        fp32 = Torch("fp32", cks)
        forward = [(s, s.logits) for s in (*kiln_check, fp32, torch_bf16, llama["bf16"], llama["q8_0"])]
        decode = [(s, s.decode_logits) for s in kiln_check]
        failed += [f"{m}: {f}" for f in check_agreement(m, "prefill", forward, ref, tokens[m]["prefill"])]
        failed += [f"{m}: {f}" for f in check_agreement(m, "decode", decode, ref, tokens[m]["check"])]
        ref.release()
        fp32.release()
    if failed:
        print("\nAGREEMENT FAILED, no speed measured:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    if args.check_only:
        return 0

    # 2. Speed.
    before, up_before = loadavg(), uptime()
    log(f"before: {up_before}")
    if before > args.max_load and not args.allow_load:
        print(f"refusing to measure: the 1-minute load average is {before:.2f} (> --max-load "
              f"{args.max_load}); wait for an idle machine or pass --allow-load", file=sys.stderr)
        return 3
    systems = [kiln["f32"], kiln["bf16"], kiln["fp8"], torch_bf16, llama["bf16"], llama["q8_0"]]
    t0 = time.time()
    med = bench(args.models, systems, args, tokens)
    after, up_after = loadavg(), uptime()
    log(f"after: {up_after}")
    loaded = max(before, after) > args.max_load
    note = f" (MACHINE LOADED: load average {before:.2f} before, {after:.2f} after)" if loaded else \
           f" (load average {before:.2f} before, {after:.2f} after)"
    if loaded:
        log(f"WARNING: measured on a loaded machine (load {before:.2f} -> {after:.2f}): ratios measured "
            "interleaved are meaningful, absolute times and thread scaling are not")
    print(f"\n{datetime.date.today()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, llama.cpp from llama-cpp-python {LLAMA_CPP_PYTHON}; "
          f"benchmark {time.time() - t0:.0f} s\nuptime before: {up_before}\nuptime after:  {up_after}")
    print_tables(args.models, systems, args, med, note)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": str(datetime.date.today()), "load_before": before, "load_after": after,
                       "rounds": args.rounds, "threads": args.threads,
                       "results": [{"model": m, "threads": t, "system": n, "prefill_ms": p, "decode_ms": d,
                                    "samples": s} for (m, t, n), (p, d, s) in med.items()]}, f, indent=1)
    return 0


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--internal-convert":
        internal_convert(*sys.argv[2:5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--reps", type=int, default=3, help="prefill repetitions per round and system (default 3)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default="llama,deepseek")
    ap.add_argument("--prefill", type=int, default=128, help="prefill tokens (default 128)")
    ap.add_argument("--decode", type=int, default=32, help="decode steps timed (default 32)")
    ap.add_argument("--decode-prompt", type=int, default=8, help="prompt before decode (default 8)")
    ap.add_argument("--check-tokens", type=int, default=16, help="prompt of the check of Kiln's decode path (default 16)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"), help="Kiln's tools")
    ap.add_argument("--cache", default=os.environ.get("KILN_BENCH_CACHE",
                                                      os.path.expanduser("~/.cache/kiln-bench")))
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="build jobs for llama.cpp")
    ap.add_argument("--max-load", type=float, default=0.5, help="refuse above this 1-minute load average")
    ap.add_argument("--allow-load", action="store_true", help="measure anyway, marking the tables as loaded")
    ap.add_argument("--check-only", action="store_true", help="build, convert and check agreement only")
    ap.add_argument("--json", help="also write the results (every sample) to this file")
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    args.models = args.models.split(",")
    for m in args.models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r} (expected {', '.join(MODELS)})")
    if args.rounds < 1 or args.reps < 1 or args.decode < 1 or args.prefill < 1 or args.decode_prompt < 1:
        ap.error("--rounds, --reps, --prefill, --decode and --decode-prompt must be >= 1")
    args.bin = os.path.abspath(args.bin)
    args.cache = os.path.abspath(args.cache)
    if os.environ.get(IN_VENV) != "1":
        os.makedirs(args.cache, exist_ok=True)
        py = ensure_venv(args.cache)
        env = dict(os.environ, **{IN_VENV: "1"})
        os.execve(py, [py, os.path.abspath(__file__), *sys.argv[1:]], env)
    return main_in_venv(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print(f"vs_reference_runtimes: error: {e}", file=sys.stderr)
        sys.exit(1)
