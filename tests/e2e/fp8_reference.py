"""Independent numpy emulation of DeepSeek-V3's FP8 (e4m3, 128x128 block)
inference scheme, for testing Kiln's FP8 path.

Shares no code with Kiln. Uses hf_reference.py (itself an independent float64
reference) for rope, attention, norms and routing; everything that is not an
FP8 GEMM is float64, exactly as hf_reference.forward.

Format (float8_e4m3fn): 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits;
no infinities; 0x7F / 0xFF are NaN; max finite 448; min normal 2^-6;
subnormals m * 2^-9.

Choices made here (documented, tested):
  * e4m3_encode rounds to nearest, ties to even, and saturates: every finite
    or infinite magnitude > 448 becomes 448 (0x7E / 0xFE). The sign is always
    kept, so -0.0 -> 0x80 (and negatives that round to zero -> 0x80). NaN ->
    0x7F (0xFF when the NaN's sign bit is set).
  * quantize_weight_blocks: a block whose amax is 0 gets scale 1.0 (its codes
    are all 0x00 / 0x80, so any scale decodes to zeros).

API:
  e4m3_encode(x) -> uint8 (same shape)
  e4m3_decode(u8) -> float64 (same shape)
  quantize_weight_blocks(w, block=128) -> (q uint8 [out, in],
                                           s float32 [ceil(out/128), ceil(in/128)])
  dequantize_weight_blocks(q, s, block=128) -> float64 [out, in]
  quantize_activation(x, block=128) -> (q uint8 [..., K], s float32 [..., ceil(K/128)])
  fp8_gemm(xq, xs, wq, ws, block=128) -> float64 [..., N]
  forward_fp8(ckpt_dir, tokens, perturb=0.0, seed=0, weights=None, config=None,
              lm_head_fp8=False)
      -> float64 logits [batch, seq, vocab] of an FP8 (F8_E4M3 + weight_scale_inv)
         deepseek_v3 checkpoint; with lm_head_fp8 the LM head is quantized too
         (quantize_weight_blocks) and applied as the other projections are
         (Kiln's --fp8-lm-head)
  forward_fp8_from_bf16(ckpt_dir, tokens, perturb=0.0, seed=0) -> float64 logits
      of a non-FP8 deepseek_v3 checkpoint whose quantizable weights are first
      quantized with quantize_weight_blocks
  read_checkpoint_raw(ckpt_dir) -> {name: ndarray}; F8_E4M3 tensors as uint8
      codes, everything else widened to float64
  QUANTIZED_MODULES, is_quantized_weight(name)
"""

import os
import sys

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import hf_reference as hf  # noqa: E402

BLOCK = 128
E4M3_MAX = 448.0
ACT_AMAX_FLOOR = np.float32(1e-4)

# --------------------------------------------------------------------------
# e4m3 bit arithmetic
# --------------------------------------------------------------------------


def e4m3_decode(u):
    """uint8 e4m3fn codes -> float64 values (0x7F / 0xFF -> NaN)."""
    u = np.asarray(u, dtype=np.uint8).astype(np.int64)
    sign = np.where((u >> 7) & 1, -1.0, 1.0)
    e = (u >> 3) & 0xF
    m = u & 0x7
    sub = m.astype(np.float64) * 2.0 ** -9
    nor = (8 + m).astype(np.float64) * np.exp2((e - 10).astype(np.float64))
    mag = np.where(e == 0, sub, nor)
    mag = np.where((e == 15) & (m == 7), np.nan, mag)
    return sign * mag


