#!/usr/bin/env python3
"""Write tiny, random, Hugging Face-style checkpoints for testing Kiln.

Usage:
    python3 models/testing/make_tiny_checkpoint.py FAMILY OUT_DIR
        [--dtype f32|bf16|f16] [--shards N] [--seed S] [--variant NAME] [--fp8]
        [--style legacy|tf5] [--set FIELD=JSON ...]

FAMILY is one of: deepseek_v3, deepseek_v2, llama, mixtral.
deepseek_v2 variants: group_limited_greedy (default), greedy.
deepseek_v3 variants: fp8dims (hidden 192 etc., so that 128x128 FP8 blocks,
full and partial, are exercised).

--fp8 (deepseek_v3 only): store the quantizable weights (attention
projections, dense / expert / shared-expert MLPs) the way DeepSeek-V3 does:
`X.weight` as F8_E4M3 (float8_e4m3fn codes, 1 byte each) plus F32
`X.weight_scale_inv` [ceil(out/128), ceil(in/128)] (the per-block scale s,
w ~= decode(q) * s), and add DeepSeek-V3's "quantization_config" to
config.json. The values quantized are the ones the non-FP8 checkpoint of the
same --dtype stores (f32 master values rounded to bf16 / f16 first), so
quantizing that checkpoint's weights gives exactly this one. Embeddings,
lm_head, the router and norms keep --dtype (the correction bias stays F32).

--style tf5 writes config.json the way transformers 5's save_pretrained
does: rope_theta and the rope scaling only inside "rope_parameters" (with
"rope_type"), "dtype" instead of "torch_dtype", no field equal to the
configuration class's default (DeepseekV3Config fixes scoring_func and
topk_method, so they are not written either), plus the attributes the class
derives (head_dim, qk_head_dim). The weights are the same as for the legacy
style.

--set FIELD=JSON overrides a config field before the weights are made (e.g.
--set attention_bias=true --set mlp_bias=true: the bias tensors the
family's modeling code loads are written too; --set rope_interleave=false).

--tokenizer also writes tokenizer.json (a BPE over printable ASCII trained to
the model's vocab_size, "<s>" and "</s>" at its bos/eos ids),
tokenizer_config.json and generation_config.json; it needs the `tokenizers`
package (scripts/setup.sh installs it).

Writes OUT_DIR/config.json (Hugging Face field names) and either
OUT_DIR/model.safetensors or, for --shards N > 1,
OUT_DIR/model-0000i-of-0000N.safetensors plus model.safetensors.index.json.
Only numpy is needed. Output is deterministic for a given (family, variant,
seed); the dtype only changes how the same float32 values are stored.

Importable: make_checkpoint(family, out_dir, dtype="f32", shards=1, seed=0,
variant=None, fp8=False, style="legacy", overrides=None) -> config dict.
"""

import argparse
import copy
import json
import os
import struct
import sys
import tempfile

import numpy as np

FAMILIES = ("deepseek_v3", "deepseek_v2", "llama", "mixtral")
DTYPES = {  # cli name -> (safetensors dtype, torch_dtype string)
    "f32": ("F32", "float32"),
    "bf16": ("BF16", "bfloat16"),
    "f16": ("F16", "float16"),
}

# --------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------

_COMMON = {
    "vocab_size": 128,
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "use_cache": True,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "attention_dropout": 0.0,
}

_DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "num_key_value_heads": 4,
    "q_lora_rank": 48,
    "kv_lora_rank": 32,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "n_group": 4,
    "topk_group": 2,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "norm_topk_prob": True,
    "aux_loss_alpha": 0.001,
    "seq_aux": True,
    "ep_size": 1,
    # The real V3 has 1 MTP layer stored as an extra decoder layer; the tiny
    # checkpoint has none (HF's DeepseekV3ForCausalLM never uses it anyway).
    "num_nextn_predict_layers": 0,
    "rope_theta": 10000,
    "rope_scaling": {
        "type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 64,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    },
    "attention_bias": False,
}

