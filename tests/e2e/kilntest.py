"""Shared plumbing of the end-to-end tests: where the tools and the sources
are, running a tool, writing a checkpoint file. No reference numerics here.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("KILN_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
BIN = os.environ.get("KILN_BIN", os.path.join(SRC, "build", "bin"))
for _p in (HERE, os.path.join(SRC, "models", "testing")):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def host_flags():
    """The host CPU's feature flags as Linux reports them (/proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_FLAGS = host_flags()
# The optimized CPU emitters' instruction set on this host, as the kernel
# configs name it: AVX-512 (F, BW, VL), else AVX2 with FMA and F16C, else
# none (the reference emitter); and whether AMX-BF16 tiles run here.
HOST_ISA = ("avx512" if {"avx512f", "avx512bw", "avx512vl"} <= _FLAGS
            else "avx2" if {"avx2", "fma", "f16c"} <= _FLAGS else None)
HOST_AMX = {"amx_tile", "amx_bf16", "avx512_bf16"} <= _FLAGS and HOST_ISA == "avx512"
HOST_AVX512_BF16 = "avx512_bf16" in _FLAGS and HOST_ISA == "avx512"
HOST_AVX512_VBMI = "avx512vbmi" in _FLAGS and HOST_ISA == "avx512"


def _host_vendor():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


# AMD Zen hosts resolve to a znver* CPU (the emitters' CpuTarget::zen).
HOST_ZEN = _host_vendor() == "AuthenticAMD" and HOST_ISA == "avx512"

# The CPUs the tests compile for besides the host, with the optimized
# emitters' instruction set there, the tile path --cpu-gemm-precision=bf16
# takes there and whether this host runs their code: sapphirerapids
# (AMX-BF16), cooperlake (AVX-512-BF16 without AMX, as AMD Zen 4 and 5; its
# features are a subset of theirs and of Sapphire Rapids'), x86-64-v4
# (AVX-512 alone), x86-64-v3 (AVX2 + FMA).
_CPUS = {"sapphirerapids": ("avx512", "amx-bf16", HOST_AMX),
         "cooperlake": ("avx512", "avx512-bf16", HOST_AVX512_BF16),
         "x86-64-v4": ("avx512", None, HOST_ISA == "avx512"),
         "x86-64-v3": ("avx2", None, HOST_ISA is not None)}


def target_isa(cpu=None):
    """The optimized CPU emitters' instruction set on `cpu` (None: the host),
    as kernel configs name it."""
    return HOST_ISA if cpu is None else _CPUS[cpu][0]


def bf16_tiles(cpu=None):
    """The bf16 tile path of the GEMM emitters on `cpu` (None: the host), as
    kernel configs name it: "amx-bf16", "avx512-bf16", or None."""
    if cpu is None:
        return "amx-bf16" if HOST_AMX else "avx512-bf16" if HOST_AVX512_BF16 else None
    return _CPUS[cpu][1]


def host_runs(cpu=None):
    """Whether code compiled for `cpu` runs on this host."""
    return cpu is None or _CPUS[cpu][2]


def tool(name):
    return os.path.join(BIN, name)


def run(args, check=True):
    p = subprocess.run(args, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


class TokensCase(unittest.TestCase):
    """A class-wide temporary folder and random tokens [BATCH, SEQ] (ids <
    128, the tiny checkpoints' vocabulary) saved there as tokens.npy."""
    BATCH, SEQ, PREFIX = 2, 6, "kiln-"
    # Flags of every compile(): suites that compare fp32 compute with the
    # float64 references use f32 KV caches (test_kv_cache.py covers bf16).
    COMPILE_FLAGS = ()
    # compile()'s --logits: every position's, compared with the reference
    # position by position (the default, last, is tested in
    # test_request_work.py).
    LOGITS = "all"

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix=cls.PREFIX)
        cls.tokens = np.random.default_rng(3).integers(
            0, 128, size=(cls.BATCH, cls.SEQ)).astype(np.int32)
        cls.tokens_path = os.path.join(cls.tmp, "tokens.npy")
        np.save(cls.tokens_path, cls.tokens)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compile(self, ckpt, extra=()):
        """kiln-compile CKPT for [BATCH, SEQ] -> CKPT.kplan."""
        plan = ckpt + ".kplan"
        run([tool("kiln-compile"), ckpt, "-o", plan, f"--max-batch={self.BATCH}",
             f"--max-seq={self.SEQ}", f"--logits={self.LOGITS}", *self.COMPILE_FLAGS, *extra])
        return plan

    def run_forward(self, plan, tokens_path=None):
        """The plan's logits for tokens.npy (or `tokens_path`)."""
        out = plan + ".logits.npy"
        run([tool("kiln-run"), plan, "--input", f"tokens={tokens_path or self.tokens_path}",
             "--output", f"logits={out}"])
        return np.load(out)


def write_tensors(path, named_arrays):
    """Writes (name, array) pairs with the generator's safetensors writer;
    uint8 arrays are e4m3 bytes."""
    import make_tiny_checkpoint as mk
    codes = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.uint8): "F8_E4M3"}
    mk.write_safetensors(path, [(n, codes[a.dtype], a.shape, np.ascontiguousarray(a).tobytes())
                                for n, a in named_arrays])


class KernelModel:
    """Compiles a small kiln-dialect model and runs it through kiln-run."""

    def __init__(self, tmp, name, text, weights=None, flags=()):
        self.tmp = tmp
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        if weights:
            write_tensors(os.path.join(self.dir, "w.safetensors"), weights)
            text = text.replace("module {", 'module attributes {kiln.weights = "w.safetensors"} {', 1)
        self.mlir = os.path.join(self.dir, "m.mlir")
        with open(self.mlir, "w") as f:
            f.write(text)
        self.plan = os.path.join(self.dir, "m.kplan")
        run([tool("kiln-compile"), self.mlir, "-o", self.plan, *flags])

    def __call__(self, inputs, outputs, repeat=1, threads=None):
        """Runs the plan `repeat` times in one session (on `threads` CPU
        threads, or the runtime's default); the last run's outputs."""
        args = [tool("kiln-run"), self.plan, "--repeat", str(repeat)]
        if threads is not None:
            args += ["--threads", str(threads)]
        for name, arr in inputs.items():
            path = os.path.join(self.dir, f"in_{name}.npy")
            np.save(path, arr)
            args += ["--input", f"{name}={path}"]
        for name in outputs:
            args += ["--output", f"{name}={os.path.join(self.dir, f'out_{name}.npy')}"]
        run(args)
        return [np.load(os.path.join(self.dir, f"out_{n}.npy")) for n in outputs]

    def kernel_info(self):
        """kiln-inspect's description of each kernel (name, config, ...)."""
        return json.loads(run([tool("kiln-inspect"), self.plan, "--json"]).stdout)["kernels"]

    def kernels(self):
        return [k["name"] for k in self.kernel_info()]