def e4m3_encode(x):
    """float array -> uint8 e4m3fn codes: round to nearest, ties to even,
    saturate to +-448, sign kept (-0.0 -> 0x80), NaN -> 0x7F | sign."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    xd = x.astype(np.float64)  # exact for f16 / f32 / f64 inputs
    neg = np.signbit(xd)
    nan = np.isnan(xd)
    a = np.where(nan, 0.0, np.abs(xd))
    big = a > E4M3_MAX  # includes +inf
    a = np.where(big, 0.0, a)
    # a = frac * 2^E with frac in [0.5, 1): unbiased exponent ex = E - 1.
    _, E = np.frexp(a)
    ex = np.where(a == 0.0, -6, E.astype(np.int64) - 1)
    ex = np.maximum(ex, -6)  # subnormals share the quantum of the min normal
    # quantum 2^(ex-3); n = a / quantum is exact (power-of-two scaling).
    n = np.ldexp(a, (3 - ex).astype(np.int32))
    n = np.rint(n).astype(np.int64)  # round half to even
    # Normal: code = (biased_exp << 3) | (n - 8) with n in [8, 16]
    # (n == 16 carries into the exponent). Subnormal (ex == -6 and a < 2^-6):
    # code = n in [0, 8] (8 is the min normal). Both are (ex + 6) * 8 + n.
    code = (ex + 6) * 8 + n
    code = np.minimum(code, 0x7E)  # 448 rounds at most to 448 here; saturate anyway
    code = np.where(big, 0x7E, code)
    code = np.where(nan, 0x7F, code)
    code = code | np.where(neg, 0x80, 0)
    return code.astype(np.uint8)


# --------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------


def _cdiv(a, b):
    return -(-a // b)


def _expand_blocks(s, shape, block):
    """[ceil(out/b), ceil(in/b)] -> [out, in] by repeating each scale over its block."""
    return np.repeat(np.repeat(s, block, axis=0), block, axis=1)[:shape[0], :shape[1]]


def quantize_weight_blocks(w, block=BLOCK):
    """[out, in] weight -> (q uint8 [out, in], s float32 [ceil(out/b), ceil(in/b)]).

    Per block: s = amax / 448 in float32 (1.0 when amax == 0),
    q = e4m3_encode(float32(w) / s) with the division in float32. The stored
    weight_scale_inv is s; w ~= decode(q) * s."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError("weight must be 2-D, got shape %s" % (w.shape,))
    out_f, in_f = w.shape
    ob, ib = _cdiv(out_f, block), _cdiv(in_f, block)
    padded = np.zeros((ob * block, ib * block), dtype=np.float32)
    padded[:out_f, :in_f] = np.abs(w)
    amax = padded.reshape(ob, block, ib, block).max(axis=(1, 3))
    s = np.where(amax == 0, np.float32(1.0), amax / np.float32(E4M3_MAX)).astype(np.float32)
    q = e4m3_encode((w / _expand_blocks(s, w.shape, block)).astype(np.float32))
    return q, s


def dequantize_weight_blocks(q, s, block=BLOCK):
    """decode(q) * s per block -> float64 [out, in]."""
    q = np.asarray(q, dtype=np.uint8)
    s = np.asarray(s, dtype=np.float32)
    if s.shape != (_cdiv(q.shape[0], block), _cdiv(q.shape[1], block)):
        raise ValueError("scale shape %s does not match weight %s" % (s.shape, q.shape))
    return e4m3_decode(q) * _expand_blocks(s, q.shape, block).astype(np.float64)


def quantize_activation(x, block=BLOCK, pow2_scale=False, flush_subnormals=False):
    """Dynamic per-token, per-128-tile quantization along the last axis.

    x: [..., K] -> (q uint8 [..., K], s float32 [..., ceil(K/b)]). Per tile:
    s = max(amax(|x|), 1e-4) / 448 in float32, q = e4m3_encode(float32(x / s)).
    pow2_scale: s rounded up to a power of two; flush_subnormals: values that
    round to an e4m3 subnormal (|x / s| < 15 x 2^-10) stored as zero
    (kiln.quantize's flags; both, with block = the row: the FP8 latent
    cache)."""
    x = np.asarray(x, dtype=np.float32)
    K = x.shape[-1]
    nb = _cdiv(K, block)
    padded = np.zeros(x.shape[:-1] + (nb * block,), dtype=np.float32)
    padded[..., :K] = np.abs(x)
    amax = padded.reshape(x.shape[:-1] + (nb, block)).max(axis=-1)
    s = (np.maximum(amax, ACT_AMAX_FLOOR) / np.float32(E4M3_MAX)).astype(np.float32)
    if pow2_scale:
        m, e = np.frexp(s)  # s = m 2^e, m in [0.5, 1)
        s = np.where(m == 0.5, s, np.ldexp(np.float32(1.0), e)).astype(np.float32)
    s_full = np.repeat(s, block, axis=-1)[..., :K]
    y = (x / s_full).astype(np.float32)
    if flush_subnormals:
        y = np.where(np.abs(y) < np.float32(15.0 / 1024.0), np.float32(0.0), y)
    q = e4m3_encode(y)
    return q, s