_DEEPSEEK_V2 = dict(
    _DEEPSEEK_V3,
    architectures=["DeepseekV2ForCausalLM"],
    model_type="deepseek_v2",
    q_lora_rank=None,
    scoring_func="softmax",
    topk_method="group_limited_greedy",
    n_group=4,
    topk_group=2,
    norm_topk_prob=False,
    routed_scaling_factor=16.0,
    rope_scaling={
        "type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 64,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 0.707,
        "mscale_all_dim": 0.707,
    },
)
del _DEEPSEEK_V2["num_nextn_predict_layers"]

_V2_VARIANTS = {
    "group_limited_greedy": {},
    "greedy": {
        "topk_method": "greedy",
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
    },
}

_V3_VARIANTS = {
    "fp8dims": {
        "vocab_size": 256,
        "hidden_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 320,
        "moe_intermediate_size": 160,
        "q_lora_rank": 144,
        "kv_lora_rank": 128,
        "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 16,
        "v_head_dim": 32,
        "n_routed_experts": 8,
        "n_group": 4,
        "topk_group": 2,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
    },
}

# DeepSeek-V3's published quantization_config.
FP8_QUANTIZATION_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [128, 128],
}

_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 96,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "mlp_bias": False,
    "pretraining_tp": 1,
}

_MIXTRAL = {
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 32,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "rope_theta": 1e6,
    "sliding_window": None,
    "router_aux_loss_coef": 0.001,
    "router_jitter_noise": 0.0,
    "output_router_logits": False,
}


# Defaults of the transformers 5 configuration classes (the fields a tiny
# checkpoint sets); save_pretrained leaves out every value equal to them.
_TF5_COMMON_DEFAULTS = {
    "hidden_act": "silu", "initializer_range": 0.02, "rms_norm_eps": 1e-6, "use_cache": True,
    "tie_word_embeddings": False, "attention_dropout": 0.0, "attention_bias": False,
}
_TF5_DEFAULTS = {
    "llama": dict(_TF5_COMMON_DEFAULTS, vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                  num_hidden_layers=32, num_attention_heads=32, max_position_embeddings=2048,
                  bos_token_id=1, eos_token_id=2, pretraining_tp=1, mlp_bias=False),
    "mixtral": dict(_TF5_COMMON_DEFAULTS, vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                    max_position_embeddings=4096 * 32, rms_norm_eps=1e-5, bos_token_id=1,
                    eos_token_id=2, sliding_window=None, num_experts_per_tok=2, num_local_experts=8,
                    output_router_logits=False, router_aux_loss_coef=0.001,
                    router_jitter_noise=0.0),
    "deepseek_v2": dict(_TF5_COMMON_DEFAULTS, vocab_size=102400, hidden_size=4096,
                        intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                        max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
                        pretraining_tp=1, mlp_bias=False, first_k_dense_replace=0,
                        kv_lora_rank=512, q_lora_rank=1536, n_group=None, n_routed_experts=64,
                        n_shared_experts=2, qk_nope_head_dim=128, qk_rope_head_dim=64,
                        routed_scaling_factor=1.0, topk_group=None, topk_method="greedy",
                        norm_topk_prob=False, v_head_dim=128, num_experts_per_tok=None,
                        moe_intermediate_size=1407),
    "deepseek_v3": dict(_TF5_COMMON_DEFAULTS, vocab_size=129280, hidden_size=7168,
                        intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61,
                        num_attention_heads=128, num_key_value_heads=128, n_shared_experts=1,
                        n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512,
                        q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128,
                        qk_nope_head_dim=128, n_group=8, topk_group=4, num_experts_per_tok=8,
                        first_k_dense_replace=3, norm_topk_prob=True, max_position_embeddings=4096,
                        bos_token_id=0, eos_token_id=1, pretraining_tp=1, rope_interleave=True,
                        num_nextn_predict_layers=1),
}
# Fields that are not attributes of the transformers 5 class (DeepseekV3 fixes
# sigmoid scoring and noaux_tc routing; moe_layer_freq is gone).
_TF5_DROPPED = {
    "deepseek_v3": ("scoring_func", "topk_method", "moe_layer_freq", "aux_loss_alpha", "seq_aux",
                    "ep_size"),
    "deepseek_v2": ("moe_layer_freq", "aux_loss_alpha", "seq_aux", "ep_size"),
}


