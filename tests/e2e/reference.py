"""Independent float64 numpy reference of Kiln's example models.

Written from the models' equations; shares no code with Kiln (its own
safetensors and .npy handling included).
"""
import json
import struct

import numpy as np

_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I32": "<i4", "I64": "<i8"}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        arr = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=_ST_DTYPES[info["dtype"]])
        out[name] = arr.reshape(info["shape"])
    return out


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def tiny_mlp(weights, tokens, layers=2, eps=1e-6):
    """The bundled example: embedding, residual SwiGLU MLP blocks, LM head."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    vocab = w["model.embed_tokens.weight"].shape[0]
    ids = tokens.astype(np.int64)
    h = np.where((ids >= 0)[..., None] & (ids < vocab)[..., None],
                 w["model.embed_tokens.weight"][np.clip(ids, 0, vocab - 1)], 0.0)
    for i in range(layers):
        p = f"model.layers.{i}"
        n = rms_norm(h, w[f"{p}.post_attention_layernorm.weight"], eps)
        g = n @ w[f"{p}.mlp.gate_proj.weight"].T
        u = n @ w[f"{p}.mlp.up_proj.weight"].T
        h = h + (silu(g) * u) @ w[f"{p}.mlp.down_proj.weight"].T
    return rms_norm(h, w["model.norm.weight"], eps) @ w["lm_head.weight"].T


def rel_l2(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))