def latent_cache(x):
    """What the FP8 latent cache (--kv-cache-dtype=fp8) holds of latent rows
    x [..., rank]: (e4m3 codes, one power-of-two scale per row [..., 1])."""
    x = np.asarray(x, np.float32)
    return quantize_activation(x, block=x.shape[-1], pow2_scale=True, flush_subnormals=True)


def dequantize_activation(q, s, block=BLOCK):
    """The values quantize_activation's (q, s) stand for, float64."""
    K = q.shape[-1]
    return e4m3_decode(q) * np.repeat(np.asarray(s, np.float64), block, axis=-1)[..., :K]


def fp8_gemm(xq, xs, wq, ws, block=BLOCK):
    """out[m, n] = sum_kb (sum_{k in kb} dec(xq[m,k]) dec(wq[n,k])) * xs[m,kb] * ws[n//b, kb].

    xq: [..., K] uint8, xs: [..., KB] f32, wq: [N, K] uint8, ws: [ceil(N/b), KB] f32.
    Block sums and the scaling are float64; returns float64 [..., N]."""
    xq = np.asarray(xq, dtype=np.uint8)
    wq = np.asarray(wq, dtype=np.uint8)
    xs = np.asarray(xs, dtype=np.float32).astype(np.float64)
    ws = np.asarray(ws, dtype=np.float32).astype(np.float64)
    K = xq.shape[-1]
    N = wq.shape[0]
    nb = _cdiv(K, block)
    if wq.shape[1] != K:
        raise ValueError("K mismatch: x %s, w %s" % (xq.shape, wq.shape))
    if xs.shape != xq.shape[:-1] + (nb,) or ws.shape != (_cdiv(N, block), nb):
        raise ValueError("scale shapes %s %s do not match %s %s"
                         % (xs.shape, ws.shape, xq.shape, wq.shape))
    lead = xq.shape[:-1]
    xd = e4m3_decode(xq).reshape(-1, K)
    wd = e4m3_decode(wq)
    xs2 = xs.reshape(-1, nb)
    wrow = np.repeat(ws, block, axis=0)[:N]  # [N, KB]
    out = np.zeros((xd.shape[0], N), dtype=np.float64)
    for kb in range(nb):
        sl = slice(kb * block, min(K, (kb + 1) * block))
        part = xd[:, sl] @ wd[:, sl].T
        out += part * xs2[:, kb:kb + 1] * wrow[None, :, kb]
    return out.reshape(lead + (N,))


# --------------------------------------------------------------------------
# Checkpoint reading (F8_E4M3 aware)
# --------------------------------------------------------------------------

QUANTIZED_MODULES = ("q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_b_proj",
                     "o_proj", "gate_proj", "up_proj", "down_proj")


def is_quantized_weight(name):
    """True for the weights DeepSeek-V3 stores in FP8 (attention projections,
    dense / expert / shared-expert MLPs). Not: embeddings, lm_head, router
    (mlp.gate), norms, biases."""
    parts = name.split(".")
    return (len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in QUANTIZED_MODULES
            and name.startswith("model.layers."))