def tf5_style(cfg):
    """A legacy config dict as transformers 5's save_pretrained writes it."""
    mt = cfg["model_type"]
    out = {}
    rope = dict(cfg.get("rope_scaling") or {})
    if "type" in rope:
        rope.setdefault("rope_type", rope.pop("type"))
    rope.setdefault("rope_type", "default")
    rope["rope_theta"] = cfg.get("rope_theta", 1e6 if mt == "mixtral" else 10000.0)
    defaults = _TF5_DEFAULTS[mt]
    for k, v in cfg.items():
        if k in ("rope_theta", "rope_scaling") or k in _TF5_DROPPED.get(mt, ()):
            continue
        if k == "torch_dtype":
            out["dtype"] = v
            continue
        if k != "model_type" and k in defaults and defaults[k] == v:
            continue
        out[k] = v
    out["rope_parameters"] = rope
    if mt.startswith("deepseek"):
        out["head_dim"] = cfg["qk_rope_head_dim"]  # __post_init__ attributes
        out["qk_head_dim"] = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    elif "head_dim" not in out:
        out["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    return out


def make_config(family, dtype="f32", variant=None, fp8=False):
    if family not in FAMILIES:
        raise ValueError("unknown family %r (expected one of %s)" % (family, ", ".join(FAMILIES)))
    if dtype not in DTYPES:
        raise ValueError("unknown dtype %r (expected f32, bf16 or f16)" % dtype)
    if family == "deepseek_v2":
        v = variant or "group_limited_greedy"
        if v not in _V2_VARIANTS:
            raise ValueError("unknown deepseek_v2 variant %r (expected %s)" % (v, ", ".join(_V2_VARIANTS)))
        specific = dict(_DEEPSEEK_V2, **_V2_VARIANTS[v])
    elif family == "deepseek_v3" and variant is not None:
        if variant not in _V3_VARIANTS:
            raise ValueError("unknown deepseek_v3 variant %r (expected %s)"
                             % (variant, ", ".join(_V3_VARIANTS)))
        specific = dict(_DEEPSEEK_V3, **_V3_VARIANTS[variant])
    elif variant is not None:
        raise ValueError("family %s has no variants (got %r)" % (family, variant))
    else:
        specific = {"deepseek_v3": _DEEPSEEK_V3, "llama": _LLAMA, "mixtral": _MIXTRAL}[family]
    cfg = copy.deepcopy(_COMMON)
    cfg.update(copy.deepcopy(specific))
    cfg["torch_dtype"] = DTYPES[dtype][1]
    if fp8:
        if family != "deepseek_v3":
            raise ValueError("--fp8 is only supported for deepseek_v3 (got %s)" % family)
        cfg["quantization_config"] = copy.deepcopy(FP8_QUANTIZATION_CONFIG)
    # Put the identifying fields first for readability.
    head = {k: cfg.pop(k) for k in ("architectures", "model_type")}
    head.update(cfg)
    return head


# --------------------------------------------------------------------------
# Weights (float32 master values; order of generation fixes determinism)
# --------------------------------------------------------------------------

class _Gen:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.tensors = []  # list of (name, float32 array, keep_f32)

    def proj(self, name, out_f, in_f):
        w = self.rng.standard_normal((out_f, in_f)) * in_f ** -0.5
        self.tensors.append((name, w.astype(np.float32), False))

    def norm(self, name, n):
        w = 1.0 + 0.1 * self.rng.standard_normal(n)
        self.tensors.append((name, w.astype(np.float32), False))

    def embed(self, name, v, h):
        w = self.rng.standard_normal((v, h))
        self.tensors.append((name, w.astype(np.float32), False))

    def bias(self, name, n):
        w = 0.1 * self.rng.standard_normal(n)
        self.tensors.append((name, w.astype(np.float32), False))

    def raw(self, name, arr, keep_f32=False):
        self.tensors.append((name, np.asarray(arr, dtype=np.float32), keep_f32))


def _mlp(g, prefix, h, inter, names=("gate_proj", "up_proj", "down_proj"), bias=False):
    gate, up, down = names
    _proj(g, "%s.%s" % (prefix, gate), inter, h, bias)
    _proj(g, "%s.%s" % (prefix, up), inter, h, bias)
    _proj(g, "%s.%s" % (prefix, down), h, inter, bias)


def _proj(g, prefix, out_f, in_f, bias):
    """An nn.Linear: X.weight, and X.bias when the modeling code gives it one."""
    g.proj(prefix + ".weight", out_f, in_f)
    if bias:
        g.bias(prefix + ".bias", out_f)


def _deepseek_weights(cfg, g):
    h = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    qh = nope + rope
    E = cfg["n_routed_experts"]
    # DeepseekV2/V3Attention: attention_bias on q_a_proj, kv_a_proj_with_mqa
    # and o_proj; DeepseekV2MLP (dense, shared experts): mlp_bias.
    ab = cfg.get("attention_bias", False)
    mb = cfg["model_type"] == "deepseek_v2" and cfg.get("mlp_bias", False)
    g.embed("model.embed_tokens.weight", cfg["vocab_size"], h)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d" % i
        g.norm(p + ".input_layernorm.weight", h)
        a = p + ".self_attn"
        if cfg.get("q_lora_rank") is None:
            g.proj(a + ".q_proj.weight", nh * qh, h)
        else:
            r = cfg["q_lora_rank"]
            _proj(g, a + ".q_a_proj", r, h, ab)
            g.norm(a + ".q_a_layernorm.weight", r)
            g.proj(a + ".q_b_proj.weight", nh * qh, r)
        kvr = cfg["kv_lora_rank"]
        _proj(g, a + ".kv_a_proj_with_mqa", kvr + rope, h, ab)
        g.norm(a + ".kv_a_layernorm.weight", kvr)
        g.proj(a + ".kv_b_proj.weight", nh * (nope + vd), kvr)
        _proj(g, a + ".o_proj", h, nh * vd, ab)
        g.norm(p + ".post_attention_layernorm.weight", h)
        is_moe = (E is not None and i >= cfg["first_k_dense_replace"]
                  and i % cfg.get("moe_layer_freq", 1) == 0)
        if not is_moe:
            _mlp(g, p + ".mlp", h, cfg["intermediate_size"], bias=mb)
        else:
            g.proj(p + ".mlp.gate.weight", E, h)
            if cfg["model_type"] == "deepseek_v3" and cfg.get("topk_method", "noaux_tc") == "noaux_tc":
                bias = 0.1 * g.rng.standard_normal(E)
                g.raw(p + ".mlp.gate.e_score_correction_bias", bias, keep_f32=True)
            mi = cfg["moe_intermediate_size"]
            for j in range(E):
                _mlp(g, "%s.mlp.experts.%d" % (p, j), h, mi)
            if cfg.get("n_shared_experts"):
                _mlp(g, p + ".mlp.shared_experts", h, mi * cfg["n_shared_experts"], bias=mb)
    g.norm("model.norm.weight", h)
    g.proj("lm_head.weight", cfg["vocab_size"], h)


def _llama_like_weights(cfg, g):
    h = cfg["hidden_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    # LlamaAttention: attention_bias on q, k, v and o (Mixtral: never).
    ab = cfg["model_type"] == "llama" and cfg.get("attention_bias", False)
    g.embed("model.embed_tokens.weight", cfg["vocab_size"], h)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d" % i
        g.norm(p + ".input_layernorm.weight", h)
        _proj(g, p + ".self_attn.q_proj", nh * hd, h, ab)
        _proj(g, p + ".self_attn.k_proj", nkv * hd, h, ab)
        _proj(g, p + ".self_attn.v_proj", nkv * hd, h, ab)
        _proj(g, p + ".self_attn.o_proj", h, nh * hd, ab)
        g.norm(p + ".post_attention_layernorm.weight", h)
        if cfg["model_type"] == "llama":
            _mlp(g, p + ".mlp", h, cfg["intermediate_size"], bias=cfg.get("mlp_bias", False))
        else:
            E = cfg["num_local_experts"]
            g.proj(p + ".block_sparse_moe.gate.weight", E, h)
            for j in range(E):
                _mlp(g, "%s.block_sparse_moe.experts.%d" % (p, j), h,
                     cfg["intermediate_size"], names=("w1", "w3", "w2"))
    g.norm("model.norm.weight", h)
    g.proj("lm_head.weight", cfg["vocab_size"], h)


def make_weights(cfg, seed=0):
    """Return an ordered list of (name, float32 array, keep_f32)."""
    g = _Gen(seed)
    if cfg["model_type"].startswith("deepseek"):
        _deepseek_weights(cfg, g)
    else:
        _llama_like_weights(cfg, g)
    return g.tensors


# --------------------------------------------------------------------------
# safetensors writer
# --------------------------------------------------------------------------

def f32_to_bf16_bits(a):
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    nan = np.isnan(np.asarray(a, dtype=np.float32))
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    r = r.astype(np.uint16)
    if nan.any():
        r[nan] = (u[nan] >> 16).astype(np.uint16) | 0x0040  # keep quiet NaN
    return r


def encode_tensor(arr, st_dtype):
    """Return the raw little-endian bytes of float array `arr` in st_dtype."""
    if st_dtype == "F32":
        return np.ascontiguousarray(arr, dtype="<f4").tobytes()
    if st_dtype == "F16":
        return np.ascontiguousarray(arr, dtype="<f4").astype("<f2").tobytes()
    if st_dtype == "BF16":
        return f32_to_bf16_bits(arr).astype("<u2").tobytes()
    raise ValueError("unsupported dtype " + st_dtype)


# --------------------------------------------------------------------------
# FP8 (float8_e4m3fn, 128x128 blocks) weight quantization, DeepSeek-V3 style.
# Self-contained on purpose (tests/e2e/fp8_reference.py has an independent,
# bit-arithmetic implementation; this one uses a table of representable values).
# --------------------------------------------------------------------------

FP8_BLOCK = 128
FP8_QUANTIZED_MODULES = ("q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_b_proj",
                         "o_proj", "gate_proj", "up_proj", "down_proj")


def _e4m3_positive_table():
    """Values of codes 0x00..0x7E (all non-negative finite e4m3fn values)."""
    vals = []
    for c in range(0x7F):
        e, m = c >> 3, c & 7
        vals.append(m * 2.0 ** -9 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7))
    return np.array(vals, dtype=np.float64)


_E4M3_TABLE = _e4m3_positive_table()


def e4m3_encode(x):
    """float -> float8_e4m3fn codes (uint8): nearest, ties to even code (the
    even mantissa), saturating to +-448, sign kept (-0.0 -> 0x80), NaN -> 0x7F."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    t = _E4M3_TABLE
    hi = np.clip(np.searchsorted(t, a, side="left"), 1, len(t) - 1)  # t[hi-1] < a <= t[hi]
    lo = hi - 1
    dlo, dhi = a - t[lo], t[hi] - a
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo)
    code = np.where(a <= t[0], 0, code)
    code = np.where(a >= t[-1], len(t) - 1, code)  # saturate (inf too)
    code = code | np.where(np.signbit(x), 0x80, 0)
    code = np.where(np.isnan(x), 0x7F, code)
    return code.astype(np.uint8)


def fp8_quantize_weight(w, block=FP8_BLOCK):
    """[out, in] -> (codes uint8 [out, in], scale_inv float32 [ceil(out/b), ceil(in/b)]).
    Per block s = amax / 448 in float32 (1.0 if amax == 0); q = e4m3(float32(w / s))."""
    w = np.asarray(w, dtype=np.float32)
    out_f, in_f = w.shape
    ob, ib = -(-out_f // block), -(-in_f // block)
    s = np.ones((ob, ib), dtype=np.float32)
    q = np.zeros(w.shape, dtype=np.uint8)
    for i in range(ob):
        for j in range(ib):
            blk = w[i * block:(i + 1) * block, j * block:(j + 1) * block]
            amax = np.float32(np.max(np.abs(blk)))
            if amax != 0:
                s[i, j] = amax / np.float32(448.0)
            q[i * block:(i + 1) * block, j * block:(j + 1) * block] = e4m3_encode(
                (blk / s[i, j]).astype(np.float32))
    return q, s


def is_fp8_quantized(name):
    parts = name.split(".")
    return (name.startswith("model.layers.") and len(parts) >= 2 and parts[-1] == "weight"
            and parts[-2] in FP8_QUANTIZED_MODULES)


def stored_values(arr, st_dtype):
    """float32 values as a checkpoint of st_dtype stores them (rounded)."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if st_dtype == "F32":
        return arr
    if st_dtype == "F16":
        return arr.astype(np.float16).astype(np.float32)
    if st_dtype == "BF16":
        return (f32_to_bf16_bits(arr).astype(np.uint32) << 16).view(np.float32)
    raise ValueError("unsupported dtype " + st_dtype)


def _atomic_write(path, chunks):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, st_dtype, shape, raw bytes). Written atomically."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    off = 0
    for name, st_dtype, shape, data in tensors:
        header[name] = {"dtype": st_dtype, "shape": [int(s) for s in shape],
                        "data_offsets": [off, off + len(data)]}
        off += len(data)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((-len(hb)) % 8)
    _atomic_write(path, [struct.pack("<Q", len(hb)), hb] + [t[3] for t in tensors])


