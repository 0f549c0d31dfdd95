"""The optimized CPU emitter's FP8 GEMMs (gemm_fp8 with an epilogue addend,
gemm_dual_fp8, gemm_swiglu_fp8 with its output quantization, and the
experts' moe_up_fp8 / moe_down_fp8) against the reference emitter
(--cpu-emitter=reference, the scalar programs).

Op by op: a model quantizes its input (kiln.quantize, the reference kernel
in both plans, so both plans' GEMMs read identical e4m3 activations and
scales, which the test checks bit for bit) and feeds it to one or two
block-scaled linears (DeepSeek's scheme, docs/fp8.md), one with a residual
add. Shapes with partial 128-blocks along K and N, K tails that are not a
multiple of the 16 lanes, N not a multiple of the register blocks, M = 1
(decode's streamed GEMV), M between register blocks; 1, 2 and 3 threads.

Tolerance: both emitters sum the same exact e4m3 products in fp32, in
other orders (the optimized one in 16 lanes per 128-block, promoting each
lane's partial sum by the block's scale and summing the lanes at the end),
so per output |opt - ref| <= 2 (K + K/128 + 2) u S with S = sum_kb sum_k
|x_k w_k| s_x s_w (u = 2^-24), plus 2 u |r| for the residual, plus (where
the GEMV rows take word shifts, Intel AVX-512-BF16: GemmSpec::fp8Shift,
e4m3 subnormal weights read as zero) the sum of |x_k w_k| s_x s_w over
the subnormal weights; test_gemv_subnormal_weights makes most weights
subnormal.

End to end: the tiny FP8 DeepSeek-V3 checkpoint (partial blocks
everywhere: routed and shared experts in FP8, so moe_up_fp8 and
moe_down_fp8 on expert segments) compiled with each emitter gives logits within 1e-5 relative L2
of each other (activation quantization between the GEMMs can turn a last-bit
difference into one e4m3 step; measured ~1e-7), and test_fp8.py checks the
default emitter against the float64 emulation.

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
from kilntest import (HOST_AVX512_BF16, HOST_AVX512_VBMI, HOST_ISA, HOST_ZEN, KernelModel,  # noqa: E402
                      run, tool)
import fp8_reference as F  # noqa: E402
import hf_reference as R  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

QUANT = "#kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>"
U = 2.0 ** -24
THREADS = (1, 2, 3)
# The AVX-512 FP8 kernel's config text: the kernel itself (cpu=avx512 ...)
# or, on a target with AMX-BF16, what blocks of < 16 rows take (cpu=amx-bf16
# for >= 16 rows (...), else avx512 ...; test_cpu_fp8_amx.py tests those).
# The cases here have fewer than 16 rows.
# The AVX FP8 kernel as the config names it on this host (AVX-512 or AVX2).
# (On a host with AVX-512-BF16 the kernel converts e4m3 to bf16 pairs for
# vdpbf16ps instead of decoding to f32: by word permutes on AMD Zen, by byte
# permutes on Intel cores with AVX512-VBMI, whose GEMV rows take word
# shifts.)
FP8_AVX = f"{HOST_ISA} fp32 (e4m3 " + (
    "-> bf16 pairs on load" if HOST_AVX512_BF16 and HOST_ZEN
    else "-> bf16 pairs by byte permutes on load, vdpbf16ps, promoted per 128 of K; GEMV rows: x "
         "staged in bf16 once, weights by word shifts" if HOST_AVX512_BF16 and HOST_AVX512_VBMI
    else "-> f16 -> f32 on load" if HOST_ISA == "avx512"
    else "decoded on load")


# Whether the host's default plan reads e4m3 subnormal weights as zero in
# its GEMV rows (GemmSpec::fp8Shift; which rows depends on the thread split).
FLUSHES = HOST_AVX512_BF16 and HOST_AVX512_VBMI and not HOST_ZEN


def cdiv(a, b):
    return (a + b - 1) // b


def assert_codes_close(test, gq, gs, rq, rs, what):
    """A quantized output against another: scales within 1e-5, at most 1 %
    of the codes different, each by one e4m3 step (neighbouring codes:
    same sign, magnitude +-1)."""
    np.testing.assert_allclose(gs, rs, rtol=1e-5, err_msg=what)
    differ = gq != rq
    test.assertLessEqual(differ.mean(), 0.01, what)
    steps = np.abs((gq & 0x7F).astype(int) - (rq & 0x7F).astype(int))
    test.assertTrue(np.all(steps[differ] <= 1), what)
    test.assertTrue(np.all((gq & 0x80)[differ] == (rq & 0x80)[differ]), what)


def swiglu_fp8_text(m, k, f):
    """A model quantizing x [m, k], then SwiGLU of two block-scaled linears
    (weights "wg", "wu" [f, k] with their scales) and the quantization of
    the result: one gemm_swiglu_fp8 after fusion. Outputs "aq", "as"."""
    kb, fb = cdiv(k, 128), cdiv(f, 128)
    q_t, s_t = f"tensor<{m}x{k}xf8E4M3FN>", f"tensor<{m}x{kb}xf32>"
    a_t, aq_t, as_t = (f"tensor<{m}x{f}xf32>", f"tensor<{m}x{f}xf8E4M3FN>",
                       f"tensor<{m}x{fb}xf32>")
    w_t, ws_t = f"tensor<{f}x{k}xf8E4M3FN>", f"tensor<{fb}x{kb}xf32>"
    lin = "\n".join(
        f'    %{w} = kiln.weight "{w}.weight" : {w_t}\n'
        f'    %{w}s = kiln.weight "{w}.weight_scale_inv" : {ws_t}\n'
        f"    %{w}y = kiln.linear %q, %{w} scales(%s, %{w}s) {{quant = {QUANT}}}"
        f" : ({q_t}, {w_t}, {s_t}, {ws_t}) -> {a_t}" for w in ("wg", "wu"))
    return f"""
