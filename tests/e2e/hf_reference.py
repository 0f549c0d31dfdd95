"""Independent float64 numpy reference forward pass for HF-style checkpoints.

Written from the equations of the published Hugging Face modeling code:
  * modeling_deepseek.py of deepseek-ai/DeepSeek-V2(-Lite) and DeepSeek-V3
    (model_type "deepseek_v2" / "deepseek_v3"),
  * transformers' modeling_llama.py and modeling_mixtral.py.
config.json is read as transformers 5's configuration classes read it: the
current form (rope_parameters) and the legacy one (rope_theta, rope_scaling),
and each class's default for an absent field (its own table below).

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
# Config fields: the transformers 5 class defaults
# --------------------------------------------------------------------------

_DEFAULTS = {
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None,
              "head_dim": None, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
              "hidden_act": "silu", "rope_theta": 10000.0},
    "mixtral": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "head_dim": None, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                "tie_word_embeddings": False, "hidden_act": "silu", "rope_theta": 1e6,
                "sliding_window": None, "num_experts_per_tok": 2, "num_local_experts": 8},
    "deepseek_v2": {"vocab_size": 102400, "hidden_size": 4096, "intermediate_size": 11008,
                    "num_hidden_layers": 32, "num_attention_heads": 32,
                    "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
                    "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
                    "hidden_act": "silu", "rope_theta": 10000.0, "first_k_dense_replace": 0,
                    "kv_lora_rank": 512, "q_lora_rank": 1536, "n_group": None,
                    "n_routed_experts": 64, "n_shared_experts": 2, "qk_nope_head_dim": 128,
                    "qk_rope_head_dim": 64, "routed_scaling_factor": 1.0, "topk_group": None,
                    "topk_method": "greedy", "scoring_func": "softmax", "norm_topk_prob": False,
                    "v_head_dim": 128, "num_experts_per_tok": None, "moe_intermediate_size": 1407,
                    "moe_layer_freq": 1, "rope_interleave": True},
    "deepseek_v3": {"vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
                    "moe_intermediate_size": 2048, "num_hidden_layers": 61,
                    "num_attention_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
                    "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536,
                    "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128,
                    "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8,
                    "first_k_dense_replace": 3, "norm_topk_prob": True, "hidden_act": "silu",
                    "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
                    "tie_word_embeddings": False, "rope_theta": 10000.0, "rope_interleave": True,
                    "attention_bias": False, "mlp_bias": False,
                    # DeepseekV3's router: sigmoid scores, noaux_tc selection.
                    "scoring_func": "sigmoid", "topk_method": "noaux_tc", "moe_layer_freq": 1},
}


def field(cfg, key):
    """cfg[key] as the model's configuration class sees it: the class
    default when absent (an explicit null stays None)."""
    if key in cfg:
        return cfg[key]
    return _DEFAULTS[cfg["model_type"]][key]


def rope_parameters(cfg):
    """(rope_type, theta, params dict) from either form: transformers 5's
    `rope_parameters`, or the legacy `rope_scaling` (which wins when both are
    given) plus top-level `rope_theta`."""
    rp = dict(cfg.get("rope_scaling") or cfg.get("rope_parameters") or {})
    rtype = rp.get("rope_type", rp.get("type", "default"))
    theta = rp.get("rope_theta", cfg.get("rope_theta", _DEFAULTS[cfg["model_type"]]["rope_theta"]))
    return rtype, float(theta), rp


def _check_activation(cfg):
    if field(cfg, "hidden_act") not in ("silu", "swish"):
        raise NotImplementedError("hidden_act %r" % field(cfg, "hidden_act"))


# --------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------

def round_bf16(x):
    """x rounded to bfloat16 (to nearest, ties to even, by way of float32), as
    float64: what a bf16 KV cache holds."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def fp8_latent_cache(x):
    """x [..., rank] as the FP8 latent cache holds it (kiln-compile
    --kv-cache-dtype=fp8: e4m3 under one power-of-two scale per token, no
    subnormal codes), float64."""
    import fp8_reference as F  # it imports this module
    q, s = F.latent_cache(x)
    return F.dequantize_activation(q, s, block=np.shape(x)[-1])


def _cache_rounding(values, latent=None):
    """What the KV cache does to the values written into it: `values` for
    K/V (and MLA's rope key), `.latent` for MLA's latent."""
    f = lambda x: values(x)  # noqa: E731
    f.latent = latent or values
    return f


KV_CACHE_ROUNDING = {"f64": _cache_rounding(lambda x: x),
                     "f32": _cache_rounding(lambda x: x.astype(np.float32).astype(np.float64)),
                     "bf16": _cache_rounding(round_bf16),
                     "fp8": _cache_rounding(round_bf16, fp8_latent_cache)}


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

    def linear(self, x, prefix, bias=False):
        """nn.Linear(bias=bias): x @ W^T + b. The bias is read only when the
        model's config gives this projection one (as the modeling code
        builds it); a bias tensor the config does not ask for is ignored."""
        y = x @ self.t[prefix + ".weight"].T
        return y + self.t[prefix + ".bias"] if bias else y