def _split_shards(encoded, n):
    """Split the ordered tensor list into n contiguous, non-empty groups of
    roughly equal byte size."""
    if n > len(encoded):
        raise ValueError("cannot make %d shards from %d tensors" % (n, len(encoded)))
    total = sum(len(t[3]) for t in encoded)
    groups, cur, acc = [], [], 0
    for idx, t in enumerate(encoded):
        remaining_tensors = len(encoded) - idx
        remaining_groups = n - len(groups)
        # Close the current group when it reached its share, or when we must
        # leave one tensor per remaining group.
        if cur and (acc >= total * (len(groups) + 1) / n or remaining_tensors < remaining_groups):
            if len(groups) < n - 1:
                groups.append(cur)
                cur = []
        cur.append(t)
        acc += len(t[3])
    groups.append(cur)
    assert len(groups) == n and all(groups)
    return groups


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------

# The text the tiny tokenizer is trained on (deterministic; ASCII).
_TOKENIZER_TEXT = [
    "the model reads a prompt and writes the next token",
    "kiln compiles the graph into kernels and runs them on the cpu",
    "hello world, this is a tiny tokenizer for tests",
    "experts route tokens; attention reads the cache; decode extends it",
    "numbers 0 1 2 3 4 5 6 7 8 9 and punctuation . , ; : ! ? ( ) - _",
]