module {{
  func.func @forward(%x: tensor<{m}x{k}xf32> {{kiln.name = "x"}})
      -> ({aq_t} {{kiln.name = "aq"}}, {as_t} {{kiln.name = "as"}}) {{
    %q, %s = kiln.quantize %x {{quant = {QUANT}}} : (tensor<{m}x{k}xf32>) -> ({q_t}, {s_t})
{lin}
    %a = kiln.swiglu %wgy, %wuy : ({a_t}, {a_t}) -> {a_t}
    %aq, %as = kiln.quantize %a {{quant = {QUANT}}} : ({a_t}) -> ({aq_t}, {as_t})
    return %aq, %as : {aq_t}, {as_t}
  }}
}}
"""


@unittest.skipIf(HOST_ISA is None, "the host has neither AVX-512 nor AVX2 + FMA")
class CpuFP8Emitter(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cpu-fp8-")
        cls.rng = np.random.default_rng(7)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def model(self, name, m, k, n, n2, flags, tiny=False):
        """y1 = linear(q, w1) + r, y2 = linear(q, w2): a gemm_fp8 with an
        addend and (n2 > 0) a gemm_dual_fp8 after the merge of the two.
        `tiny`: all but ~1 % of the weights 1e-4 of the rest, so that their
        block's scale makes them e4m3 subnormals."""
        kb = cdiv(k, 128)
        ws = {}
        weights = []
        for w, rows in (("w1", n), ("w2", n2)):
            if rows == 0:
                continue
            wf = self.rng.standard_normal((rows, k)) * k ** -0.5
            if tiny:
                wf *= np.where(self.rng.random((rows, k)) < 0.99, 1e-4, 1.0)
            q, s = F.quantize_weight_blocks(wf.astype(np.float32))
            ws[w] = (q, s.astype(np.float32))
            weights += [(f"{w}.weight", q), (f"{w}.weight_scale_inv", s.astype(np.float32))]
        x_t, q_t, s_t = f"tensor<{m}x{k}xf32>", f"tensor<{m}x{k}xf8E4M3FN>", f"tensor<{m}x{kb}xf32>"
        y_t, y2_t = f"tensor<{m}x{n}xf32>", f"tensor<{m}x{n2}xf32>"

        def lin(out, w, rows):
            return (f'    %{w} = kiln.weight "{w}.weight" : tensor<{rows}x{k}xf8E4M3FN>\n'
                    f'    %{w}s = kiln.weight "{w}.weight_scale_inv" : tensor<{cdiv(rows, 128)}x{kb}xf32>\n'
                    f"    %{out} = kiln.linear %q, %{w} scales(%s, %{w}s) {{quant = {QUANT}}}\n"
                    f"        : ({q_t}, tensor<{rows}x{k}xf8E4M3FN>, {s_t}, tensor<{cdiv(rows, 128)}x{kb}xf32>)"
                    f" -> tensor<{m}x{rows}xf32>\n")
        body = lin("p1", "w1", n) + f"    %y1 = kiln.add %p1, %r : ({y_t}, {y_t}) -> {y_t}\n"
        outs = f'{q_t} {{kiln.name = "q"}}, {s_t} {{kiln.name = "s"}}, {y_t} {{kiln.name = "y1"}}'
        ret = f"%q, %s, %y1 : {q_t}, {s_t}, {y_t}"
        if n2:
            body += lin("y2", "w2", n2)
            outs += f', {y2_t} {{kiln.name = "y2"}}'
            ret = f"%q, %s, %y1, %y2 : {q_t}, {s_t}, {y_t}, {y2_t}"
        text = f"""
module {{
  func.func @forward(%x: {x_t} {{kiln.name = "x"}}, %r: {y_t} {{kiln.name = "r"}}) -> ({outs}) {{
    %q, %s = kiln.quantize %x {{quant = {QUANT}}} : ({x_t}) -> ({q_t}, {s_t})
{body}    return {ret}
  }}
}}
"""
        return KernelModel(self.tmp, name, text, weights=weights, flags=flags), ws

    def check(self, m, k, n, n2=0, tiny=False, exact=False):
        name = f"fp8_m{m}_k{k}_n{n}_{n2}" + ("_tiny" if tiny else "") + ("_exact" if exact else "")
        # Same seed for both plans: the same weights.
        state = self.rng.bit_generator.state
        ref, ws = self.model(name + "_ref", m, k, n, n2, ["--cpu-emitter=reference"], tiny)
        self.rng.bit_generator.state = state
        opt, _ = self.model(name + "_opt", m, k, n, n2,
                            ["--fp8-exact-subnormals"] if exact else [], tiny)
        flushes = FLUSHES and not exact
        kinds = {kk["name"].split("_n")[0].split("_k")[0]: kk["config"] for kk in opt.kernel_info()
                 if kk["name"].startswith("gemm")}
        want = ["gemm_dual_fp8"] if n2 else ["gemm_fp8"]
        for kind in want:
            self.assertIn(kind, kinds, list(kinds))
            # --fp8-exact-subnormals: the same kernel without the word shifts.
            self.assertIn(FP8_AVX.split("; GEMV rows")[0] if exact else FP8_AVX, kinds[kind])
            if exact:
                self.assertNotIn("word shifts", kinds[kind])
        x = self.rng.standard_normal((m, k)).astype(np.float32)
        x[m // 2, :] *= 1e-3  # a row of small values (its own scale)
        r = self.rng.standard_normal((m, n)).astype(np.float32)
        names = ["q", "s", "y1"] + (["y2"] if n2 else [])
        got_ref = ref({"x": x, "r": r}, names, threads=1)
        eq, es = F.quantize_activation(x)
        np.testing.assert_array_equal(got_ref[0], eq)
        for w, out, extra in (("w1", 2, np.abs(r)), ("w2", 3, 0.0)):
            if w not in ws:
                continue
            wq, wsc = ws[w]
            want_y = F.fp8_gemm(eq, es, wq, wsc) + (r if w == "w1" else 0.0)
            err = np.abs(got_ref[out] - want_y).max() / np.abs(want_y).max()
            self.assertLess(err, 1e-5, f"{name} {w}: the reference vs the float64 emulation")
        for threads in THREADS:
            got = opt({"x": x, "r": r}, names, threads=threads)
            what = f"{name} threads={threads}"
            np.testing.assert_array_equal(got[0], got_ref[0], what)
            np.testing.assert_array_equal(got[1].view(np.uint32), got_ref[1].view(np.uint32), what)
            for w, out, extra in (("w1", 2, np.abs(r)), ("w2", 3, 0.0)):
                if w not in ws:
                    continue
                wq, wsc = ws[w]
                s_abs = F.fp8_gemm(eq & 0x7F, es, wq & 0x7F, wsc)
                subnormal = np.where((wq & 0x78) == 0, wq & 0x7F, 0).astype(np.uint8)
                s_sub = F.fp8_gemm(eq & 0x7F, es, subnormal, wsc) if flushes else 0.0
                if tiny:  # the case is what it says
                    self.assertGreater((subnormal != 0).mean(), 0.25, name)
                bound = (2 * (k + cdiv(k, 128) + 2) * U * s_abs + 2 * U * extra + s_sub
                         + 1e-30)
                d = np.abs(got[out].astype(np.float64) - got_ref[out])
                bad = np.argwhere(d > bound)
                self.assertEqual(len(bad), 0, f"{what} {w}: {len(bad)} outputs off the reference, "
                                 f"first {bad[:3].tolist()}")

    def test_gemm_with_addend(self):
        for m, k, n in ((1, 300, 200), (6, 300, 200), (9, 256, 13), (1, 128, 300), (5, 40, 70)):
            with self.subTest(m=m, k=k, n=n):
                self.check(m, k, n)

    def test_gemv_subnormal_weights(self):
        # Most weights e4m3 subnormals: GEMV rows (1; 4 + 3) and a register
        # block's, within the bound that counts them as read as zero where
        # the host's plan does; with --fp8-exact-subnormals within the
        # round-off bound alone (the byte permutes in the GEMV rows). K = 200:
        # a last block of 72 (a full 64-step, then a masked one).
        for m, k, n in ((1, 300, 200), (7, 256, 40), (1, 200, 40)):
            for exact in (False, True):
                with self.subTest(m=m, k=k, n=n, exact=exact):
                    self.check(m, k, n, tiny=True, exact=exact)

    def test_dual(self):
        for m, k, n, n2 in ((1, 300, 200, 72), (7, 260, 130, 9)):
            with self.subTest(m=m, k=k, n=n, n2=n2):
                self.check(m, k, n, n2)

    def test_swiglu_with_output_quantization(self):
        """gemm_swiglu_fp8: gate + up + SwiGLU, then the output quantized in
        1 x 128 tiles. The SwiGLU values differ from the reference's by the
        GEMMs' order of sums and the epilogue's exp (a polynomial, ~1 ulp),
        so a code can sit on the other side of an e4m3 rounding boundary:
        at most 1 % of the codes differ, by one e4m3 step, and the scales
        (amax / 448) within 1e-5."""
        for m, k, f in ((1, 300, 260), (6, 256, 130), (4, 128, 40)):
            with self.subTest(m=m, k=k, f=f):
                weights = []
                for w in ("wg", "wu"):
                    q, sc = F.quantize_weight_blocks((self.rng.standard_normal((f, k)) * k ** -0.5)
                                                     .astype(np.float32))
                    weights += [(f"{w}.weight", q), (f"{w}.weight_scale_inv", sc.astype(np.float32))]
                text = swiglu_fp8_text(m, k, f)
                name = f"swiglu_m{m}_k{k}_f{f}"
                ref = KernelModel(self.tmp, name + "_ref", text, weights, ["--cpu-emitter=reference"])
                opt = KernelModel(self.tmp, name + "_opt", text, weights)
                cfg = [kk["config"] for kk in opt.kernel_info() if kk["name"].startswith("gemm_swiglu_fp8")]
                self.assertEqual(len(cfg), 1, opt.kernels())
                self.assertIn(FP8_AVX, cfg[0])
                x = self.rng.standard_normal((m, k)).astype(np.float32)
                rq, rs = ref({"x": x}, ["aq", "as"], threads=1)
                for threads in THREADS:
                    gq, gs = opt({"x": x}, ["aq", "as"], threads=threads)
                    assert_codes_close(self, gq, gs, rq, rs, f"{name} threads={threads}")

    def test_fp8_model_end_to_end(self):
        ck = os.path.join(self.tmp, "ds-fp8")
        mk.make_checkpoint("deepseek_v3", ck, variant="fp8dims", fp8=True)
        tokens = os.path.join(self.tmp, "tokens.npy")
        np.save(tokens, np.random.default_rng(2).integers(0, 256, size=(2, 8)).astype(np.int32))
        logits = {}
        for name, flags in (("ref", ["--cpu-emitter=reference"]), ("opt", [])):
            plan = os.path.join(self.tmp, f"ds-fp8-{name}.kplan")
            run([tool("kiln-compile"), ck, "-o", plan, "--max-batch=2", "--max-seq=8", *flags])
            kernels = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)["kernels"]
            down = [kk["config"] for kk in kernels if kk["name"].startswith(("moe_down_fp8", "moe_up_fp8"))]
            self.assertTrue(down, [kk["name"] for kk in kernels])
            self.assertTrue(all(("cpu=reference" in c) if name == "ref" else (FP8_AVX in c)
                                for c in down), down)
            out = os.path.join(self.tmp, f"ds-fp8-{name}.npy")
            run([tool("kiln-run"), plan, "--input", f"tokens={tokens}", "--output", f"logits={out}",
                 "--threads", "2"])
            logits[name] = np.load(out).astype(np.float64)
        self.assertLessEqual(R.rel_l2(logits["opt"], logits["ref"]), 1e-5)


if __name__ == "__main__":
    unittest.main()