def read_checkpoint_raw(ckpt_dir):
    """{name: array}: F8_E4M3 tensors as uint8 codes, all others as float64
    (hf_reference's safetensors reader, leaving the e4m3 bytes undecoded)."""
    return hf.read_safetensors_dir(ckpt_dir, e4m3_codes=True)


# --------------------------------------------------------------------------
# Emulated FP8 forward of DeepSeek-V3
# --------------------------------------------------------------------------


class _FP8Model:
    """Float weights (float64) + FP8 weights {name: (q uint8, s float32)}."""

    def __init__(self, cfg, floats, fp8, perturb, seed, mla_form="absorbed", kv_cache="f64"):
        if mla_form not in ("absorbed", "naive"):
            raise ValueError("mla_form %r" % mla_form)
        self.mla_form = mla_form
        self.cache = hf.KV_CACHE_ROUNDING[kv_cache]
        self.cfg = cfg
        self.W = hf._Weights(floats)
        self.fp8 = fp8
        self.perturb = float(perturb)
        self.rng = np.random.default_rng(seed)
        self._deq = {}

    def qact(self, x):
        """Activation quantization of a float64 value (optionally perturbed)."""
        if self.perturb != 0.0:
            x = x * (1.0 + self.perturb * self.rng.standard_normal(x.shape))
        return quantize_activation(x)

    def qlinear(self, xqs, prefix):
        q, s = self.fp8[prefix + ".weight"]
        y = fp8_gemm(xqs[0], xqs[1], q, s)
        b = self.W.get(prefix + ".bias")
        return y if b is None else y + b

    def dequant(self, prefix):
        name = prefix + ".weight"
        if name not in self._deq:
            self._deq[name] = dequantize_weight_blocks(*self.fp8[name])
        return self._deq[name]

    def swiglu(self, xqs, prefix):
        h = hf.silu(self.qlinear(xqs, prefix + ".gate_proj")) * self.qlinear(xqs, prefix + ".up_proj")
        return self.qlinear(self.qact(h), prefix + ".down_proj")


def _attention(m, p, x, cos, sin):
    cfg, W = m.cfg, m.W
    B, S, _ = x.shape
    nh = cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kvr = cfg["kv_lora_rank"]
    eps = cfg["rms_norm_eps"]
    a = p + ".self_attn"
    xqs = m.qact(x)  # shared by q_a_proj (or q_proj) and kv_a_proj_with_mqa
    if cfg.get("q_lora_rank") is None:
        q = m.qlinear(xqs, a + ".q_proj")
    else:
        qa = hf.rms_norm(m.qlinear(xqs, a + ".q_a_proj"), W[a + ".q_a_layernorm.weight"], eps)
        q = m.qlinear(m.qact(qa), a + ".q_b_proj")
    q = q.reshape(B, S, nh, nope + rope).transpose(0, 2, 1, 3)
    q_nope, q_pe = q[..., :nope], q[..., nope:]

    ckv = m.qlinear(xqs, a + ".kv_a_proj_with_mqa")
    compressed, k_pe = ckv[..., :kvr], ckv[..., kvr:]
    k_pe = k_pe.reshape(B, S, 1, rope).transpose(0, 2, 1, 3)
    latent = m.cache.latent(hf.rms_norm(compressed, W[a + ".kv_a_layernorm.weight"], eps))
    if m.mla_form == "naive":
        # DeepSeek's naive attention: kv_b_proj a block-scaled linear, its
        # input (the latent) quantized per 1 x 128.
        kv = m.qlinear(m.qact(latent), a + ".kv_b_proj")
    else:
        # Absorbed: kv_b_proj's weight dequantized (float64), the latent not
        # activation-quantized.
        kv = latent @ m.dequant(a + ".kv_b_proj").T
    kv = kv.reshape(B, S, nh, nope + vd).transpose(0, 2, 1, 3)
    k_nope, v = kv[..., :nope], kv[..., nope:]

    q_pe = hf.deepseek_apply_rope(q_pe, cos, sin)
    k_pe = m.cache(hf.deepseek_apply_rope(k_pe, cos, sin))
    query = np.concatenate([q_nope, q_pe], axis=-1)
    key = np.concatenate([k_nope, np.broadcast_to(k_pe, (B, nh, S, rope))], axis=-1)
    o = hf._causal_attention(query, key, v, hf.deepseek_softmax_scale(cfg))
    return m.qlinear(m.qact(o), a + ".o_proj")


