"""Independent float64 numpy reference forward pass for HF-style checkpoints.

Written from the equations of the published Hugging Face modeling code:
  * modeling_deepseek.py of deepseek-ai/DeepSeek-V2(-Lite) and DeepSeek-V3
    (model_type "deepseek_v2" / "deepseek_v3"),
  * transformers' modeling_llama.py and modeling_mixtral.py.

Self-contained on purpose: it has its own safetensors reader and imports
nothing from Kiln or models/. Everything is computed in float64 after the
stored weights (F32 / F16 / BF16) are widened.

API:
  forward(ckpt_dir, tokens, weights=None, config=None)
      -> float64 logits [batch, seq, vocab]; tokens: int [batch, seq],
         positions 0..seq-1, causal attention, no padding.
  read_safetensors_dir(ckpt_dir) -> {name: float64 ndarray}
  read_config(ckpt_dir) -> dict
  rel_l2(a, b) -> float
"""

import json
import math
import os
import struct

import numpy as np

# --------------------------------------------------------------------------
# safetensors reading
# --------------------------------------------------------------------------

_NP_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}


def read_safetensors_file(path, e4m3_codes=False):
    """Read one .safetensors file -> {name: float64 ndarray}. With
    `e4m3_codes`, F8_E4M3 tensors are accepted and returned undecoded, as
    uint8 codes (the FP8 reference decodes them itself)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError("%s: too short for a safetensors file" % path)
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape = info["dtype"], tuple(info["shape"])
        start, end = info["data_offsets"]
        raw = blob[base + start:base + end]
        n = int(np.prod(shape)) if shape else 1
        codes = e4m3_codes and dt == "F8_E4M3"
        itemsize = 2 if dt == "BF16" else np.dtype(_NP_DTYPES.get(dt, "u1")).itemsize
        if dt != "BF16" and dt not in _NP_DTYPES and not codes:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (path, name, dt))
        if n * itemsize != end - start or len(raw) != end - start:
            raise ValueError("%s: tensor %s size mismatch" % (path, name))
        if codes:
            out[name] = np.frombuffer(raw, dtype=np.uint8, count=n).copy().reshape(shape)
            continue
        if dt == "BF16":
            bits = np.frombuffer(raw, dtype="<u2", count=n).astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=_NP_DTYPES[dt], count=n)
        out[name] = arr.astype(np.float64).reshape(shape)
    return out


def read_safetensors_dir(ckpt_dir, e4m3_codes=False):
    """All tensors of a checkpoint directory (single file or sharded index);
    `e4m3_codes` as for read_safetensors_file."""
    index = os.path.join(ckpt_dir, "model.safetensors.index.json")
    single = os.path.join(ckpt_dir, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        out = {}
        for fn in sorted(set(weight_map.values())):
            for name, arr in read_safetensors_file(os.path.join(ckpt_dir, fn),
                                                   e4m3_codes).items():
                if weight_map.get(name) == fn:
                    out[name] = arr
        missing = set(weight_map) - set(out)
        if missing:
            raise ValueError("tensors in index but not in shards: %s" % sorted(missing)[:5])
        return out
    if os.path.exists(single):
        return read_safetensors_file(single, e4m3_codes)
    raise FileNotFoundError("no model.safetensors(.index.json) in %s" % ckpt_dir)


def read_config(ckpt_dir):
    with open(os.path.join(ckpt_dir, "config.json")) as f:
        return json.load(f)


def rel_l2(a, b):
    """||a - b|| / ||b|| (b is the reference); 0 when both are zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(b)
    num = np.linalg.norm(a - b)
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return float(num / den)


# --------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


class _Weights:
    def __init__(self, tensors):
        self.t = tensors

    def __getitem__(self, name):
        return self.t[name]

    def get(self, name):
        return self.t.get(name)

    def linear(self, x, prefix):
        """nn.Linear: x @ W^T (+ b if the checkpoint has a bias)."""
        y = x @ self.t[prefix + ".weight"].T
        b = self.t.get(prefix + ".bias")
        return y if b is None else y + b


def _swiglu(W, x, prefix, gate="gate_proj", up="up_proj", down="down_proj"):
    return W.linear(silu(W.linear(x, prefix + "." + gate)) * W.linear(x, prefix + "." + up),
                    prefix + "." + down)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def _causal_attention(q, k, v, scale):
    """q: [B, H, S, D], k: [B, H, S, D], v: [B, H, S, Dv] -> [B, S, H*Dv]."""
    S = q.shape[2]
    scores = np.einsum("bhsd,bhtd->bhst", q, k) * scale
    mask = np.triu(np.ones((S, S), dtype=bool), k=1)
    scores = np.where(mask, -np.inf, scores)
    p = softmax(scores, axis=-1)
    o = np.einsum("bhst,bhtd->bhsd", p, v)
    B, H, _, Dv = o.shape
    return o.transpose(0, 2, 1, 3).reshape(B, S, H * Dv)


