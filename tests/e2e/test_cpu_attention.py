"""The optimized CPU attention emitter against the reference emitter, op by
op (llama.cpp's test-backend-ops): `attention` (GQA), `mla_attention` (MLA
absorbed, kv_b bf16 or e4m3 with 128x128 block scales) and `mla_naive`
compiled with --cpu-emitter=reference (the scalar programs, the
specification) and with the default emitter, each kernel alone in a
kernel-dialect model whose caches are weights (bf16, f16 or f32). The cases
hit the edges of the blocking: GQA ratios 1, 2, 4, 8 and 32 (more heads per
KV group than a block's 16 rows), head dims 64, 128 and odd ones (72, 40,
value dim 24), key counts that are not multiples of the 16-key blocks,
decode at several positions of the cache (start 0, inside, last), prefill
chunks with start > 0, more positions than a block holds, causal and not,
with and without start, fused query rope (partial and interleaved), MLA with
DeepSeek-V3's per-head shapes (rank 512, rope 64, nope 128, v 128) and small
ones (rank 64, rank 200: not a multiple of 16 or 128), batch 2, and 1, 2
and 3 threads: the program range splits inside KV groups at odd places, and
the optimized outputs must be bit-identical across thread counts.

Tolerances (u = 2^-24; per query row, p_j the exact softmax weights of its
T keys, K the number of times the running maximum of its scores rises):
both emitters compute the same products and differ in summation order and
exp (libm's expf against a polynomial, both within 2 ulp; the test bounds
each exp by 4u):

- each score's error is at most (n + 2) u A_j, A_j = scale sum |q k_j|, n
  the terms of the dot (MLA absorbed adds scale sum_c dq_c |latent_jc|, the
  error of the absorbed query q_lat, (d_nope + 1) u sum_d |q_nope W_UK|);
- a weight's relative error is then at most eps = 2 max_j ds_j + (4 + 2K) 4u
  (the scores through the normalized exp, and each rescale's exp and
  product);
- an output element's error is at most ((T + 4) u + 2 eps) sum_j p_j |v_j|
  (T sequential accumulations, numerator and denominator), and for MLA
  absorbed that error of each latent accumulator through W_UV plus (rank +
  2) u sum_c |W_UV o_lat|.

The optimized output must lie within twice that of the reference (one bound
per emitter), and the reference within it of a float64 numpy attention (so
the inputs and the expectation are what the kernel computes). Each
optimized plan's config must name the AVX-512 emitter and its LLVM IR must
hold zmm FMAs.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import json  # noqa: E402

from kilntest import KernelModel, bf16_tiles, host_runs, run, tool  # noqa: E402
import fp8_reference as F  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402
from test_cpu_gemm import stored  # noqa: E402

U = 2.0 ** -24
UB = 2.0 ** -8  # bf16's unit roundoff
THREADS = (1, 2, 3)
MLIR = {"f32": "f32", "bf16": "bf16", "f16": "f16"}


def rope(x, pos, rotary, interleaved, theta=10000.0):
    """The kernels' rotation of the last axis of x at positions `pos`
    (broadcast over x's leading axes), float64."""
    x = x.astype(np.float64).copy()
    half = rotary // 2
    i = np.arange(half, dtype=np.float64)
    inv = np.exp(i * (-2.0 * np.log(theta) / rotary))
    ang = np.asarray(pos, np.float64)[..., None] * inv
    c, s = np.cos(ang), np.sin(ang)
    ia = 2 * np.arange(half) if interleaved else np.arange(half)
    ib = ia + 1 if interleaved else ia + half
    xa, xb = x[..., ia].copy(), x[..., ib].copy()
    x[..., ia] = xa * c - xb * s
    x[..., ib] = xb * c + xa * s
    return x


def rotation_attr(rotary, interleaved):
    return (f"q_rotation = {{theta = 1.0e+04 : f32, rotary_dim = {rotary} : i64, "
            f"interleaved = {'true' if interleaved else 'false'}, scaling_factor = 1.0 : f32, "
            f"yarn_factor = 1.0 : f32, yarn_low = 0.0 : f32, yarn_high = 0.0 : f32, mscale = 1.0 : f32}}, ")


def t(shape, dtype):
    return f"tensor<{'x'.join(str(s) for s in shape)}x{dtype}>"


def softmax_rows(scores, limits):
    """Exact weights of each row over its first limits[r] keys, and K (the
    rises of the running maximum) per row."""
    w = np.zeros_like(scores)
    rises = np.zeros(scores.shape[0])
    for r, lim in enumerate(limits):
        s = scores[r, :lim]
        e = np.exp(s - s.max())
        w[r, :lim] = e / e.sum()
        run = np.maximum.accumulate(s)
        rises[r] = 1 + np.count_nonzero(run[1:] > run[:-1])
    return w, rises


class Case:
    """One attention kernel in a kernel-dialect model, its inputs per start
    value, and its float64 expectation with per-element bounds."""

    def __init__(self, name, form, rng, b=1, s=1, t_len=16, heads=4, kv_heads=4, d=64, dv=None,
                 cache="bf16", causal=True, start=True, rotate=None, rank=0, dr=0, kvb="bf16"):
        self.name, self.form, self.b, self.s, self.T = name, form, b, s, t_len
        self.H, self.KVH, self.D = heads, kv_heads, d
        self.Dv = dv or d
        self.cache, self.causal, self.has_start, self.rotate = cache, causal, start, rotate
        self.rank, self.dr, self.kvb = rank, dr, kvb
        self.weights, self.w = [], {}

        def weight(nm, shape, dtype, scale=1.0):
            v, code, data = stored(rng.standard_normal(shape).astype(np.float32) * scale, dtype)
            self.w[nm] = v.astype(np.float64)
            self.weights.append((nm, code, shape, data))
            return f'    %{nm} = kiln.weight "{nm}" : {t(shape, MLIR[dtype])}'

        B, S, T, H = b, s, t_len, heads
        rows = B * S * H
        decls, args = [], []
        self.q_inputs = {}

        def qin(nm, shape):
            self.q_inputs[nm] = rng.standard_normal(shape).astype(np.float32)
            args.append(f'%{nm}: {t(shape, "f32")} {{kiln.name = "{nm}"}}')
        if form == "gqa":
            qin("q", (B, S, H, d))
            decls += [weight("k", (B, T, kv_heads, d), cache), weight("v", (B, T, kv_heads, self.Dv), cache)]
            self.scale = d ** -0.5
            opnds = "%q, %k, %v"
            types = [t((B, S, H, d), "f32"), t((B, T, kv_heads, d), MLIR[cache]),
                     t((B, T, kv_heads, self.Dv), MLIR[cache])]
            results = [t((B, S, H, self.Dv), "f32"), t((rows, d), "f32")]
            op = "attention"
        else:
            dn = d
            qin("qn", (B, S, H, dn))
            qin("qr", (B, S, H, dr))
            self.scale = (dn + dr) ** -0.5
            if form == "naive":
                decls += [weight("kv", (B, T, H, dn + self.Dv), cache), weight("kr", (B, T, dr), cache)]
                opnds = "%qn, %qr, %kv, %kr"
                types = [t((B, S, H, dn), "f32"), t((B, S, H, dr), "f32"),
                         t((B, T, H, dn + self.Dv), MLIR[cache]), t((B, T, dr), MLIR[cache])]
                results = [t((B, S, H, self.Dv), "f32"), t((rows, dr), "f32")]
                op = "mla_naive"
            else:
                latent_scale = ""
                if cache == "e4m3":
                    # The FP8 latent cache: e4m3 under one power-of-two
                    # scale per token, no subnormal codes, the rope key
                    # bf16. Tokens' magnitudes spread over 2^+-3 (scales
                    # differ), one token all zeros, and 2^-12 of the row's
                    # largest values (flushed to zero) in each.
                    x = rng.standard_normal((B, T, rank)) * np.exp2(rng.integers(-3, 4, (B, T, 1)))
                    x[..., 1] = 2.0 ** -12 * np.abs(x).max(axis=-1)
                    x[0, T // 2] = 0.0
                    q8, sc = F.latent_cache(x)
                    self.w["lat"] = F.dequantize_activation(q8, sc, block=rank)
                    self.weights += [("lat", "F8_E4M3", (B, T, rank), q8.tobytes()),
                                     ("lats", "F32", sc.shape, sc.astype(np.float32).tobytes())]
                    decls += [f'    %lat = kiln.weight "lat" : {t((B, T, rank), "f8E4M3FN")}',
                              f'    %lats = kiln.weight "lats" : {t(sc.shape, "f32")}',
                              weight("kr", (B, T, dr), "bf16")]
                    latent_scale = " kv_latent_scale(%lats)"
                    lat_types = [t((B, T, rank), "f8E4M3FN"), t((B, T, dr), "bf16")]
                    scale_types = [t(sc.shape, "f32")]
                else:
                    decls += [weight("lat", (B, T, rank), cache), weight("kr", (B, T, dr), cache)]
                    lat_types = [t((B, T, rank), MLIR[cache]), t((B, T, dr), MLIR[cache])]
                    scale_types = []
                wshape = (H * (dn + self.Dv), rank)
                w = rng.standard_normal(wshape).astype(np.float32) * rank ** -0.5
                if kvb == "e4m3":
                    q8, sc = F.quantize_weight_blocks(w)
                    self.w["kvb"] = F.dequantize_weight_blocks(q8, sc)
                    self.weights += [("kvb", "F8_E4M3", wshape, q8.tobytes()),
                                     ("kvbs", "F32", sc.shape, sc.astype(np.float32).tobytes())]
                    decls += [f'    %kvb = kiln.weight "kvb" : {t(wshape, "f8E4M3FN")}',
                              f'    %kvbs = kiln.weight "kvbs" : {t(sc.shape, "f32")}']
                    opnds = "%qn, %qr, %lat, %kr, %kvb kv_b_scale(%kvbs)"
                    wtypes = [t(wshape, "f8E4M3FN"), t(sc.shape, "f32")]
                else:
                    v, code, data = stored(w, kvb)
                    self.w["kvb"] = v.astype(np.float64)
                    self.weights.append(("kvb", code, wshape, data))
                    decls.append(f'    %kvb = kiln.weight "kvb" : {t(wshape, MLIR[kvb])}')
                    opnds = "%qn, %qr, %lat, %kr, %kvb"
                    wtypes = [t(wshape, MLIR[kvb])]
                opnds += latent_scale
                types = [t((B, S, H, dn), "f32"), t((B, S, H, dr), "f32")] + lat_types + wtypes + \
                    scale_types
                # the workspace: 2 rank + rope floats per row, twice that at S = 1
                ws = (2 * rank + dr) * (2 if S == 1 else 1)
                results = [t((B, S, H, self.Dv), "f32"), t((rows, ws), "f32")]
                op = "mla_attention"
        if start:
            args.append(f'%st: {t((B,), "i32")} {{kiln.name = "start"}}')
            opnds += " start(%st)"
            types.append(t((B,), "i32"))
        rot = rotation_attr(*rotate) if rotate else ""
        attrs = (f"{{scale = {self.scale:.8e} : f32, causal = {'true' if causal else 'false'}, "
                 f"{rot}fused_ops = [\"kiln.attention\"]}}")
        self.text = f"""
module attributes {{kiln.weights = "w.safetensors"}} {{
  func.func @forward({", ".join(args)}) -> ({results[0]} {{kiln.name = "o"}}) {{
{chr(10).join(decls)}
    %o, %ws = kiln_kernel.{op} {opnds} {attrs}
        : ({", ".join(types)}) -> ({", ".join(results)})
    return %o : {results[0]}
  }}
}}
"""

    def limits(self, start):
        """Keys each position s of batch row b sees: [B, S]."""
        s = np.arange(self.s)
        st = np.asarray(start)[:, None]
        if self.causal:
            return np.minimum(st + s + 1, self.T)
        if self.has_start:
            return np.broadcast_to(np.minimum(st + self.s, self.T), (self.b, self.s))
        return np.full((self.b, self.s), self.T)

    def expected(self, start, bf16=False):
        """(float64 output [B, S, H, Dv], its per-element bound for one
        emitter) at the given start values; with `bf16`, for an emitter that
        rounds the queries and the softmax weights to bf16 (relative error
        UB each: the scores' error grows by UB A_j, the output's by UB sum_j
        p_j |v_j|)."""
        B, S, H, T = self.b, self.s, self.H, self.T
        lim = self.limits(start)
        pos = np.asarray(start)[:, None] + np.arange(S)[None, :]  # [B, S]
        out = np.zeros((B, S, H, self.Dv))
        bound = np.zeros_like(out)
        for bi in range(B):
            for h in range(H):
                qs, ks, vs, dsx = self.row_parts(bi, h, pos[bi])
                # qs [S, n], ks [T, n], vs [T, m]; dsx [S, T] extra score error.
                n = qs.shape[1]
                scores = self.scale * qs @ ks.T
                a = self.scale * np.abs(qs) @ np.abs(ks).T
                ds = (n + 2 + (UB / U if bf16 else 0)) * U * a + dsx
                w, rises = softmax_rows(scores, lim[bi])
                for si in range(S):
                    L = lim[bi, si]
                    eps = 2 * ds[si, :L].max() + (4 + 2 * rises[si]) * 4 * U
                    rel = (L + 4) * U + 2 * eps + (UB if bf16 else 0)
                    o = w[si] @ vs
                    err = rel * (w[si] @ np.abs(vs))
                    if self.form == "absorbed":
                        wuv = self.wuv(h)  # [dv, rank]
                        err = np.abs(wuv) @ err + (self.rank + 2) * U * (np.abs(wuv) @ np.abs(o))
                        o = wuv @ o
                    out[bi, si, h] = o
                    bound[bi, si, h] = err
        return out, bound

    def wuv(self, h):
        dn, dv = self.D, self.Dv
        return self.w["kvb"][h * (dn + dv) + dn:(h + 1) * (dn + dv)]

    def row_parts(self, bi, h, pos):
        """Queries (rotated), keys and values of head h of batch row bi, as
        the dot products see them, and the extra score error."""
        S, T = self.s, self.T
        extra = np.zeros((S, T))
        if self.form == "gqa":
            q = self.q_inputs["q"][bi, :, h].astype(np.float64)
            if self.rotate:
                q = np.concatenate([rope(q[:, :self.rotate[0]], pos, *self.rotate),
                                    q[:, self.rotate[0]:]], axis=1)
            kvh = h // (self.H // self.KVH)
            return q, self.w["k"][bi, :, kvh], self.w["v"][bi, :, kvh], extra
        qn = self.q_inputs["qn"][bi, :, h].astype(np.float64)
        qr = self.q_inputs["qr"][bi, :, h].astype(np.float64)
        if self.rotate:
            qr = np.concatenate([rope(qr[:, :self.rotate[0]], pos, *self.rotate),
                                 qr[:, self.rotate[0]:]], axis=1)
        kr = self.w["kr"][bi]
        if self.form == "naive":
            kv = self.w["kv"][bi, :, h]
            return (np.concatenate([qn, qr], 1), np.concatenate([kv[:, :self.D], kr], 1),
                    kv[:, self.D:], extra)
        dn, dv = self.D, self.Dv
        wuk = self.w["kvb"][h * (dn + dv):h * (dn + dv) + dn]  # [dn, rank]
        qlat = qn @ wuk
        dq = (dn + 1) * U * (np.abs(qn) @ np.abs(wuk))  # [S, rank]
        lat = self.w["lat"][bi]
        extra = self.scale * dq @ np.abs(lat).T
        return np.concatenate([qlat, qr], 1), np.concatenate([lat, kr], 1), lat, extra


def compile_case(tmp, case, variant, flags):
    """(the case's kernel model compiled with `flags`, its IR dump folder)."""
    d = os.path.join(tmp, f"{case.name}_{variant}")
    os.makedirs(d, exist_ok=True)
    mk.write_safetensors(os.path.join(d, "w.safetensors"), case.weights)
    ir = os.path.join(tmp, f"{case.name}_{variant}_ir")
    return KernelModel(tmp, f"{case.name}_{variant}", case.text,
                       flags=[*flags, "--dump-ir-dir", ir]), ir


class CpuAttentionEmitter(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cpu-attn-")
        cls.rng = np.random.default_rng(17)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def check(self, case, starts):
        """Both emitters on `case` at each start vector of `starts`; the
        optimized kernel's config."""
        ref, _ = compile_case(self.tmp, case, "ref", ["--cpu-emitter=reference"])
        opt, ir = compile_case(self.tmp, case, "opt", [])
        (kref,), (kopt,) = ref.kernel_info(), opt.kernel_info()
        self.assertEqual(kref["name"], kopt["name"])
        self.assertIn("cpu=reference", kref["config"])
        form = {"gqa": "gqa", "naive": "mla naive", "absorbed": "mla absorbed"}[case.form]
        self.assertRegex(kopt["config"], rf"cpu=(avx512|avx2 \(8-lane ymm vectors\)) fp32 {form}")
        # zmm-wide FMAs for AVX-512 hosts, ymm-wide on AVX2 + FMA ones.
        width = 16 if "cpu=avx512" in kopt["config"] else 8
        (ll,) = glob.glob(os.path.join(ir, "*-cpu.ll"))
        with open(ll) as f:
            self.assertTrue(re.search(rf"(fmuladd|fma)\.v{width}f32", f.read()),
                            f"no {width}-lane FMAs in the IR")
        for st in starts:
            inputs = dict(case.q_inputs)
            if case.has_start:
                inputs["start"] = np.asarray(st, np.int32)
            want, bound = case.expected(st if case.has_start else [0] * case.b)
            (r,) = ref(inputs, ["o"], threads=1)
            what = f"{case.name} start={st}"
            r64 = r.astype(np.float64)
            bad = np.argwhere(np.abs(r64 - want) > bound)
            self.assertEqual(len(bad), 0, f"{what}: reference off float64 at {bad[:3].tolist()}")
            first = None
            for threads in THREADS:
                (g,) = opt(inputs, ["o"], threads=threads)
                if first is None:
                    first = g
                np.testing.assert_array_equal(g, first, f"{what} threads={threads}")
                d = np.abs(g.astype(np.float64) - r64)
                bad = np.argwhere(d > 2 * bound)
                self.assertEqual(len(bad), 0, f"{what} threads={threads}: {len(bad)} outputs off "
                                 f"the reference, first {bad[:3].tolist()}, max {d.max():.3e}")
                # The bound above is the worst case (sequential sums of T
                # terms); the errors seen are a few ulp of the largest
                # output, and 1e-5 of it leaves ample room.
                self.assertLessEqual(d.max(), 1e-5 * np.abs(r64).max(), what)
        return kopt["config"]

    def test_zmm_code_for_avx512_targets(self):
        """Compiled for an AVX-512 CPU (whatever the host), each form's
        block loop is zmm FMAs: llc turns the plan's LLVM IR into the
        machine code for sapphirerapids, and the kernel's entry with its
        helper NAME.blocks (inlined or not) holds vfmadd...ps on zmm
        registers."""
        llc = shutil.which("llc-22") or "/usr/lib/llvm-22/bin/llc"
        self.assertTrue(os.path.exists(llc), "llc (LLVM 22) not found")
        for case in (Case("zmm_gqa", "gqa", self.rng, s=1, t_len=32, heads=8, kv_heads=2, d=64),
                     Case("zmm_mla", "absorbed", self.rng, s=1, t_len=32, heads=4, d=32, dv=32,
                          rank=64, dr=16),
                     Case("zmm_naive", "naive", self.rng, s=2, t_len=32, heads=2, d=32, dv=32, dr=16)):
            with self.subTest(case=case.name):
                model, ir = compile_case(self.tmp, case, "spr", ["--cpu=sapphirerapids"])
                (k,) = model.kernel_info()
                self.assertIn("cpu=avx512 fp32", k["config"])
                (ll,) = glob.glob(os.path.join(ir, "*-cpu.ll"))
                asm = subprocess.run([llc, "-O3", "-mcpu=sapphirerapids", ll, "-o", "-"],
                                     capture_output=True, text=True, check=True).stdout
                bodies = re.findall(r"^" + re.escape(k["name"]) + r"(?:\.blocks)?:(.*?)\.Lfunc_end", asm,
                                    re.S | re.M)
                self.assertTrue(bodies, "no kernel entry in the machine code")
                self.assertRegex("".join(bodies), r"vfmadd\d+ps\s+[^\n]*%zmm")

    # --- GQA ---

    def test_gqa_decode_ratio8(self):
        # llama's shape: 32 heads over 4 KV heads of 64; 300 keys (not a
        # multiple of 16); decode at the first, an inner and the last position.
        case = Case("gqa_dec8", "gqa", self.rng, s=1, t_len=300, heads=32, kv_heads=4, d=64)
        self.check(case, [[0], [17], [299]])

    def test_gqa_prefill_chunk_ratio1_f32(self):
        case = Case("gqa_r1", "gqa", self.rng, s=5, t_len=100, heads=4, kv_heads=4, d=128, cache="f32")
        self.check(case, [[37], [95]])

    def test_gqa_ratio4_odd_dim_rope(self):
        # Head dim 72 (4.5 vectors), rope over 64 of it, fused into the kernel.
        case = Case("gqa_r4", "gqa", self.rng, s=7, t_len=64, heads=8, kv_heads=2, d=72,
                    rotate=(64, False))
        self.check(case, [[20], [0]])

    def test_gqa_batch2_small_dims(self):
        # Head dim 40, value dim 24, f16 caches, 9 positions (more than a
        # block of 8 heads x 2 positions), keys = positions, no start.
        case = Case("gqa_b2", "gqa", self.rng, b=2, s=9, t_len=9, heads=6, kv_heads=3, d=40, dv=24,
                    cache="f16", start=False)
        self.check(case, [None])

    def test_gqa_not_causal(self):
        for start in (True, False):
            with self.subTest(start=start):
                case = Case(f"gqa_nc{int(start)}", "gqa", self.rng, b=2, s=3, t_len=40, heads=4,
                            kv_heads=2, d=64, causal=False, start=start)
                self.check(case, [[5, 37]] if start else [None])

    def test_gqa_ratio32(self):
        # 32 heads per KV head: blocks of 16 of them; batch 2 at two positions.
        case = Case("gqa_r32", "gqa", self.rng, b=2, s=1, t_len=50, heads=32, kv_heads=1, d=64)
        self.check(case, [[5, 49]])

    # --- MLA absorbed ---

    def test_mla_deepseek_decode(self):
        # DeepSeek-V3's per-head shapes, 16 heads, bf16 caches and kv_b.
        case = Case("mla_ds", "absorbed", self.rng, s=1, t_len=200, heads=16, d=128, dv=128,
                    rank=512, dr=64, rotate=(64, True))
        self.check(case, [[0], [77], [199]])

    def test_mla_decode_split_keys(self):
        # Decode from 1024 keys on: each block's keys in two halves run by
        # different programs, merged per head in a third phase (split at 576 of 1100 with
        # a partial last block of 12; at 512 of exactly 1024). Batch 2: a
        # split row beside one below the threshold.
        case = Case("mla_split", "absorbed", self.rng, b=2, s=1, t_len=1100, heads=16, d=128,
                    dv=128, rank=512, dr=64, rotate=(64, True))
        self.check(case, [[1099, 300], [1023, 1099]])
        opt, _ = compile_case(self.tmp, case, "opt", [])
        self.assertIn("keys split in 2 ranges", opt.kernel_info()[0]["config"])

    def test_mla_fp8_kvb_odd_rank(self):
        # Rank 200 (12.5 vectors; a partial 128-block of scales), e4m3 kv_b
        # with block scales, f32 caches, 3 positions, batch 2.
        case = Case("mla_fp8", "absorbed", self.rng, b=2, s=3, t_len=40, heads=4, d=64, dv=64,
                    rank=200, dr=64, cache="f32", kvb="e4m3")
        self.check(case, [[10, 37]])

    def test_mla_fp8_latent_cache(self):
        # The FP8 latent cache (e4m3, one power-of-two scale per token, the
        # rope key bf16): the f32 emitter dequantizes each key row as it
        # widens it. Several positions with an e4m3 kv_b (head-major), then
        # DeepSeek-V3's decode shape with the key split from 1024 keys on.
        case = Case("mla_f8c", "absorbed", self.rng, b=2, s=2, t_len=40, heads=4, d=64, dv=64,
                    rank=256, dr=64, cache="e4m3", kvb="e4m3")
        self.check(case, [[5, 38], [0, 20]])
        case = Case("mla_f8d", "absorbed", self.rng, b=2, s=1, t_len=1100, heads=16, d=128,
                    dv=128, rank=512, dr=64, rotate=(64, True), cache="e4m3")
        config = self.check(case, [[1099, 300], [1023, 0]])
        self.assertIn("FP8 latent cache dequantized as it is widened", config)

    def test_mla_small_rank_prefill(self):
        # Rank 64, 20 heads (a block of 16 heads, then 4), 2 positions.
        case = Case("mla_r64", "absorbed", self.rng, s=2, t_len=33, heads=20, d=64, dv=128,
                    rank=64, dr=64)
        self.check(case, [[31], [3]])

    # --- MLA naive ---

    def test_mla_naive_prefill(self):
        # 20 positions (blocks of 16, then 4) of 4 heads; f32 kv (a GEMM's
        # output), nope 128, rope 64, v 128.
        case = Case("naive_pf", "naive", self.rng, s=20, t_len=64, heads=4, d=128, dv=128, dr=64,
                    cache="f32", rotate=(64, True))
        self.check(case, [[30], [44]])

    def test_mla_naive_small(self):
        case = Case("naive_sm", "naive", self.rng, b=2, s=5, t_len=5, heads=3, d=64, dv=40, dr=16,
                    start=False)
        self.check(case, [None])



class CpuAttentionAmx(unittest.TestCase):
    """MLA absorbed on AMX-BF16 tiles (--cpu-gemm-precision=bf16 for
    Sapphire Rapids): run natively where the host has AMX, else through
    cpu_emulation.py (the tile instructions replaced by their SDM
    semantics; KILN_TEST_EMULATE=1 forces that). The cases' float64
    expectation, with the bound of an emitter that rounds queries and
    softmax weights to bf16; outputs bit-identical across thread counts (a
    row's lanes never mix with another row's)."""

    CPU = "sapphirerapids"
    FLAGS = ["--cpu-gemm-precision=bf16", f"--cpu={CPU}"]
    # The kernel config's form and an instruction its IR must use.
    FORM, INSTRUCTION = "cpu=amx-bf16 mla absorbed", "tdpbf16ps"

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cpu-attn-amx-")
        cls.rng = np.random.default_rng(23)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def outputs(self, case, model, ir, kernel, inputs, threads):
        if host_runs(self.CPU) and os.environ.get("KILN_TEST_EMULATE") != "1":
            (o,) = model(inputs, ["o"], threads=threads)
            return o
        import cpu_emulation as E
        if getattr(self, "_so", (None,))[0] != ir:
            (ll,) = glob.glob(os.path.join(ir, "*-cpu.ll"))
            self._so = (ir, E.Kernels(E.build_shared_object(ll, ir)))
        raw = {"BF16": np.uint16, "F8_E4M3": np.uint8, "F32": np.float32}
        w = {nm: np.frombuffer(d, raw[code]).reshape(shape).copy()
             for nm, code, shape, d in case.weights}
        rows = case.b * case.s * case.H
        bufs = [inputs["qn"], inputs["qr"], w["lat"], w["kr"], w["kvb"]]
        for scales in ("kvbs", "lats"):
            if scales in w:
                bufs.append(w[scales])
        if case.has_start:
            bufs.append(inputs["start"])
        out = np.full((case.b, case.s, case.H, case.Dv), np.nan, np.float32)
        ws = np.zeros((rows, (2 * case.rank + case.dr) * (2 if case.s == 1 else 1)), np.float32)
        self._so[1].split(kernel, [*bufs, out, ws], rows, threads)
        return out

    def check(self, case, starts):
        model, ir = compile_case(self.tmp, case, self.CPU, self.FLAGS)
        (k,) = model.kernel_info()
        self.assertIn(self.FORM, k["config"])
        (ll,) = glob.glob(os.path.join(ir, "*-cpu.ll"))
        with open(ll) as f:
            self.assertIn(self.INSTRUCTION, f.read())
        for st in starts:
            inputs = dict(case.q_inputs)
            if case.has_start:
                inputs["start"] = np.asarray(st, np.int32)
            want, bound = case.expected(st if case.has_start else [0] * case.b, bf16=True)
            first = None
            for threads in THREADS:
                g = self.outputs(case, model, ir, k["name"], inputs, threads)
                what = f"{case.name} start={st} threads={threads}"
                if first is None:
                    first = g
                np.testing.assert_array_equal(g, first, what)
                err = np.abs(g.astype(np.float64) - want)
                bad = np.argwhere(~(err <= bound))
                self.assertEqual(len(bad), 0, f"{what}: {len(bad)} outputs off float64, first "
                                 f"{bad[:3].tolist()}, max {err.max():.3e}")
                # The bound is the worst case; bf16's rounding of q and p
                # shows as ~2^-9 of the largest output, and 2^-6 of it
                # leaves room.
                self.assertLessEqual(err.max(), 2.0 ** -6 * np.abs(want).max(), what)

    def test_deepseek_decode(self):
        # DeepSeek-V3's per-head shapes, 16 heads; 200 keys: a partial last
        # block of 8 (from the zero-padded copy).
        case = Case("amx_ds", "absorbed", self.rng, s=1, t_len=200, heads=16, d=128, dv=128,
                    rank=512, dr=64, rotate=(64, True))
        self.check(case, [[0], [77], [199]])

    def test_decode_split_keys(self):
        # The key split of long decodes (test_mla_decode_split_keys) on
        # tiles: halves of 576 + 524 and 512 + 512 keys, batch 2.
        case = Case("amx_split", "absorbed", self.rng, b=2, s=1, t_len=1100, heads=16, d=128,
                    dv=128, rank=512, dr=64, rotate=(64, True))
        self.check(case, [[1099, 300], [1023, 1099]])

    def test_prefill_heads_past_a_tile(self):
        # 20 heads (a block of 16 rows, then 4), 3 positions, causal: rows of
        # one block with different key limits; 64 keys (two whole blocks).
        case = Case("amx_r64", "absorbed", self.rng, s=3, t_len=64, heads=20, d=64, dv=64,
                    rank=64, dr=32)
        self.check(case, [[61], [0]])

    def test_fp8_latent_cache_decode(self):
        # The FP8 latent cache (e4m3 codes staged as bf16 x 2^-120, the
        # token scales on the scores and probabilities): DeepSeek-V3's
        # shapes, a partial last block, one all-zero token, and the key
        # split from 1024 keys on (batch 2).
        case = Case("amx_f8", "absorbed", self.rng, s=1, t_len=200, heads=16, d=128, dv=128,
                    rank=512, dr=64, rotate=(64, True), cache="e4m3")
        self.check(case, [[0], [100], [199]])
        case = Case("amx_f8s", "absorbed", self.rng, b=2, s=1, t_len=1100, heads=16, d=128,
                    dv=128, rank=512, dr=64, rotate=(64, True), cache="e4m3")
        self.check(case, [[1099, 300], [1023, 1099]])

    def test_fp8_latent_cache_prefill_fp8_kvb(self):
        # Several positions per block (head-major: e4m3 kv_b), not causal.
        case = Case("amx_f8p", "absorbed", self.rng, b=2, s=3, t_len=45, heads=4, d=64, dv=64,
                    rank=128, dr=64, kvb="e4m3", causal=False, cache="e4m3")
        self.check(case, [[10, 42]])

    def test_fp8_kvb_batch2(self):
        # e4m3 kv_b with block scales, batch 2, not causal with start.
        case = Case("amx_fp8", "absorbed", self.rng, b=2, s=2, t_len=45, heads=4, d=64, dv=64,
                    rank=128, dr=64, kvb="e4m3", causal=False)
        self.check(case, [[10, 43]])



class CpuAttentionDpbf16(CpuAttentionAmx):
    """The same cases on an AVX-512-BF16 target without AMX (Cooper Lake,
    as AMD Zen 4 and 5): MLA absorbed under --cpu-gemm-precision=bf16 by
    vdpbf16ps, with the AMX form's roundings (queries and softmax weights
    to bf16) and so its bound; native where the host has AVX-512-BF16, else
    emulated."""

    CPU = "cooperlake"
    FLAGS = ["--cpu-gemm-precision=bf16", f"--cpu={CPU}"]
    FORM, INSTRUCTION = "cpu=avx512-bf16 mla absorbed", "dpbf16ps"


class WholeModelBF16(unittest.TestCase):
    """The tiny DeepSeek-V3 checkpoint under --cpu-gemm-precision=bf16 on
    this host (MLA absorbed on AMX tiles, by vdpbf16ps on AVX-512-BF16, or
    the f32 form), bf16 and FP8 latent caches: prefill (absorbed, several
    positions per block) and decode logits against the reference emitter's
    plan with the same cache, within 2^-7 relative L2 (q, p and every GEMM
    input rounded to bf16 over 3 layers; 2^-6 with the FP8 cache)."""

    def test_deepseek_bf16_precision(self):
        tmp = tempfile.mkdtemp(prefix="kiln-attn-model-")
        self.addCleanup(shutil.rmtree, tmp, True)
        ck = os.path.join(tmp, "ds")
        # Rank and rope dims multiples of 32, as the bf16 forms need; dense
        # layers only, so that no near-tie of the MoE routing flips under
        # bf16 rounding (seen: one such flip moved the logits by 9e-2).
        cfg = mk.make_checkpoint("deepseek_v3", ck, dtype="bf16",
                                 overrides={"kv_lora_rank": 64, "qk_rope_head_dim": 32,
                                            "first_k_dense_replace": 3})
        self.assertEqual(cfg["first_k_dense_replace"], cfg["num_hidden_layers"])
        tokens = os.path.join(tmp, "tokens.npy")
        np.save(tokens, np.random.default_rng(5).integers(0, 128, (1, 12), dtype=np.int32))
        form = {"amx-bf16": "cpu=amx-bf16 mla absorbed",
                "avx512-bf16": "cpu=avx512-bf16 mla absorbed"}.get(bf16_tiles(), "fp32 mla absorbed")
        for cache in ("bf16", "fp8"):
            got = {}
            for name, flags in (("ref", ["--cpu-emitter=reference"]),
                                ("opt", ["--cpu-gemm-precision=bf16"])):
                plan = os.path.join(tmp, f"{name}-{cache}.kplan")
                run([tool("kiln-compile"), ck, "-o", plan, "--max-seq=16", "--mla-form=absorbed",
                     f"--kv-cache-dtype={cache}", *flags])
                if name == "opt":
                    configs = [k["config"] for k in
                               json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)["kernels"]
                               if k["name"].startswith("mla")]
                    self.assertTrue(configs and all(form in c for c in configs), configs)
                out = os.path.join(tmp, f"{name}-{cache}.npy")
                run([tool("kiln-run"), plan, "--input", f"tokens={tokens}", "--decode-each", out])
                got[name] = np.load(out).astype(np.float64)
            rel = np.linalg.norm(got["opt"] - got["ref"]) / np.linalg.norm(got["ref"])
            # Measured 1.4e-3 (bf16 cache) and 3.5e-3 (fp8: the latent
            # itself comes from bf16-rounded GEMM inputs, and a perturbed
            # value flips its e4m3 code, 2^-4 relative, with a few percent
            # probability).
            self.assertLessEqual(rel, 2.0 ** -7 if cache == "bf16" else 2.0 ** -6, cache)
            self.assertGreater(rel, 0.0, cache)

if __name__ == "__main__":
    unittest.main()
