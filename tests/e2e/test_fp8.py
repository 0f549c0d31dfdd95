"""FP8 block quantization, DeepSeek-V3's scheme, at three levels:

1. e4m3 conversion in generated code against an independent reference, for
   all 256 bit patterns, rounding ties and saturation;
2. kernels: activation quantization (bit for bit), the block-scaled GEMM
   (1e-5 relative, fp32 accumulation), fused RMSNorm quantization;
3. end to end on an FP8 DeepSeek-V3 checkpoint, compared statistically with
   an independent numpy emulation of the same scheme (fp8_reference.py).

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilntest import (HOST_AVX512_BF16, HOST_AVX512_VBMI, HOST_ZEN, KernelModel, run,  # noqa: E402
                      tool)
import fp8_reference as F  # noqa: E402
import hf_reference as R  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

QUANT = "#kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>"


class E4M3(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-e4m3-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def cast_model(self, n, src, dst):
        return KernelModel(self.tmp, f"cast_{src}_{dst}_{n}", f"""
module {{
  func.func @forward(%x: tensor<{n}x{src}> {{kiln.name = "x"}}) -> (tensor<{n}x{dst}> {{kiln.name = "y"}}) {{
    %y = kiln.cast %x : (tensor<{n}x{src}>) -> tensor<{n}x{dst}>
    return %y : tensor<{n}x{dst}>
  }}
}}
""")

    def test_decode_all_256_patterns(self):
        patterns = np.arange(256, dtype=np.uint8)
        (y,) = self.cast_model(256, "f8E4M3FN", "f32")({"x": patterns}, ["y"])
        expected = F.e4m3_decode(patterns).astype(np.float32)
        nan = np.isnan(expected)
        self.assertEqual(int(nan.sum()), 2)  # 0x7F and 0xFF
        np.testing.assert_array_equal(np.isnan(y), nan)
        np.testing.assert_array_equal(y[~nan].view(np.uint32), expected[~nan].view(np.uint32))

    def test_encode_patterns_ties_and_saturation(self):
        finite = np.array([p for p in range(256) if p & 0x7F != 0x7F], dtype=np.uint8)
        values = F.e4m3_decode(finite)
        pos = np.unique(values[values > 0])
        mids = (pos[:-1] + pos[1:]) / 2                       # exact ties
        below, above = np.nextafter(mids.astype(np.float32), 0), np.nextafter(mids.astype(np.float32), 1e9)
        sub_ties = np.array([0.5, 1.5, 2.5, 3.5, 6.5, 7.5]) * 2.0 ** -9
        special = np.array([448.0, 448.5, 463.9, 464.0, 480.0, 500.0, 1e9, 3e38,
                            2.0 ** -10, 2.0 ** -11, 1e-30, 0.0, -0.0])
        x = np.concatenate([values, mids, -mids, below, above, sub_ties, -sub_ties, special, -special])
        x = x.astype(np.float32)
        (q,) = self.cast_model(len(x), "f32", "f8E4M3FN")({"x": x}, ["y"])
        expected = F.e4m3_encode(x)
        bad = np.nonzero(q != expected)[0]
        self.assertEqual(len(bad), 0, [(float(x[i]), int(q[i]), int(expected[i])) for i in bad[:10]])
        # Spot checks independent of the reference.
        enc = dict(zip(x.tolist(), q.tolist()))
        self.assertEqual(enc[1.0625], 0x38)       # tie between 1.0 and 1.125 -> even (1.0)
        self.assertEqual(enc[1e9], 0x7E)          # saturates to 448
        self.assertEqual(enc[-1e9], 0xFE)
        self.assertEqual(enc[464.0], 0x7E)


class Kernels(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-fp8k-")
        cls.rng = np.random.default_rng(5)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def activations(self, m, k):
        x = (self.rng.standard_normal((m, k)) * np.exp(self.rng.standard_normal((m, 1)) * 2)).astype(np.float32)
        x[1] *= 1e-7   # amax below the 1e-4 floor
        x[2, :] = 0.0  # all zeros
        return x

    def test_activation_quantization_bit_exact(self):
        m, k = 6, 300  # 3 tiles, the last partial
        model = KernelModel(self.tmp, "quant", f"""
