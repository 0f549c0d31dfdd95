"""Shared plumbing of the end-to-end tests: where the tools and the sources
are, running a tool, writing a checkpoint file. No reference numerics here.
"""
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("KILN_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
BIN = os.environ.get("KILN_BIN", os.path.join(SRC, "build", "bin"))
for _p in (HERE, os.path.join(SRC, "models", "testing")):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def tool(name):
    return os.path.join(BIN, name)


def run(args, check=True):
    p = subprocess.run(args, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def write_tensors(path, named_arrays):
    """Writes (name, array) pairs with the generator's safetensors writer;
    uint8 arrays are e4m3 bytes."""
    import make_tiny_checkpoint as mk
    codes = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.uint8): "F8_E4M3"}
    mk.write_safetensors(path, [(n, codes[a.dtype], a.shape, np.ascontiguousarray(a).tobytes())
                                for n, a in named_arrays])