# --------------------------------------------------------------------------
# Rotary embeddings
# --------------------------------------------------------------------------

def default_rope_cos_sin(dim, base, positions):
    """HF default rope: inv_freq = base^(-arange(0, d, 2)/d); emb = cat(freqs, freqs)."""
    inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    freqs = np.outer(positions.astype(np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb), np.sin(emb)


def yarn_find_correction_dim(num_rotations, dim, base=10000, max_position_embeddings=2048):
    return (dim * math.log(max_position_embeddings / (num_rotations * 2 * math.pi))) / (
        2 * math.log(base))


def yarn_find_correction_range(low_rot, high_rot, dim, base=10000, max_position_embeddings=2048):
    low = math.floor(yarn_find_correction_dim(low_rot, dim, base, max_position_embeddings))
    high = math.ceil(yarn_find_correction_dim(high_rot, dim, base, max_position_embeddings))
    return max(low, 0), min(high, dim - 1)


def yarn_get_mscale(scale=1.0, mscale=1.0):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_linear_ramp_mask(lo, hi, dim):
    if lo == hi:
        hi += 0.001
    return np.clip((np.arange(dim, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def deepseek_rope_cos_sin(cfg, positions):
    """cos/sin tables of modeling_deepseek.py's rotary classes (dim = qk_rope_head_dim).

    Supports rope_scaling None and type "yarn" (the type every released
    DeepSeek-V2/V3 uses)."""
    dim = cfg["qk_rope_head_dim"]
    base = cfg.get("rope_theta", 10000)
    rs = cfg.get("rope_scaling")
    if rs is None:
        return default_rope_cos_sin(dim, base, positions)
    rtype = rs.get("type", rs.get("rope_type"))
    if rtype != "yarn":
        raise NotImplementedError("deepseek rope_scaling type %r" % rtype)
    factor = rs["factor"]
    ar = np.arange(0, dim, 2, dtype=np.float64) / dim
    freq_extra = 1.0 / (base ** ar)
    freq_inter = 1.0 / (factor * base ** ar)
    lo, hi = yarn_find_correction_range(rs.get("beta_fast", 32), rs.get("beta_slow", 1), dim,
                                        base, rs.get("original_max_position_embeddings", 4096))
    inv_freq_mask = 1.0 - yarn_linear_ramp_mask(lo, hi, dim // 2)
    inv_freq = freq_inter * (1.0 - inv_freq_mask) + freq_extra * inv_freq_mask
    freqs = np.outer(positions.astype(np.float64), inv_freq)
    mscale = yarn_get_mscale(factor, rs.get("mscale", 1)) / yarn_get_mscale(
        factor, rs.get("mscale_all_dim", 0))
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb) * mscale, np.sin(emb) * mscale


def deepseek_softmax_scale(cfg):
    scale = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    rs = cfg.get("rope_scaling")
    if rs is not None:
        mad = rs.get("mscale_all_dim", 0)
        if mad:
            m = yarn_get_mscale(rs["factor"], mad)
            scale = scale * m * m
    return scale


def deepseek_apply_rope(x, cos, sin):
    """modeling_deepseek.py apply_rotary_pos_emb on one tensor [B, H, S, d]:
    x.view(..., d/2, 2).transpose(-1, -2).reshape(..., d) (de-interleave:
    evens then odds), then x*cos + rotate_half(x)*sin. The result stays in
    that de-interleaved order (HF does not re-interleave); q and k get the
    same permutation, so q.k equals the interleaved-pair rotation."""
    shp = x.shape
    d = shp[-1]
    x = x.reshape(shp[:-1] + (d // 2, 2)).swapaxes(-1, -2).reshape(shp)
    return x * cos + rotate_half(x) * sin


# --------------------------------------------------------------------------
# DeepSeek V2 / V3
# --------------------------------------------------------------------------

def _deepseek_attention(cfg, W, p, x, cos, sin):
    B, S, _ = x.shape
    nh = cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kvr = cfg["kv_lora_rank"]
    eps = cfg["rms_norm_eps"]
    a = p + ".self_attn"
    if cfg.get("q_lora_rank") is None:
        q = W.linear(x, a + ".q_proj")
    else:
        q = W.linear(rms_norm(W.linear(x, a + ".q_a_proj"), W[a + ".q_a_layernorm.weight"], eps),
                     a + ".q_b_proj")
    q = q.reshape(B, S, nh, nope + rope).transpose(0, 2, 1, 3)  # [B, H, S, qh]
    q_nope, q_pe = q[..., :nope], q[..., nope:]

    ckv = W.linear(x, a + ".kv_a_proj_with_mqa")  # [B, S, kvr + rope]
    compressed, k_pe = ckv[..., :kvr], ckv[..., kvr:]
    k_pe = k_pe.reshape(B, S, 1, rope).transpose(0, 2, 1, 3)  # [B, 1, S, rope]
    kv = W.linear(rms_norm(compressed, W[a + ".kv_a_layernorm.weight"], eps), a + ".kv_b_proj")
    kv = kv.reshape(B, S, nh, nope + vd).transpose(0, 2, 1, 3)
    k_nope, v = kv[..., :nope], kv[..., nope:]

    q_pe = deepseek_apply_rope(q_pe, cos, sin)
    k_pe = deepseek_apply_rope(k_pe, cos, sin)
    query = np.concatenate([q_nope, q_pe], axis=-1)
    key = np.concatenate([k_nope, np.broadcast_to(k_pe, (B, nh, S, rope))], axis=-1)
    o = _causal_attention(query, key, v, deepseek_softmax_scale(cfg))
    return W.linear(o, a + ".o_proj")


# Value given to experts of non-selected groups in noaux_tc routing. The
# official DeepSeek-V3 modeling_deepseek.py uses -inf; transformers'
# modeling_deepseek_v3.py uses 0.0. They differ only when fewer than top_k
# experts of the selected groups have a positive biased score.
NOAUX_TC_MASK_VALUE = -np.inf


def deepseek_gate(cfg, W, p, x):
    """MoEGate of modeling_deepseek.py. x: [T, h] -> (topk_idx [T, k], topk_weight [T, k])."""
    E = cfg["n_routed_experts"]
    k = cfg["num_experts_per_tok"]
    logits = x @ W[p + ".mlp.gate.weight"].T  # [T, E]
    sf = cfg.get("scoring_func", "softmax")
    if sf == "softmax":
        scores = softmax(logits, axis=-1)
    elif sf == "sigmoid":
        scores = sigmoid(logits)
    else:
        raise NotImplementedError("scoring_func %r" % sf)
    T = scores.shape[0]
    method = cfg.get("topk_method", "greedy")
    n_group, topk_group = cfg.get("n_group"), cfg.get("topk_group")

    def group_mask(group_scores):
        gidx = np.argsort(-group_scores, axis=-1, kind="stable")[:, :topk_group]
        gm = np.zeros_like(group_scores, dtype=bool)
        np.put_along_axis(gm, gidx, True, axis=-1)
        return np.repeat(gm, E // n_group, axis=-1)  # [T, E]

    if method == "greedy":
        idx = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    elif method == "group_limited_greedy":
        gs = scores.reshape(T, n_group, E // n_group).max(axis=-1)
        tmp = np.where(group_mask(gs), scores, 0.0)
        idx = np.argsort(-tmp, axis=-1, kind="stable")[:, :k]
    elif method == "noaux_tc":
        bias = W[p + ".mlp.gate.e_score_correction_bias"]
        choice = scores + bias[None, :]
        gs = np.sort(choice.reshape(T, n_group, E // n_group), axis=-1)[..., -2:].sum(axis=-1)
        tmp = np.where(group_mask(gs), choice, NOAUX_TC_MASK_VALUE)
        idx = np.argsort(-tmp, axis=-1, kind="stable")[:, :k]
    else:
        raise NotImplementedError("topk_method %r" % method)
    w = np.take_along_axis(scores, idx, axis=-1)  # unbiased scores

    norm = k > 1 and cfg.get("norm_topk_prob", False)
    rsf = cfg.get("routed_scaling_factor", 1.0)
    if cfg["model_type"] == "deepseek_v2":
        # DeepSeek-V2 modeling_deepseek.py: normalize, *else* scale.
        if norm:
            w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
        else:
            w = w * rsf
    else:
        # DeepSeek-V3: normalize (optionally), then always scale.
        if norm:
            w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
        w = w * rsf
    return idx, w


def _deepseek_moe(cfg, W, p, x):
    B, S, h = x.shape
    xt = x.reshape(B * S, h)
    idx, w = deepseek_gate(cfg, W, p, xt)
    y = np.zeros_like(xt)
    for e in range(cfg["n_routed_experts"]):
        rows, slot = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        y[rows] += w[rows, slot][:, None] * _swiglu(W, xt[rows], "%s.mlp.experts.%d" % (p, e))
    y = y.reshape(B, S, h)
    if cfg.get("n_shared_experts"):
        y = y + _swiglu(W, x, p + ".mlp.shared_experts")
    return y


def _deepseek_forward(cfg, W, tokens):
    B, S = tokens.shape
    eps = cfg["rms_norm_eps"]
    cos, sin = deepseek_rope_cos_sin(cfg, np.arange(S))
    x = W["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d" % i
        x = x + _deepseek_attention(cfg, W, p, rms_norm(x, W[p + ".input_layernorm.weight"], eps),
                                    cos, sin)
        hn = rms_norm(x, W[p + ".post_attention_layernorm.weight"], eps)
        is_moe = (cfg.get("n_routed_experts") is not None
                  and i >= cfg.get("first_k_dense_replace", 0)
                  and i % cfg.get("moe_layer_freq", 1) == 0)
        x = x + (_deepseek_moe(cfg, W, p, hn) if is_moe else _swiglu(W, hn, p + ".mlp"))
    return _lm_head(cfg, W, rms_norm(x, W["model.norm.weight"], eps))


# --------------------------------------------------------------------------
# Llama / Mixtral
# --------------------------------------------------------------------------

def _llama_attention(cfg, W, p, x, cos, sin):
    B, S, h = x.shape
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or h // nh
    a = p + ".self_attn"
    q = W.linear(x, a + ".q_proj").reshape(B, S, nh, hd).transpose(0, 2, 1, 3)
    k = W.linear(x, a + ".k_proj").reshape(B, S, nkv, hd).transpose(0, 2, 1, 3)
    v = W.linear(x, a + ".v_proj").reshape(B, S, nkv, hd).transpose(0, 2, 1, 3)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    rep = nh // nkv  # repeat_kv: query head j uses kv head j // rep
    k = np.repeat(k, rep, axis=1)
    v = np.repeat(v, rep, axis=1)
    o = _causal_attention(q, k, v, hd ** -0.5)
    return W.linear(o, a + ".o_proj")


def _mixtral_moe(cfg, W, p, x):
    B, S, h = x.shape
    xt = x.reshape(B * S, h)
    m = p + ".block_sparse_moe"
    k = cfg["num_experts_per_tok"]
    probs = softmax(W.linear(xt, m + ".gate"), axis=-1)
    idx = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    w = np.take_along_axis(probs, idx, axis=-1)
    w = w / w.sum(axis=-1, keepdims=True)
    y = np.zeros_like(xt)
    for e in range(cfg["num_local_experts"]):
        rows, slot = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        y[rows] += w[rows, slot][:, None] * _swiglu(W, xt[rows], "%s.experts.%d" % (m, e),
                                                    gate="w1", up="w3", down="w2")
    return y.reshape(B, S, h)


def _llama_forward(cfg, W, tokens):
    B, S = tokens.shape
    eps = cfg["rms_norm_eps"]
    if cfg.get("rope_scaling"):
        raise NotImplementedError("rope_scaling for %s" % cfg["model_type"])
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    cos, sin = default_rope_cos_sin(hd, cfg.get("rope_theta", 10000.0), np.arange(S))
    if cfg["model_type"] == "mixtral" and cfg.get("sliding_window") and S > cfg["sliding_window"]:
        raise NotImplementedError("sliding window attention")
    x = W["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d" % i
        x = x + _llama_attention(cfg, W, p, rms_norm(x, W[p + ".input_layernorm.weight"], eps),
                                 cos, sin)
        hn = rms_norm(x, W[p + ".post_attention_layernorm.weight"], eps)
        if cfg["model_type"] == "mixtral":
            x = x + _mixtral_moe(cfg, W, p, hn)
        else:
            x = x + _swiglu(W, hn, p + ".mlp")
    return _lm_head(cfg, W, rms_norm(x, W["model.norm.weight"], eps))


def _lm_head(cfg, W, x):
    w = W.get("lm_head.weight")
    if w is None:
        if not cfg.get("tie_word_embeddings", False):
            raise KeyError("lm_head.weight missing and tie_word_embeddings is false")
        w = W["model.embed_tokens.weight"]
    return x @ w.T


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------

def forward(ckpt_dir, tokens, weights=None, config=None):
    """float64 logits [batch, seq, vocab] for int tokens [batch, seq].

    weights / config override what is read from ckpt_dir (either may be
    given; ckpt_dir may then be None for the one that is given)."""
    cfg = config if config is not None else read_config(ckpt_dir)
    W = _Weights(weights if weights is not None else read_safetensors_dir(ckpt_dir))
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError("tokens must be an int array [batch, seq]")
    if tokens.min() < 0 or tokens.max() >= cfg["vocab_size"]:
        raise ValueError("token id out of range")
    mt = cfg["model_type"]
    if mt in ("deepseek_v2", "deepseek_v3"):
        return _deepseek_forward(cfg, W, tokens)
    if mt in ("llama", "mixtral"):
        return _llama_forward(cfg, W, tokens)
    raise NotImplementedError("model_type %r" % mt)