module {{
  func.func @forward(%x: tensor<{m}x{k}xf32> {{kiln.name = "x"}})
      -> (tensor<{m}x{k}xf8E4M3FN> {{kiln.name = "q"}}, tensor<{m}x3xf32> {{kiln.name = "s"}}) {{
    %q, %s = kiln.quantize %x {{quant = {QUANT}}} : (tensor<{m}x{k}xf32>) -> (tensor<{m}x{k}xf8E4M3FN>, tensor<{m}x3xf32>)
    return %q, %s : tensor<{m}x{k}xf8E4M3FN>, tensor<{m}x3xf32>
  }}
}}
""")
        x = self.activations(m, k)
        q, s = model({"x": x}, ["q", "s"])
        eq, es = F.quantize_activation(x)
        np.testing.assert_array_equal(s.view(np.uint32), es.astype(np.float32).view(np.uint32))
        np.testing.assert_array_equal(q, eq)

    def test_latent_cache_quantization_bit_exact(self):
        """kiln.quantize with pow2_scale and flush_subnormals over whole rows
        (the FP8 latent cache's form) against fp8_reference.latent_cache:
        scales powers of two, no subnormal codes; rows with values below 2^-6
        of the scale (flushed), an amax under the floor, and all zeros."""
        m, k = 6, 512
        model = KernelModel(self.tmp, "quant_cache", f"""
module {{
  func.func @forward(%x: tensor<{m}x{k}xf32> {{kiln.name = "x"}})
      -> (tensor<{m}x{k}xf8E4M3FN> {{kiln.name = "q"}}, tensor<{m}x1xf32> {{kiln.name = "s"}}) {{
    %q, %s = kiln.quantize %x {{quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = {k}>,
                               pow2_scale = true, flush_subnormals = true}}
        : (tensor<{m}x{k}xf32>) -> (tensor<{m}x{k}xf8E4M3FN>, tensor<{m}x1xf32>)
    return %q, %s : tensor<{m}x{k}xf8E4M3FN>, tensor<{m}x1xf32>
  }}
}}
""")
        x = self.activations(m, k)
        x[3, :40] *= 1e-5  # codes that would be subnormal
        q, s = model({"x": x}, ["q", "s"])
        eq, es = F.latent_cache(x)
        np.testing.assert_array_equal(s.view(np.uint32), es.astype(np.float32).view(np.uint32))
        np.testing.assert_array_equal(q, eq)
        mant, _ = np.frexp(s)
        np.testing.assert_array_equal(mant, 0.5)
        self.assertFalse(np.any(((q & 0x78) == 0) & ((q & 0x07) != 0)), "a subnormal code")
        self.assertTrue(np.any(((F.quantize_activation(x, block=k, pow2_scale=True)[0] & 0x78) == 0)
                               & (eq == 0) & (x != 0)), "nothing was flushed")

    def test_block_scaled_gemm(self):
        m, k, n = 6, 300, 200  # partial blocks along K and N
        w = (self.rng.standard_normal((n, k)) * k ** -0.5).astype(np.float32)
        wq, ws = F.quantize_weight_blocks(w)
        model = KernelModel(self.tmp, "gemm", f"""
module {{
  func.func @forward(%x: tensor<{m}x{k}xf32> {{kiln.name = "x"}})
      -> (tensor<{m}x{k}xf8E4M3FN> {{kiln.name = "q"}}, tensor<{m}x3xf32> {{kiln.name = "s"}},
          tensor<{m}x{n}xf32> {{kiln.name = "y"}}) {{
    %q, %s = kiln.quantize %x {{quant = {QUANT}}} : (tensor<{m}x{k}xf32>) -> (tensor<{m}x{k}xf8E4M3FN>, tensor<{m}x3xf32>)
    %w = kiln.weight "w.weight" : tensor<{n}x{k}xf8E4M3FN>
    %ws = kiln.weight "w.weight_scale_inv" : tensor<2x3xf32>
    %y = kiln.linear %q, %w scales(%s, %ws) {{quant = {QUANT}}}
        : (tensor<{m}x{k}xf8E4M3FN>, tensor<{n}x{k}xf8E4M3FN>, tensor<{m}x3xf32>, tensor<2x3xf32>) -> tensor<{m}x{n}xf32>
    return %q, %s, %y : tensor<{m}x{k}xf8E4M3FN>, tensor<{m}x3xf32>, tensor<{m}x{n}xf32>
  }}
}}
""", weights=[("w.weight", wq), ("w.weight_scale_inv", ws.astype(np.float32))])
        x = self.activations(m, k)
        q, s, y = model({"x": x}, ["q", "s", "y"])
        eq, es = F.quantize_activation(x)
        np.testing.assert_array_equal(q, eq)
        np.testing.assert_array_equal(s, es)
        expected = F.fp8_gemm(eq, es, wq, ws)
        nz = np.abs(expected).max(axis=1) > 0
        err = np.abs(y - expected).max() / np.abs(expected[nz]).max()
        self.assertLessEqual(err, 1e-5, f"GEMM relative error {err:.2e}")
        self.assertTrue(np.all(y[2] == 0))  # zero row stays zero

    def test_fused_fp8_gemms_match_unfused(self):
        """gemm_swiglu_fp8 (gate + up + SwiGLU + quantization) and
        gemm_dual_fp8 (two projections of one quantized input) against the
        unfused kernels on the same inputs, and both against numpy."""
        m, k, f, n1, n2 = 5, 300, 260, 200, 72  # partial blocks and tiles
        def weight(rows, cols):
            w = (self.rng.standard_normal((rows, cols)) * cols ** -0.5).astype(np.float32)
            return F.quantize_weight_blocks(w)
        (wg, wgs), (wu, wus), (wd, wds) = weight(f, k), weight(f, k), weight(k, f)
        (w1, w1s), (w2, w2s) = weight(n1, k), weight(n2, k)
        def cb(r):
            return -(-r // 128)
        def lin(x, xs, w, rows, cols):
            return (f"kiln.linear {x}, %{w} scales({xs}, %{w}s) {{quant = {QUANT}}} : "
                    f"(tensor<{m}x{cols}xf8E4M3FN>, tensor<{rows}x{cols}xf8E4M3FN>, "
                    f"tensor<{m}x{cb(cols)}xf32>, tensor<{cb(rows)}x{cb(cols)}xf32>) -> tensor<{m}x{rows}xf32>")
        decls = "\n".join(
            f'    %{w} = kiln.weight "{w}.weight" : tensor<{r}x{c}xf8E4M3FN>\n'
            f'    %{w}s = kiln.weight "{w}.weight_scale_inv" : tensor<{cb(r)}x{cb(c)}xf32>'
            for w, r, c in [("wg", f, k), ("wu", f, k), ("wd", k, f), ("w1", n1, k), ("w2", n2, k)])
        outs = (f"tensor<{m}x{f}xf8E4M3FN>, tensor<{m}x{cb(f)}xf32>, tensor<{m}x{k}xf32>, "
                f"tensor<{m}x{n1}xf32>, tensor<{m}x{n2}xf32>")
        text = f"""
module {{
  func.func @forward(%x: tensor<{m}x{k}xf32> {{kiln.name = "x"}})
      -> (tensor<{m}x{f}xf8E4M3FN> {{kiln.name = "aq"}}, tensor<{m}x{cb(f)}xf32> {{kiln.name = "as"}},
          tensor<{m}x{k}xf32> {{kiln.name = "y"}}, tensor<{m}x{n1}xf32> {{kiln.name = "p1"}},
          tensor<{m}x{n2}xf32> {{kiln.name = "p2"}}) {{
{decls}
    %q, %s = kiln.quantize %x {{quant = {QUANT}}} : (tensor<{m}x{k}xf32>) -> (tensor<{m}x{k}xf8E4M3FN>, tensor<{m}x{cb(k)}xf32>)
    %g = {lin("%q", "%s", "wg", f, k)}
    %u = {lin("%q", "%s", "wu", f, k)}
    %a = kiln.swiglu %g, %u : (tensor<{m}x{f}xf32>, tensor<{m}x{f}xf32>) -> tensor<{m}x{f}xf32>
    %aq, %as = kiln.quantize %a {{quant = {QUANT}}} : (tensor<{m}x{f}xf32>) -> (tensor<{m}x{f}xf8E4M3FN>, tensor<{m}x{cb(f)}xf32>)
    %y = {lin("%aq", "%as", "wd", k, f)}
    %p1 = {lin("%q", "%s", "w1", n1, k)}
    %p2 = {lin("%q", "%s", "w2", n2, k)}
    return %aq, %as, %y, %p1, %p2 : {outs}
  }}
}}
"""
        weights = []
        for name, (wq, ws) in [("wg", (wg, wgs)), ("wu", (wu, wus)), ("wd", (wd, wds)),
                               ("w1", (w1, w1s)), ("w2", (w2, w2s))]:
            weights += [(f"{name}.weight", wq), (f"{name}.weight_scale_inv", ws.astype(np.float32))]
        # The reference emitter for both: fused and unfused kernels then sum
        # in the same order (the optimized emitter's FP8 GEMMs sum in
        # another, which test_cpu_fp8.py bounds against the reference).
        fused = KernelModel(self.tmp, "mlp_fused", text, weights, ["--cpu-emitter=reference"])
        unfused = KernelModel(self.tmp, "mlp_unfused", text, weights,
                              ["--no-fuse", "--cpu-emitter=reference"])
        names = fused.kernels()
        self.assertTrue(any(n.startswith("gemm_swiglu_fp8") for n in names), names)
        self.assertTrue(any(n.startswith("gemm_dual_fp8") for n in names), names)
        self.assertFalse(any(n.startswith(("swiglu_quant", "elementwise")) for n in names), names)
        self.assertFalse(any(n.startswith("gemm_dual_fp8") for n in unfused.kernels()))
        x = self.activations(m, k)
        got = fused({"x": x}, ["aq", "as", "y", "p1", "p2"])
        ref = unfused({"x": x}, ["aq", "as", "y", "p1", "p2"])
        for name, a, b in zip(["aq", "as", "y", "p1", "p2"], got, ref):
            np.testing.assert_array_equal(a, b, err_msg=name)
        # And against numpy, from the equations.
        xq, xs = F.quantize_activation(x)
        g, u = F.fp8_gemm(xq, xs, wg, wgs), F.fp8_gemm(xq, xs, wu, wus)
        eq, es = F.quantize_activation((g / (1 + np.exp(-g)) * u).astype(np.float32))
        mismatch = np.mean(got[0] != eq)
        self.assertLessEqual(mismatch, 0.01, f"{mismatch:.2%} of e4m3 codes differ")
        np.testing.assert_allclose(got[1], es, rtol=1e-5)
        for y, w, ws in [(got[3], w1, w1s), (got[4], w2, w2s)]:
            expected = F.fp8_gemm(xq, xs, w, ws)
            err = np.abs(y - expected).max() / np.abs(expected).max()
            self.assertLessEqual(err, 1e-5)

    def test_mla_output_quantization_matches_unfused(self):
        """mla_attention_quant (the absorbed MLA quantizing its own output,
        v_head_dim = 128 as in DeepSeek-V3, with the query rope fused in)
        against mla_attention + rope + quantize (--no-fuse), same inputs."""
        b, s, h, dn, dr, rank, dv = 1, 4, 2, 16, 8, 32, 128
        rope = ('theta = 1.0e+04 : f32, rotary_dim = 8 : i64, interleaved = true, '
                'scaling_factor = 1.0 : f32, yarn_factor = 1.0 : f32, yarn_low = 0.0 : f32, '
                'yarn_high = 0.0 : f32, mscale = 1.0 : f32')
        text = f"""
module {{
  func.func @forward(%qn: tensor<{b}x{s}x{h}x{dn}xf32> {{kiln.name = "qn"}},
                     %qr: tensor<{b}x{s}x{h}x{dr}xf32> {{kiln.name = "qr"}},
                     %c: tensor<{b}x{s}x{rank}xf32> {{kiln.name = "c"}},
                     %kr: tensor<{b}x{s}x{dr}xf32> {{kiln.name = "kr"}})
      -> (tensor<{b}x{s}x{h * dv}xf8E4M3FN> {{kiln.name = "q"}}, tensor<{b}x{s}x{h}xf32> {{kiln.name = "sc"}}) {{
    %w = kiln.weight "kv_b.weight" : tensor<{h * (dn + dv)}x{rank}xf32>
    %qrr = kiln.rope %qr {{{rope}}} : (tensor<{b}x{s}x{h}x{dr}xf32>) -> tensor<{b}x{s}x{h}x{dr}xf32>
    %o = kiln.mla_attention %qn, %qrr, %c, %kr, %w {{scale = 0.2 : f32}}
        : (tensor<{b}x{s}x{h}x{dn}xf32>, tensor<{b}x{s}x{h}x{dr}xf32>, tensor<{b}x{s}x{rank}xf32>,
           tensor<{b}x{s}x{dr}xf32>, tensor<{h * (dn + dv)}x{rank}xf32>) -> tensor<{b}x{s}x{h}x{dv}xf32>
    %r = kiln.reshape %o : (tensor<{b}x{s}x{h}x{dv}xf32>) -> tensor<{b}x{s}x{h * dv}xf32>
    %q, %sc = kiln.quantize %r {{quant = {QUANT}}} : (tensor<{b}x{s}x{h * dv}xf32>) -> (tensor<{b}x{s}x{h * dv}xf8E4M3FN>, tensor<{b}x{s}x{h}xf32>)
    return %q, %sc : tensor<{b}x{s}x{h * dv}xf8E4M3FN>, tensor<{b}x{s}x{h}xf32>
  }}
}}
"""
        w = [("kv_b.weight", (self.rng.standard_normal((h * (dn + dv), rank)) * rank ** -0.5).astype(np.float32))]
        fused = KernelModel(self.tmp, "mla_fused", text, w, ["--mla-form=absorbed"])
        unfused = KernelModel(self.tmp, "mla_unfused", text, w, ["--mla-form=absorbed", "--no-fuse"])
        names = fused.kernels()
        self.assertTrue(any(n.startswith("mla_quant") and "_rot8il" in n for n in names), names)
        self.assertFalse(any(n.startswith(("quantize_", "rope_")) for n in names), names)
        self.assertTrue(any(n.startswith("quantize_") for n in unfused.kernels()))
        inputs = {"qn": self.rng.standard_normal((b, s, h, dn)).astype(np.float32),
                  "qr": self.rng.standard_normal((b, s, h, dr)).astype(np.float32),
                  "c": self.rng.standard_normal((b, s, rank)).astype(np.float32),
                  "kr": self.rng.standard_normal((b, s, dr)).astype(np.float32)}
        got = fused(inputs, ["q", "sc"])
        ref = unfused(inputs, ["q", "sc"])
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])

    def test_mla_output_quantization_split_decode(self):
        """mla_attention_quant at one position over 1100 keys, 16 heads: the
        three-phase decode (keys split, the output quantized in the merge
        phase) against mla_attention + quantize (--no-fuse), bit for bit, on
        1-3 threads."""
        b, t, h, dn, dr, rank, dv = 1, 1100, 16, 16, 16, 64, 128
        text = f"""
module {{
  func.func @forward(%qn: tensor<{b}x1x{h}x{dn}xf32> {{kiln.name = "qn"}},
                     %qr: tensor<{b}x1x{h}x{dr}xf32> {{kiln.name = "qr"}},
                     %c: tensor<{b}x{t}x{rank}xf32> {{kiln.name = "c"}},
                     %kr: tensor<{b}x{t}x{dr}xf32> {{kiln.name = "kr"}},
                     %st: tensor<{b}xi32> {{kiln.name = "start"}})
      -> (tensor<{b}x1x{h * dv}xf8E4M3FN> {{kiln.name = "q"}}, tensor<{b}x1x{h}xf32> {{kiln.name = "sc"}}) {{
    %w = kiln.weight "kv_b.weight" : tensor<{h * (dn + dv)}x{rank}xf32>
    %o = kiln.mla_attention %qn, %qr, %c, %kr, %w start(%st) {{scale = 0.2 : f32, causal = true}}
        : (tensor<{b}x1x{h}x{dn}xf32>, tensor<{b}x1x{h}x{dr}xf32>, tensor<{b}x{t}x{rank}xf32>,
           tensor<{b}x{t}x{dr}xf32>, tensor<{h * (dn + dv)}x{rank}xf32>, tensor<{b}xi32>)
        -> tensor<{b}x1x{h}x{dv}xf32>
    %r = kiln.reshape %o : (tensor<{b}x1x{h}x{dv}xf32>) -> tensor<{b}x1x{h * dv}xf32>
    %q, %sc = kiln.quantize %r {{quant = {QUANT}}} : (tensor<{b}x1x{h * dv}xf32>) -> (tensor<{b}x1x{h * dv}xf8E4M3FN>, tensor<{b}x1x{h}xf32>)
    return %q, %sc : tensor<{b}x1x{h * dv}xf8E4M3FN>, tensor<{b}x1x{h}xf32>
  }}
}}
"""
        w = [("kv_b.weight", (self.rng.standard_normal((h * (dn + dv), rank)) * rank ** -0.5).astype(np.float32))]
        fused = KernelModel(self.tmp, "mla_split_fused", text, w, ["--mla-form=absorbed"])
        unfused = KernelModel(self.tmp, "mla_split_unfused", text, w, ["--mla-form=absorbed", "--no-fuse"])
        (k,) = [kk for kk in fused.kernel_info() if kk["name"].startswith("mla_quant")]
        self.assertIn("keys split in 2 ranges", k["config"])
        inputs = {"qn": self.rng.standard_normal((b, 1, h, dn)).astype(np.float32),
                  "qr": self.rng.standard_normal((b, 1, h, dr)).astype(np.float32),
                  "c": self.rng.standard_normal((b, t, rank)).astype(np.float32),
                  "kr": self.rng.standard_normal((b, t, dr)).astype(np.float32),
                  "start": np.asarray([t - 1], np.int32)}
        ref = unfused(inputs, ["q", "sc"], threads=1)
        for threads in (1, 2, 3):
            got = fused(inputs, ["q", "sc"], threads=threads)
            np.testing.assert_array_equal(got[0], ref[0], f"threads={threads}")
            np.testing.assert_array_equal(got[1], ref[1], f"threads={threads}")

    def test_rms_norm_quantization_is_fused_and_exact(self):
        m, k = 4, 256
        model = KernelModel(self.tmp, "rmsq", f"""
module {{
  func.func @forward(%x: tensor<{m}x{k}xf32> {{kiln.name = "x"}})
      -> (tensor<{m}x{k}xf32> {{kiln.name = "y"}}, tensor<{m}x{k}xf8E4M3FN> {{kiln.name = "q"}},
          tensor<{m}x2xf32> {{kiln.name = "s"}}) {{
    %w = kiln.weight "norm.weight" : tensor<{k}xf32>
    %y = kiln.rms_norm %x, %w {{epsilon = 1.0e-06 : f32}} : (tensor<{m}x{k}xf32>, tensor<{k}xf32>) -> tensor<{m}x{k}xf32>
    %q, %s = kiln.quantize %y {{quant = {QUANT}}} : (tensor<{m}x{k}xf32>) -> (tensor<{m}x{k}xf8E4M3FN>, tensor<{m}x2xf32>)
    return %y, %q, %s : tensor<{m}x{k}xf32>, tensor<{m}x{k}xf8E4M3FN>, tensor<{m}x2xf32>
  }}
}}
""", weights=[("norm.weight", (1 + 0.1 * self.rng.standard_normal(k)).astype(np.float32))])
        names = model.kernels()
        self.assertTrue(any(n.startswith("rms_norm_quant") for n in names), names)
        self.assertFalse(any(n.startswith("quantize_") for n in names), names)
        y, q, s = model({"x": self.rng.standard_normal((m, k)).astype(np.float32)}, ["y", "q", "s"])
        eq, es = F.quantize_activation(y)
        np.testing.assert_array_equal(q, eq)
        np.testing.assert_array_equal(s, es)


# Intel AVX-512-BF16 hosts: the CPU's FP8 GEMV rows read e4m3 subnormal
# weights as zero unless compiled with --fp8-exact-subnormals (GemmSpec::
# fp8Shift, docs/fp8.md), as the tests here compile but one.
FLUSHING_HOST = HOST_AVX512_BF16 and HOST_AVX512_VBMI and not HOST_ZEN


def flush_allowance(emu, forward, *args, **kwargs):
    """rel L2 of `forward(*args, **kwargs, flush_subnormal_weights=True)`
    from `emu`."""
    return R.rel_l2(forward(*args, **kwargs, flush_subnormal_weights=True), emu)


class EndToEnd(unittest.TestCase):
    """An FP8 DeepSeek-V3 checkpoint (128x128 blocks with partial edge blocks)
    against the numpy emulation of the same scheme."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-fp8e2e-")
        cls.fp8 = os.path.join(cls.tmp, "fp8")
        cls.full = os.path.join(cls.tmp, "f32")
        mk.make_checkpoint("deepseek_v3", cls.fp8, variant="fp8dims", fp8=True)
        mk.make_checkpoint("deepseek_v3", cls.full, variant="fp8dims")
        cls.tokens = np.random.default_rng(2).integers(0, 256, size=(2, 8)).astype(np.int32)
        cls.tokens_path = os.path.join(cls.tmp, "tokens.npy")
        np.save(cls.tokens_path, cls.tokens)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compile_run(self, ckpt, name, extra=(), exact=True, cache="f32"):
        plan = os.path.join(self.tmp, name + ".kplan")
        # f32 caches: the emulation (fp8_reference.py) keeps attention in f32
        # (kv_cache="fp8": --kv-cache-dtype=fp8);
        # `exact`: DeepSeek's numerics in every kernel (docs/fp8.md); the
        # absorbed MLA (the emulation's default form) unless `extra` says.
        form = [] if any(f.startswith("--mla-form") for f in extra) else ["--mla-form=absorbed"]
        run([tool("kiln-compile"), ckpt, "-o", plan, "--max-batch=2", "--max-seq=8",
             f"--kv-cache-dtype={cache}", "--logits=all", *extra, *form]
            + (["--fp8-exact-subnormals"] if exact else []))
        out = os.path.join(self.tmp, name + ".npy")
        run([tool("kiln-run"), plan, "--input", f"tokens={self.tokens_path}", "--output", f"logits={out}"])
        return plan, np.load(out)

    def test_statistics_match_the_emulation(self):
        _, kiln = self.compile_run(self.fp8, "fp8")
        emu = F.forward_fp8(self.fp8, self.tokens)
        full = R.forward(self.full, self.tokens)
        d_kiln_full = R.rel_l2(kiln, full)
        d_emu_full = R.rel_l2(emu, full)
        d_kiln_emu = R.rel_l2(kiln, emu)
        self_dist = [R.rel_l2(F.forward_fp8(self.fp8, self.tokens, perturb=1e-7, seed=s), emu)
                     for s in range(10)]
        print(f"\nFP8 e2e: kiln-vs-unquantized {d_kiln_full:.4e}, emulation-vs-unquantized "
              f"{d_emu_full:.4e}, kiln-vs-emulation {d_kiln_emu:.3e}, emulation self-distance "
              f"under 1e-7 perturbations: median {np.median(self_dist):.3e} max {max(self_dist):.3e}")
        # Kiln's quantization error is the scheme's own: within 10 %.
        self.assertGreater(d_emu_full, 1e-3)
        self.assertLess(abs(d_kiln_full / d_emu_full - 1), 0.10)
        # Kiln is as close to the emulation as the emulation is to itself.
        self.assertLessEqual(d_kiln_emu, max(self_dist))

    def test_naive_mla(self):
        """--mla-form=naive with an e4m3 kv_b: DeepSeek's naive attention,
        the latent quantized per 1 x 128 and kv_b a block-scaled GEMM
        (gemm_fp8), against the emulation taking the same form; farther from
        the absorbed form's emulation (the latent's quantization shows)."""
        plan, kiln = self.compile_run(self.fp8, "naive", ["--mla-form=naive"])
        names = [k["name"] for k in json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)["kernels"]]
        self.assertTrue(any(n.startswith("mla_naive") for n in names), names)
        emu = F.forward_fp8(self.fp8, self.tokens, mla_form="naive")
        self_dist = [R.rel_l2(F.forward_fp8(self.fp8, self.tokens, perturb=1e-7, seed=s,
                                            mla_form="naive"), emu) for s in range(10)]
        self.assertLessEqual(R.rel_l2(kiln, emu), max(self_dist))
        self.assertGreater(R.rel_l2(emu, F.forward_fp8(self.fp8, self.tokens)), 10 * max(self_dist))

    def test_fp8_latent_cache(self):
        """--kv-cache-dtype=fp8 on the FP8 model in each MLA form against the
        emulation with the same cache (the latent as the FP8 latent cache
        holds it, the rope key bf16). Kiln's f32 latent and the emulation's
        float64 one differ by ~1e-7, so a latent value that close to an
        e4m3 rounding boundary gets the neighbouring code, moving the logits
        by ~1e-6 (seen: 3.5e-6 absorbed, 1.8e-7 naive); 1e-4 allows a
        handful. The cache's own effect is ~8e-2, the emulations' distance
        with and without it."""
        for form in ("absorbed", "naive"):
            with self.subTest(form=form):
                _, kiln = self.compile_run(self.fp8, "cache_" + form, [f"--mla-form={form}"],
                                           cache="fp8")
                emu = F.forward_fp8(self.fp8, self.tokens, mla_form=form, kv_cache="fp8")
                self.assertLessEqual(R.rel_l2(kiln, emu), 1e-4)
                f32 = F.forward_fp8(self.fp8, self.tokens, mla_form=form)
                self.assertGreater(R.rel_l2(emu, f32), 100 * 1e-4)

    def test_default_plan_subnormal_weights(self):
        """Without --fp8-exact-subnormals: on an Intel AVX-512-BF16 host the
        GEMV rows (here the experts' few rows each) read e4m3 subnormal
        weights as zero (1.2e-4 of this checkpoint's codes), so the logits
        move from the exact plan's (measured 2.4e-7), by no more than the
        emulation's do when every subnormal weight reads as zero (2.3e-4:
        that moves a routing decision); elsewhere the two plans are the same
        code and agree bit for bit."""
        _, exact = self.compile_run(self.fp8, "exact")
        _, fast = self.compile_run(self.fp8, "fast", exact=False)
        if not FLUSHING_HOST:
            np.testing.assert_array_equal(fast, exact)
            return
        emu = F.forward_fp8(self.fp8, self.tokens)
        flush = flush_allowance(emu, F.forward_fp8, self.fp8, self.tokens)
        d = R.rel_l2(fast, exact)
        print(f"\nFP8 e2e default plan: {d:.3e} from the exact plan; the emulation with every "
              f"subnormal weight flushed: {flush:.3e}")
        self.assertGreater(d, 0.0)
        self.assertLessEqual(d, flush)

    def test_fused_matches_unfused(self):
        """Every fusion (quantization into RMSNorm/SwiGLU, rope, epilogue
        adds) against its unfused sequence: the unfused FP8 plan is as close
        to the emulation as the fused one is."""
        _, fused = self.compile_run(self.fp8, "fused")
        _, unfused = self.compile_run(self.fp8, "unfused", ["--no-fuse"])
        emu = F.forward_fp8(self.fp8, self.tokens)
        self_dist = [R.rel_l2(F.forward_fp8(self.fp8, self.tokens, perturb=1e-7, seed=s), emu)
                     for s in range(10)]
        self.assertLessEqual(R.rel_l2(unfused, emu), max(self_dist))
        self.assertLessEqual(R.rel_l2(fused, unfused), 2 * max(self_dist))

    def test_fp8_lm_head(self):
        """--fp8-lm-head: the LM head quantized at compile time (the
        checkpoint keeps it in high precision) and run by gemm_fp8, against
        the emulation with the same quantization; the FP8 checkpoint and
        --quantize=fp8-block agree bit for bit; a non-FP8 model is refused."""
        plan, kiln = self.compile_run(self.fp8, "lmhead", ["--fp8-lm-head"])
        emu = F.forward_fp8(self.fp8, self.tokens, lm_head_fp8=True)
        self_dist = [R.rel_l2(F.forward_fp8(self.fp8, self.tokens, perturb=1e-7, seed=s,
                                            lm_head_fp8=True), emu) for s in range(10)]
        self.assertLessEqual(R.rel_l2(kiln, emu), max(self_dist))
        # The quantization shows: farther from the bf16-head emulation.
        self.assertGreater(R.rel_l2(emu, F.forward_fp8(self.fp8, self.tokens)), 10 * max(self_dist))
        data = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
        weights = {w["name"]: w for w in data["weights"]["weights"]}
        self.assertEqual(weights["lm_head.weight"]["dtype"], "float8_e4m3")
        self.assertEqual(weights["lm_head.weight_scale_inv"]["dtype"], "float32")
        kernels = [k["name"] for k in data["kernels"]]
        vocab = kiln.shape[-1]
        self.assertTrue(any(k.startswith(f"gemm_fp8_n{vocab}_") for k in kernels), kernels)
        _, b = self.compile_run(self.full, "lmheadq", ["--quantize=fp8-block", "--fp8-lm-head"])
        np.testing.assert_array_equal(kiln, b)
        p = run([tool("kiln-compile"), self.full, "-o", os.path.join(self.tmp, "nofp8.kplan"),
                 "--fp8-lm-head"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--fp8-lm-head needs an FP8 model", p.stderr)

    def test_compile_time_quantization_matches_fp8_checkpoint(self):
        _, a = self.compile_run(self.fp8, "fp8b")
        plan, b = self.compile_run(self.full, "quantized", ["--quantize=fp8-block"])
        np.testing.assert_array_equal(a, b)

    def test_weight_bytes_and_what_is_quantized(self):
        plan, _ = self.compile_run(self.fp8, "fp8c")
        data = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
        weights = {w["name"]: w for w in data["weights"]["weights"]}
        for name, w in weights.items():
            quantizable = F.is_quantized_weight(name)
            if name.endswith("_scale_inv"):
                self.assertEqual(w["dtype"], "float32", name)
            elif quantizable:
                self.assertEqual(w["dtype"], "float8_e4m3", name)
            else:
                self.assertNotEqual(w["dtype"], "float8_e4m3", name)
        for kept in ["model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight",
                     "model.layers.1.mlp.gate.e_score_correction_bias", "model.norm.weight"]:
            self.assertNotEqual(weights[kept]["dtype"], "float8_e4m3", kept)
        by_dtype = data["weights"]["bytes_by_dtype"]
        fp8_params = sum(int(np.prod(w["shape"])) for w in weights.values() if w["dtype"] == "float8_e4m3")
        self.assertEqual(by_dtype["float8_e4m3"], fp8_params)  # one byte per parameter
        scales = sum(w["size_bytes"] for n, w in weights.items() if n.endswith("_scale_inv"))
        self.assertLess(scales, fp8_params / 1000)

    def test_attention_output_quantization_fused(self):
        """v_head_dim = 128 (DeepSeek-V3's): each head's output row is a whole
        activation tile, so MLA quantizes its own output; no standalone
        quantization launch is left in the plan."""
        d = os.path.join(self.tmp, "v128")
        os.makedirs(d)
        cfg = mk.make_config("deepseek_v3", variant="fp8dims")
        cfg["v_head_dim"] = 128
        weights = mk.make_weights(cfg, 0)
        mk.write_safetensors(os.path.join(d, "model.safetensors"),
                             [(n, "F32", a.shape, np.ascontiguousarray(a, np.float32).tobytes())
                              for n, a, _ in weights])
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        plan, kiln = self.compile_run(d, "v128", ["--quantize=fp8-block"])
        names = [k["name"] for k in json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)["kernels"]]
        self.assertTrue(any(n.startswith("mla_quant") for n in names), names)
        self.assertFalse(any(n.startswith("quantize_") for n in names), names)
        emu = F.forward_fp8_from_bf16(d, self.tokens)
        # Within the emulation's own spread under 1e-7 perturbations (fp32
        # rounding noise), twice its largest: the reference emitter measured
        # 1.756e-7 against a largest self-distance of 1.757e-7, the optimized
        # CPU emitter (other orders of the same fp32 sums, a polynomial exp
        # in SwiGLU) 1.85e-7; a wrong kernel is orders of magnitude away.
        self_dist = [R.rel_l2(F.forward_fp8_from_bf16(d, self.tokens, perturb=1e-7, seed=s), emu)
                     for s in range(10)]
        self.assertLessEqual(R.rel_l2(kiln, emu), 2 * max(self_dist))

    @staticmethod
    def poison(ckpt, dtype, value, part=""):
        """Writes `value` (bytes) over the middle element of the first
        matrix of `dtype` whose name contains `part` in the checkpoint's
        safetensors; returns its name and the element's (row, col)."""
        (st,) = [f for f in os.listdir(ckpt) if f.endswith(".safetensors")]
        path = os.path.join(ckpt, st)
        with open(path, "r+b") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
            name, t = next((k, v) for k, v in sorted(header.items())
                           if k != "__metadata__" and v["dtype"] == dtype and part in k
                           and len(v["shape"]) == 2)
            rows, cols = t["shape"]
            el = (rows // 2) * cols + cols // 2
            f.seek(8 + n + t["data_offsets"][0] + el * len(value))
            f.write(value)
        return name, (rows // 2, cols // 2)

    def test_nan_codes_in_fp8_weights_are_refused(self):
        # The FP8 kernels read weights as finite (docs/fp8.md): an e4m3
        # weight holding a NaN code (0x7F / 0xFF) is an error naming it and
        # where, found as the compiler hashes the weights (or, quantized
        # here, as it packs them), and no plan is written.
        d = os.path.join(self.tmp, "nanw")
        shutil.copytree(self.fp8, d)
        name, (r, c) = self.poison(d, "F8_E4M3", b"\xff")
        for extra in ([], ["--embed-weights"]):
            plan = os.path.join(self.tmp, "nanw.kplan")
            p = run([tool("kiln-compile"), d, "-o", plan, *extra], check=False)
            self.assertNotEqual(p.returncode, 0, extra)
            self.assertIn(f"weight '{name}'", p.stderr)
            self.assertIn(f"holds an e4m3 NaN code (0x7F / 0xFF) at [{r}, {c}]", p.stderr)
            self.assertFalse(os.path.exists(plan))
        d = os.path.join(self.tmp, "nanq")
        shutil.copytree(self.full, d)
        name, _ = self.poison(d, "F32", np.float32(np.nan).tobytes(), "o_proj")
        p = run([tool("kiln-compile"), d, "-o", os.path.join(self.tmp, "nanq.kplan"),
                 "--quantize=fp8-block"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"weight '{name}'", p.stderr)
        self.assertIn("has a non-finite value at", p.stderr)

    def test_bad_quantization_config(self):
        d = os.path.join(self.tmp, "badq")
        shutil.copytree(self.fp8, d)
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        cfg["quantization_config"]["weight_block_size"] = [64, 64]
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        p = run([tool("kiln-compile"), d, "-o", os.path.join(self.tmp, "bad.kplan")], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("weight_block_size", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