def _swiglu(W, x, prefix, gate="gate_proj", up="up_proj", down="down_proj", bias=False):
    return W.linear(silu(W.linear(x, prefix + "." + gate, bias))
                    * W.linear(x, prefix + "." + up, bias), prefix + "." + down, bias)


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
    mscale = 1.0 if mscale is None else mscale
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_linear_ramp_mask(lo, hi, dim):
    if lo == hi:
        hi += 0.001
    return np.clip((np.arange(dim, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def rope_cos_sin(cfg, dim, positions):
    """cos/sin tables [S, dim] of transformers 5's ROPE_INIT_FUNCTIONS for
    rope types default, linear, dynamic (equal to default for positions below
    max_position_embeddings) and yarn, times the attention factor."""
    rtype, base, rp = rope_parameters(cfg)
    max_pos = field(cfg, "max_position_embeddings")
    if positions.size and positions.max() >= max_pos:
        raise NotImplementedError("positions past max_position_embeddings")
    ar = np.arange(0, dim, 2, dtype=np.float64) / dim
    inv_freq = 1.0 / (base ** ar)
    attention = 1.0
    if rtype == "default" or rtype == "dynamic":
        pass
    elif rtype == "linear":
        inv_freq = inv_freq / rp["factor"]
    elif rtype == "yarn":
        orig = cfg.get("original_max_position_embeddings") or rp.get(
            "original_max_position_embeddings") or max_pos
        factor = rp.get("factor") or max_pos / orig
        mscale, mad = rp.get("mscale"), rp.get("mscale_all_dim")
        attention = rp.get("attention_factor")
        if attention is None:
            attention = (yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mad)
                         if mscale and mad else yarn_get_mscale(factor))
        lo = yarn_find_correction_dim(rp.get("beta_fast") or 32, dim, base, orig)
        hi = yarn_find_correction_dim(rp.get("beta_slow") or 1, dim, base, orig)
        if rp.get("truncate", True):
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, dim - 1)
        extrapolation = 1.0 - yarn_linear_ramp_mask(lo, hi, dim // 2)
        inv_freq = inv_freq / factor * (1.0 - extrapolation) + inv_freq * extrapolation
    else:
        raise NotImplementedError("rope_type %r" % rtype)
    freqs = np.outer(positions.astype(np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb) * attention, np.sin(emb) * attention


def deepseek_rope_cos_sin(cfg, positions):
    """cos/sin tables of DeepSeek's rotary embedding (dim = qk_rope_head_dim)."""
    return rope_cos_sin(cfg, field(cfg, "qk_rope_head_dim"), positions)


def deepseek_softmax_scale(cfg):
    """qk_head_dim^-0.5, times yarn_get_mscale(factor, mscale_all_dim)^2 for a
    scaled rope with mscale_all_dim (yarn_apply_mscale)."""
    scale = (field(cfg, "qk_nope_head_dim") + field(cfg, "qk_rope_head_dim")) ** -0.5
    rtype, _, rp = rope_parameters(cfg)
    if rtype != "default" and rp.get("mscale_all_dim"):
        factor = rp.get("factor") or field(cfg, "max_position_embeddings") / (
            cfg.get("original_max_position_embeddings")
            or rp.get("original_max_position_embeddings") or field(cfg, "max_position_embeddings"))
        m = yarn_get_mscale(factor, rp["mscale_all_dim"])
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

def _deepseek_attention(cfg, W, p, x, cos, sin, cache):
    B, S, _ = x.shape
    nh = field(cfg, "num_attention_heads")
    nope, rope, vd = (field(cfg, "qk_nope_head_dim"), field(cfg, "qk_rope_head_dim"),
                      field(cfg, "v_head_dim"))
    kvr = field(cfg, "kv_lora_rank")
    eps = field(cfg, "rms_norm_eps")
    # attention_bias: q_a_proj, kv_a_proj_with_mqa and o_proj have a bias.
    ab = field(cfg, "attention_bias")
    a = p + ".self_attn"
    if field(cfg, "q_lora_rank") is None:
        q = W.linear(x, a + ".q_proj")
    else:
        q = W.linear(rms_norm(W.linear(x, a + ".q_a_proj", ab), W[a + ".q_a_layernorm.weight"],
                              eps), a + ".q_b_proj")
    q = q.reshape(B, S, nh, nope + rope).transpose(0, 2, 1, 3)  # [B, H, S, qh]
    q_nope, q_pe = q[..., :nope], q[..., nope:]

    ckv = W.linear(x, a + ".kv_a_proj_with_mqa", ab)  # [B, S, kvr + rope]
    compressed, k_pe = ckv[..., :kvr], ckv[..., kvr:]
    k_pe = k_pe.reshape(B, S, 1, rope).transpose(0, 2, 1, 3)  # [B, 1, S, rope]
    # The cache holds the normalized latent and the rotated rope key.
    latent = cache.latent(rms_norm(compressed, W[a + ".kv_a_layernorm.weight"], eps))
    kv = W.linear(latent, a + ".kv_b_proj")
    kv = kv.reshape(B, S, nh, nope + vd).transpose(0, 2, 1, 3)
    k_nope, v = kv[..., :nope], kv[..., nope:]

    if cfg["model_type"] == "deepseek_v3" and not field(cfg, "rope_interleave"):
        # apply_rotary_pos_emb: rotate_half on the channels as they are.
        q_pe = q_pe * cos + rotate_half(q_pe) * sin
        k_pe = k_pe * cos + rotate_half(k_pe) * sin
    else:
        q_pe = deepseek_apply_rope(q_pe, cos, sin)
        k_pe = deepseek_apply_rope(k_pe, cos, sin)
    k_pe = cache(k_pe)
    query = np.concatenate([q_nope, q_pe], axis=-1)
    key = np.concatenate([k_nope, np.broadcast_to(k_pe, (B, nh, S, rope))], axis=-1)
    o = _causal_attention(query, key, v, deepseek_softmax_scale(cfg))
    return W.linear(o, a + ".o_proj", ab)


# Value given to experts of non-selected groups in noaux_tc routing. The
# official DeepSeek-V3 modeling_deepseek.py uses -inf; transformers'
# modeling_deepseek_v3.py uses 0.0. They differ only when fewer than top_k
# experts of the selected groups have a positive biased score.
NOAUX_TC_MASK_VALUE = -np.inf


def deepseek_gate(cfg, W, p, x):
    """MoEGate of modeling_deepseek.py. x: [T, h] -> (topk_idx [T, k], topk_weight [T, k])."""
    E = field(cfg, "n_routed_experts")
    k = field(cfg, "num_experts_per_tok")
    logits = x @ W[p + ".mlp.gate.weight"].T  # [T, E]
    sf = field(cfg, "scoring_func")
    if sf == "softmax":
        scores = softmax(logits, axis=-1)
    elif sf == "sigmoid":
        scores = sigmoid(logits)
    else:
        raise NotImplementedError("scoring_func %r" % sf)
    T = scores.shape[0]
    method = field(cfg, "topk_method")
    n_group, topk_group = field(cfg, "n_group"), field(cfg, "topk_group")

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

    norm = k > 1 and field(cfg, "norm_topk_prob")
    rsf = field(cfg, "routed_scaling_factor")
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
    for e in range(field(cfg, "n_routed_experts")):
        rows, slot = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        y[rows] += w[rows, slot][:, None] * _swiglu(W, xt[rows], "%s.mlp.experts.%d" % (p, e))
    y = y.reshape(B, S, h)
    if field(cfg, "n_shared_experts"):
        # DeepseekV2MLP carries mlp_bias (V2 only); routed experts never.
        y = y + _swiglu(W, x, p + ".mlp.shared_experts", bias=_mlp_bias(cfg))
    return y


def _mlp_bias(cfg):
    return cfg["model_type"] in ("llama", "deepseek_v2") and field(cfg, "mlp_bias")


def _deepseek_forward(cfg, W, tokens, cache):
    B, S = tokens.shape
    eps = field(cfg, "rms_norm_eps")
    _check_activation(cfg)
    cos, sin = deepseek_rope_cos_sin(cfg, np.arange(S))
    x = W["model.embed_tokens.weight"][tokens]
    for i in range(field(cfg, "num_hidden_layers")):
        p = "model.layers.%d" % i
        x = x + _deepseek_attention(cfg, W, p, rms_norm(x, W[p + ".input_layernorm.weight"], eps),
                                    cos, sin, cache)
        hn = rms_norm(x, W[p + ".post_attention_layernorm.weight"], eps)
        is_moe = (field(cfg, "n_routed_experts") is not None
                  and i >= field(cfg, "first_k_dense_replace")
                  and i % field(cfg, "moe_layer_freq") == 0)
        x = x + (_deepseek_moe(cfg, W, p, hn) if is_moe
                 else _swiglu(W, hn, p + ".mlp", bias=_mlp_bias(cfg)))
    return _lm_head(cfg, W, rms_norm(x, W["model.norm.weight"], eps))


# --------------------------------------------------------------------------
# Llama / Mixtral
# --------------------------------------------------------------------------

def _llama_attention(cfg, W, p, x, cos, sin, cache):
    B, S, h = x.shape
    nh = field(cfg, "num_attention_heads")
    nkv = field(cfg, "num_key_value_heads") or nh
    hd = field(cfg, "head_dim") or h // nh
    # LlamaAttention: attention_bias on q, k, v and o; Mixtral: no biases.
    ab = cfg["model_type"] == "llama" and field(cfg, "attention_bias")
    a = p + ".self_attn"
    q = W.linear(x, a + ".q_proj", ab).reshape(B, S, nh, hd).transpose(0, 2, 1, 3)
    k = W.linear(x, a + ".k_proj", ab).reshape(B, S, nkv, hd).transpose(0, 2, 1, 3)
    v = W.linear(x, a + ".v_proj", ab).reshape(B, S, nkv, hd).transpose(0, 2, 1, 3)
    q = q * cos + rotate_half(q) * sin
    k = cache(k * cos + rotate_half(k) * sin)
    v = cache(v)
    rep = nh // nkv  # repeat_kv: query head j uses kv head j // rep
    k = np.repeat(k, rep, axis=1)
    v = np.repeat(v, rep, axis=1)
    o = _causal_attention(q, k, v, hd ** -0.5)
    return W.linear(o, a + ".o_proj", ab)


def _mixtral_moe(cfg, W, p, x):
    B, S, h = x.shape
    xt = x.reshape(B * S, h)
    m = p + ".block_sparse_moe"
    k = field(cfg, "num_experts_per_tok")
    probs = softmax(W.linear(xt, m + ".gate"), axis=-1)
    idx = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    w = np.take_along_axis(probs, idx, axis=-1)
    w = w / w.sum(axis=-1, keepdims=True)
    y = np.zeros_like(xt)
    for e in range(field(cfg, "num_local_experts")):
        rows, slot = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        y[rows] += w[rows, slot][:, None] * _swiglu(W, xt[rows], "%s.experts.%d" % (m, e),
                                                    gate="w1", up="w3", down="w2")
    return y.reshape(B, S, h)


def _llama_forward(cfg, W, tokens, cache):
    B, S = tokens.shape
    eps = field(cfg, "rms_norm_eps")
    _check_activation(cfg)
    hd = field(cfg, "head_dim") or field(cfg, "hidden_size") // field(cfg, "num_attention_heads")
    cos, sin = rope_cos_sin(cfg, hd, np.arange(S))
    if cfg["model_type"] == "mixtral" and field(cfg, "sliding_window") and S > field(
            cfg, "sliding_window"):
        raise NotImplementedError("sliding window attention")
    x = W["model.embed_tokens.weight"][tokens]
    for i in range(field(cfg, "num_hidden_layers")):
        p = "model.layers.%d" % i
        x = x + _llama_attention(cfg, W, p, rms_norm(x, W[p + ".input_layernorm.weight"], eps),
                                 cos, sin, cache)
        hn = rms_norm(x, W[p + ".post_attention_layernorm.weight"], eps)
        if cfg["model_type"] == "mixtral":
            x = x + _mixtral_moe(cfg, W, p, hn)
        else:
            x = x + _swiglu(W, hn, p + ".mlp", bias=_mlp_bias(cfg))
    return _lm_head(cfg, W, rms_norm(x, W["model.norm.weight"], eps))


def _lm_head(cfg, W, x):
    if field(cfg, "tie_word_embeddings"):
        return x @ W["model.embed_tokens.weight"].T
    return x @ W["lm_head.weight"].T


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------

def forward(ckpt_dir, tokens, weights=None, config=None, kv_cache_dtype="f64"):
    """float64 logits [batch, seq, vocab] for int tokens [batch, seq].

    weights / config override what is read from ckpt_dir (either may be
    given; ckpt_dir may then be None for the one that is given).
    kv_cache_dtype: what attention reads back of the keys and values it
    caches: "f64" (exact), "f32" or "bf16" (rounded to that type), or
    "fp8" (MLA: the latent as the FP8 latent cache holds it, the rope key
    bf16)."""
    cache = KV_CACHE_ROUNDING[kv_cache_dtype]
    cfg = config if config is not None else read_config(ckpt_dir)
    W = _Weights(weights if weights is not None else read_safetensors_dir(ckpt_dir))
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError("tokens must be an int array [batch, seq]")
    if tokens.min() < 0 or tokens.max() >= field(cfg, "vocab_size"):
        raise ValueError("token id out of range")
    mt = cfg["model_type"]
    if mt in ("deepseek_v2", "deepseek_v3"):
        return _deepseek_forward(cfg, W, tokens, cache)
    if mt in ("llama", "mixtral"):
        if kv_cache_dtype == "fp8":
            raise ValueError("the fp8 KV cache is MLA's latent cache")
        return _llama_forward(cfg, W, tokens, cache)
    raise NotImplementedError("model_type %r" % mt)