def write_tokenizer(cfg, out_dir):
    """Write tokenizer.json (a SentencePiece-style BPE over printable ASCII
    with Metaspace and a BOS template, trained to the model's vocab_size),
    tokenizer_config.json and generation_config.json the way
    save_pretrained writes them. Needs the `tokenizers` package.

    Token ids: cfg's bos_token_id is "<s>", eos_token_id "</s>", the other
    low ids (and the next one, when none is free) "<unk>", "<pad>", ...; the
    rest are characters and merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    vocab = int(cfg["vocab_size"])
    bos, eos = cfg.get("bos_token_id"), cfg.get("eos_token_id")
    eos_ids = eos if isinstance(eos, list) else [eos]
    n_special = max([bos or 0] + [e for e in eos_ids if e is not None]) + 1
    fill = iter(["<unk>", "<pad>"] + ["<extra_%d>" % i for i in range(n_special)])
    specials = []
    for i in range(n_special):
        specials.append("<s>" if i == bos else "</s>" if i == eos_ids[0] else next(fill))
    if "<unk>" not in specials:
        specials.append("<unk>")
    alphabet = [chr(c) for c in range(33, 127)] + ["\u2581"]
    if vocab < len(specials) + len(alphabet):
        raise ValueError("vocab_size %d is too small for a %d-character tokenizer"
                         % (vocab, len(specials) + len(alphabet)))
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(_TOKENIZER_TEXT * 4, trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", bos)])
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    tc = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
          "model_max_length": cfg.get("max_position_embeddings", 2048),
          "tokenizer_class": "PreTrainedTokenizerFast"}
    gc = {"bos_token_id": bos, "eos_token_id": eos, "_from_model_config": True}
    for name, obj in (("tokenizer_config.json", tc), ("generation_config.json", gc)):
        _atomic_write(os.path.join(out_dir, name), [(json.dumps(obj, indent=2) + "\n").encode()])


def make_checkpoint(family, out_dir, dtype="f32", shards=1, seed=0, variant=None, fp8=False,
                    style="legacy", overrides=None, tokenizer=False):
    """Write a tiny checkpoint to out_dir and return its config dict (as
    written: in `style`, legacy or tf5). With `tokenizer`, also
    tokenizer.json, tokenizer_config.json and generation_config.json
    (write_tokenizer)."""
    if style not in ("legacy", "tf5"):
        raise ValueError("unknown style %r (expected legacy or tf5)" % style)
    cfg = make_config(family, dtype=dtype, variant=variant, fp8=fp8)
    cfg.update(copy.deepcopy(overrides or {}))
    shards = int(shards)
    if shards < 1:
        raise ValueError("shards must be >= 1")
    st_dtype = DTYPES[dtype][0]
    os.makedirs(out_dir, exist_ok=True)

    encoded = []
    for name, arr, keep_f32 in make_weights(cfg, seed):
        sd = "F32" if keep_f32 else st_dtype
        if fp8 and is_fp8_quantized(name):
            q, s = fp8_quantize_weight(stored_values(arr, sd))
            encoded.append((name, "F8_E4M3", q.shape, q.tobytes()))
            encoded.append((name + "_scale_inv", "F32", s.shape, encode_tensor(s, "F32")))
            continue
        encoded.append((name, sd, arr.shape, encode_tensor(arr, sd)))

    # Remove weight files of an earlier run that this run will not overwrite
    # (e.g. a stale index next to a new single-file checkpoint).
    if shards == 1:
        keep = {"model.safetensors"}
    else:
        keep = {"model-%05d-of-%05d.safetensors" % (i + 1, shards) for i in range(shards)}
        keep.add("model.safetensors.index.json")
    for fn in os.listdir(out_dir):
        if fn in keep:
            continue
        if fn == "model.safetensors" or fn == "model.safetensors.index.json" or (
                fn.startswith("model-") and fn.endswith(".safetensors")):
            os.unlink(os.path.join(out_dir, fn))

    meta = {"format": "pt"}
    if shards == 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), encoded, meta)
    else:
        weight_map = {}
        for i, group in enumerate(_split_shards(encoded, shards)):
            fn = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
            write_safetensors(os.path.join(out_dir, fn), group, meta)
            for t in group:
                weight_map[t[0]] = fn
        index = {"metadata": {"total_size": sum(len(t[3]) for t in encoded)},
                 "weight_map": dict(sorted(weight_map.items()))}
        _atomic_write(os.path.join(out_dir, "model.safetensors.index.json"),
                      [(json.dumps(index, indent=2) + "\n").encode("utf-8")])

    if tokenizer:
        write_tokenizer(cfg, out_dir)
    if style == "tf5":
        cfg = tf5_style(cfg)
    _atomic_write(os.path.join(out_dir, "config.json"),
                  [(json.dumps(cfg, indent=2) + "\n").encode("utf-8")])
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("family", choices=FAMILIES)
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", default="f32", choices=sorted(DTYPES))
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", default=None)
    ap.add_argument("--fp8", action="store_true",
                    help="deepseek_v3 only: F8_E4M3 weights + weight_scale_inv, 128x128 blocks")
    ap.add_argument("--style", default="legacy", choices=("legacy", "tf5"))
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
    ap.add_argument("--tokenizer", action="store_true",
                    help="also write tokenizer.json, tokenizer_config.json and "
                         "generation_config.json (needs the tokenizers package)")
    args = ap.parse_args(argv)
    try:
        overrides = {}
        for item in args.set:
            k, sep, v = item.partition("=")
            if not sep:
                raise ValueError("--set needs FIELD=JSON, got %r" % item)
            overrides[k] = json.loads(v)
        make_checkpoint(args.family, args.out_dir, dtype=args.dtype, shards=args.shards,
                        seed=args.seed, variant=args.variant, fp8=args.fp8, style=args.style,
                        overrides=overrides, tokenizer=args.tokenizer)
    except ValueError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
