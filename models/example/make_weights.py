#!/usr/bin/env python3
"""Writes the weights of the bundled example model (tiny_mlp.mlir).

Deterministic (fixed seed), so the committed tiny_mlp.safetensors can be
re-created bit for bit. The safetensors writer is Kiln's own: an 8-byte
little-endian header length, a JSON header, then the raw little-endian data.

    python3 models/example/make_weights.py [OUT.safetensors]
"""
import json
import os
import struct
import sys

import numpy as np

VOCAB, HIDDEN, FFN, LAYERS = 256, 64, 128, 2


def write_safetensors(path, tensors):
    """tensors: list of (name, np.ndarray) in file order."""
    dtypes = {np.dtype("float32"): "F32", np.dtype("float16"): "F16",
              np.dtype("int32"): "I32", np.dtype("int64"): "I64"}
    header, offset, blobs = {}, 0, []
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr)
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtypes[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)  # keep the data 8-aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def make_tensors(seed=0):
    rng = np.random.default_rng(seed)

    def normal(shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = [("model.embed_tokens.weight", normal((VOCAB, HIDDEN), 1.0))]
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        t.append((f"{p}.post_attention_layernorm.weight",
                  (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)))
        t.append((f"{p}.mlp.gate_proj.weight", normal((FFN, HIDDEN), HIDDEN ** -0.5)))
        t.append((f"{p}.mlp.up_proj.weight", normal((FFN, HIDDEN), HIDDEN ** -0.5)))
        t.append((f"{p}.mlp.down_proj.weight", normal((HIDDEN, FFN), FFN ** -0.5)))
    t.append(("model.norm.weight",
              (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)))
    t.append(("lm_head.weight", normal((VOCAB, HIDDEN), HIDDEN ** -0.5)))
    return t


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "tiny_mlp.safetensors")
    write_safetensors(out, make_tensors())
    print(f"wrote {out}")