def _moe(m, p, x):
    cfg = m.cfg
    B, S, h = x.shape
    xt = x.reshape(B * S, h)
    idx, w = hf.deepseek_gate(cfg, m.W, p, xt)  # router: float64, unquantized x
    xq, xs = m.qact(xt)  # quantized once, shared by all experts + shared experts
    y = np.zeros_like(xt)
    for e in range(cfg["n_routed_experts"]):
        rows, slot = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        y[rows] += w[rows, slot][:, None] * m.swiglu((xq[rows], xs[rows]),
                                                    "%s.mlp.experts.%d" % (p, e))
    if cfg.get("n_shared_experts"):
        y = y + m.swiglu((xq, xs), p + ".mlp.shared_experts")
    return y.reshape(B, S, h)


def _forward(cfg, m, tokens, lm_head_fp8=False):
    B, S = tokens.shape
    W = m.W
    eps = cfg["rms_norm_eps"]
    cos, sin = hf.deepseek_rope_cos_sin(cfg, np.arange(S))
    x = W["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d" % i
        x = x + _attention(m, p, hf.rms_norm(x, W[p + ".input_layernorm.weight"], eps), cos, sin)
        hn = hf.rms_norm(x, W[p + ".post_attention_layernorm.weight"], eps)
        is_moe = (cfg.get("n_routed_experts") is not None
                  and i >= cfg.get("first_k_dense_replace", 0)
                  and i % cfg.get("moe_layer_freq", 1) == 0)
        x = x + (_moe(m, p, hn) if is_moe else m.swiglu(m.qact(hn), p + ".mlp"))
    h = hf.rms_norm(x, W["model.norm.weight"], eps)
    if lm_head_fp8:
        return m.qlinear(m.qact(h), "lm_head")
    return hf._lm_head(cfg, W, h)


def _check_tokens(cfg, tokens):
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError("tokens must be an int array [batch, seq]")
    if tokens.min() < 0 or tokens.max() >= cfg["vocab_size"]:
        raise ValueError("token id out of range")
    if cfg["model_type"] != "deepseek_v3":
        raise NotImplementedError("FP8 emulation supports deepseek_v3 only, got %r"
                                  % cfg["model_type"])
    return tokens


def _check_qcfg(cfg):
    qc = cfg.get("quantization_config")
    if qc is None:
        return
    if (qc.get("quant_method") != "fp8" or qc.get("fmt", "e4m3") != "e4m3"
            or qc.get("activation_scheme", "dynamic") != "dynamic"
            or list(qc.get("weight_block_size", [BLOCK, BLOCK])) != [BLOCK, BLOCK]):
        raise NotImplementedError("quantization_config %r" % qc)


def flush_subnormal_codes(q):
    """e4m3 codes with the subnormals (exponent field 0, mantissa not 0)
    replaced by zeros of their sign."""
    q = np.asarray(q, dtype=np.uint8)
    return np.where((q & 0x78) == 0, q & 0x80, q).astype(np.uint8)


def forward_fp8(ckpt_dir, tokens, perturb=0.0, seed=0, weights=None, config=None,
                lm_head_fp8=False, flush_subnormal_weights=False, mla_form="absorbed",
                kv_cache="f64"):
    """Emulated FP8 forward of a deepseek_v3 FP8 checkpoint -> float64 logits
    [batch, seq, vocab]. Quantized weights are stored as F8_E4M3 `X.weight`
    plus F32 `X.weight_scale_inv` (= per-block s). `weights` (as returned by
    read_checkpoint_raw) / `config` override the files. perturb multiplies
    each activation-quantization input by (1 + perturb * N(0,1)) (seeded).
    flush_subnormal_weights: every e4m3 weight's subnormal codes read as
    zero, the most that Kiln's CPU GEMV rows on Intel AVX-512-BF16 deviate
    by (they read them so; docs/fp8.md), for the tests' allowance.
    mla_form: "absorbed" (kv_b dequantized, as DeepSeek's absorbed
    attention) or "naive" (kv_b a block-scaled linear over the quantized
    latent, as its naive attention): Kiln's --mla-form. kv_cache: what
    attention reads back of the cached latent and rope key, as
    hf_reference.forward's kv_cache_dtype ("fp8": --kv-cache-dtype=fp8)."""
    cfg = config if config is not None else hf.read_config(ckpt_dir)
    _check_qcfg(cfg)
    tokens = _check_tokens(cfg, tokens)
    raw = weights if weights is not None else read_checkpoint_raw(ckpt_dir)
    floats, fp8 = {}, {}
    for name, arr in raw.items():
        if name.endswith(".weight_scale_inv"):
            continue
        if arr.dtype == np.uint8:
            sname = name + "_scale_inv"
            if sname not in raw:
                raise KeyError("FP8 weight %s has no %s" % (name, sname))
            s = np.asarray(raw[sname], dtype=np.float32)
            if s.shape != (_cdiv(arr.shape[0], BLOCK), _cdiv(arr.shape[1], BLOCK)):
                raise ValueError("%s shape %s does not match %s" % (sname, s.shape, arr.shape))
            fp8[name] = (arr, s)
        else:
            floats[name] = arr
    missing = [n for n in floats if is_quantized_weight(n)]
    if missing:
        raise ValueError("quantizable weights not stored in FP8: %s" % missing[:3])
    if lm_head_fp8:
        if cfg.get("tie_word_embeddings"):
            raise NotImplementedError("lm_head_fp8 with tied embeddings")
        q, s = quantize_weight_blocks(np.asarray(floats.pop("lm_head.weight"), dtype=np.float32))
        fp8["lm_head.weight"] = (q, s)
    if flush_subnormal_weights:
        fp8 = {n: (flush_subnormal_codes(q), s) for n, (q, s) in fp8.items()}
    return _forward(cfg, _FP8Model(cfg, floats, fp8, perturb, seed, mla_form, kv_cache), tokens,
                    lm_head_fp8)


def quantize_checkpoint_weights(floats):
    """{name: float array} -> raw dict as read_checkpoint_raw returns for the FP8
    version: quantizable weights -> uint8 codes + float32 `_scale_inv`."""
    out = {}
    for name, arr in floats.items():
        if is_quantized_weight(name):
            q, s = quantize_weight_blocks(np.asarray(arr, dtype=np.float32))
            out[name] = q
            out[name + "_scale_inv"] = s.astype(np.float64)
        else:
            out[name] = np.asarray(arr, dtype=np.float64)
    return out


def forward_fp8_from_bf16(ckpt_dir, tokens, perturb=0.0, seed=0, weights=None, config=None,
                          flush_subnormal_weights=False, mla_form="absorbed", kv_cache="f64"):
    """Quantize a non-FP8 deepseek_v3 checkpoint's quantizable weights (as
    Kiln's compiler does, quantize_weight_blocks) and run forward_fp8's
    emulation. Works for F32 / BF16 / F16 checkpoints alike."""
    cfg = dict(config if config is not None else hf.read_config(ckpt_dir))
    cfg.pop("quantization_config", None)
    floats = weights if weights is not None else hf.read_safetensors_dir(ckpt_dir)
    return forward_fp8(None, tokens, perturb=perturb, seed=seed,
                       weights=quantize_checkpoint_weights(floats), config=cfg,
                       flush_subnormal_weights=flush_subnormal_weights, mla_form=mla_form,
                       kv_cache=kv_cache)
