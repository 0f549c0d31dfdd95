"""The FP8 GEMMs on AMX tiles, and on AVX-512-BF16 where there is no AMX
(class CpuFP8Dp, --cpu=cooperlake) (gemm_fp8 with an addend, gemm_dual_fp8,
gemm_swiglu_fp8 with its output quantization, and the experts' moe_up_fp8 /
moe_down_fp8 on expert segments; docs/kernels.md, "FP8"), against
DeepSeek's block-scaled GEMM in float64 (fp8_reference.py).

Each case compiles a kiln-dialect model (the activation quantization, then
the block-scaled linears) for a Sapphire Rapids target
(--cpu=sapphirerapids: AVX-512 and AMX-BF16), checks that the kernel took
the AMX path (its config, and tile products, vpermi2w e4m3 -> bf16
conversions and ldtilecfg in its code), then runs the kernel's entry on
inputs of the test's own: natively where the host has AMX-BF16 (kiln-run
on a plan compiled for the host), else through cpu_emulation.py (the
kernels' LLVM IR with the AMX instructions replaced by their SDM
semantics, built for this host). Thread counts 1, 2 and 3 are the runtime's
contiguous splits of the program range, so blocks of < 16 rows (the
AVX-512 FP8 kernel) and of >= 16 rows (AMX) both occur.

Shapes: rows exactly 16, rows between 16-row blocks (17, 33, 40), more
rows than one packed chunk (300 > 256), K tails inside a 32-K tile step
(300 = 2 x 128 + 44, 40), N tails below 16 columns and a 16-column block
(72 = 2 x 32 + 8, 48 = 32 + 16), partial 128-blocks along N and K, a row of
tiny values (its own scale).

Tolerance: the e4m3 values are exact in bf16 and their products exact in
fp32; the AMX path sums a 128-K block's products in fp32 (in the tile's
order), promotes it with one FMA by the fp32 product of the scales, and
sums the blocks in K order; so per output |got - exact| <= (K + K/128 + 2)
u S, S = sum_kb sum_k |x_k w_k| s_x s_w, u = 2^-24 (the bound of one fp32
summation of the K products and K/128 promotions, plus the scale product
and the store), plus 2 u |r| for the residual, plus the sum of |x_k w_k| s_x
s_w over the e4m3 subnormal weights, which the AVX-512 kernel's GEMV rows
read as zero on Sapphire Rapids (GemmSpec::fp8Shift, docs/fp8.md). SwiGLU: the f32 values then
go through silu (the kernels' exp polynomial, ~1 ulp) and the output
quantization, so at most 1 % of the codes may differ from the float64
model's, each by one e4m3 step, and the scales within 1e-5.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilntest import KernelModel, host_runs  # noqa: E402
import cpu_emulation as E  # noqa: E402
import fp8_reference as F  # noqa: E402
from test_cpu_fp8 import assert_codes_close, swiglu_fp8_text  # noqa: E402

QUANT = "#kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>"
U = 2.0 ** -24
THREADS = (1, 2, 3)


def subnormals(wq):
    """The magnitudes of the e4m3 subnormal codes of wq, other codes 0."""
    return np.where((wq & 0x78) == 0, wq & 0x7F, 0).astype(np.uint8)


def cdiv(a, b):
    return (a + b - 1) // b


def silu(v):
    return v / (1.0 + np.exp(-v))


class CpuFP8Amx(unittest.TestCase):
    CPU = "sapphirerapids"
    TILES = "amx-bf16"
    # The GEMV rows read e4m3 subnormal weights as zero (GemmSpec::fp8Shift:
    # Intel AVX-512-BF16 with VBMI).
    FLUSHES = True
    NATIVE = host_runs(CPU)
    # Tile products and the e4m3 -> bf16 table lookups in the IR, and the
    # instructions they become.
    CALLS = ("@llvm.x86.tdpbf16ps.internal(", "@llvm.x86.avx512.vpermi2var.hi.512(")
    INSNS = ("ldtilecfg", "tdpbf16ps", "tileloadd", "vpermt2w")

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cpu-fp8-amx-")
        cls.rng = np.random.default_rng(5)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def weight(self, rows, k):
        q, s = F.quantize_weight_blocks((self.rng.standard_normal((rows, k)) * k ** -0.5)
                                        .astype(np.float32))
        return np.ascontiguousarray(q.astype(np.uint8)), np.ascontiguousarray(s.astype(np.float32))

    def compile(self, name, text, weights, kind):
        """The model for Sapphire Rapids; checks the AMX path of `kind` and
        returns (its kernel name, its tile_n, the IR dump folder)."""
        ir = os.path.join(self.tmp, name + "_ir")
        model = KernelModel(self.tmp, name, text, weights,
                            [f"--cpu={self.CPU}", "--dump-ir-dir", ir])
        info = [k for k in model.kernel_info() if k["name"].startswith(kind + "_")]
        self.assertEqual(len(info), 1, model.kernels())
        config = info[0]["config"]
        self.assertIn(f"cpu={self.TILES} for >= 16 rows (e4m3 -> bf16 exactly", config)
        kernel = info[0]["name"]
        with open(os.path.join(ir, "05-cpu.ll")) as f:
            ll = f.read()
        # Tile products and the e4m3 -> bf16 table lookups (the helpers may
        # be inlined into NAME.range: the module holds only this model's
        # kernels, and no other kernel has either).
        for call in self.CALLS:
            self.assertIn(call, ll)
        asm = subprocess.run([os.path.join(E.LLVM_BIN, "llc"), "-O3", f"-mcpu={self.CPU}",
                              os.path.join(ir, "05-cpu.ll"), "-o", "-"],
                             capture_output=True, text=True, check=True).stdout
        for insn in self.INSNS:
            self.assertRegex(asm, r"\s" + insn + r"\s", insn)
        return kernel, int(re.search(r"tile_n=(\d+)", config).group(1)), ir

    def run_kernel(self, name, text, weights, kernel, ir, tile_n, n_total, m, buffers, outputs,
                   inputs, threads):
        """The kernel's outputs for `buffers` (emulated) or, natively, the
        plan's outputs for `inputs` (compiled for the host)."""
        if self.NATIVE:
            model = KernelModel(self.tmp, f"{name}_native", text, weights, [f"--cpu={self.CPU}"])
            return model(inputs, outputs, threads=threads)
        if not hasattr(self, "_so") or self._so[0] != ir:
            self._so = (ir, E.Kernels(E.build_shared_object(os.path.join(ir, "05-cpu.ll"), ir)))
        outs = buffers[-len(outputs):]
        for o in outs:
            o.fill(np.nan if o.dtype == np.float32 else 0)
        self._so[1].split(kernel, buffers, m * cdiv(n_total, tile_n), threads)
        return [o.copy() for o in outs]

    # ------------------------------------------------------------------
    # gemm_fp8 (+ residual) and gemm_dual_fp8
    # ------------------------------------------------------------------

    def check_linear(self, m, k, n, n2=0):
        name = f"amx_m{m}_k{k}_n{n}_{n2}"
        kb = cdiv(k, 128)
        w1, s1 = self.weight(n, k)
        ws = {"w1": (w1, s1)}
        if n2:
            ws["w2"] = self.weight(n2, k)
        weights = []
        for w, (q, s) in ws.items():
            weights += [(f"{w}.weight", q), (f"{w}.weight_scale_inv", s)]
        q_t, s_t = f"tensor<{m}x{k}xf8E4M3FN>", f"tensor<{m}x{kb}xf32>"
        y_t = f"tensor<{m}x{n}xf32>"

        def lin(out, w, rows):
            return (f'    %{w} = kiln.weight "{w}.weight" : tensor<{rows}x{k}xf8E4M3FN>\n'
                    f'    %{w}s = kiln.weight "{w}.weight_scale_inv" : tensor<{cdiv(rows, 128)}x{kb}xf32>\n'
                    f"    %{out} = kiln.linear %q, %{w} scales(%s, %{w}s) {{quant = {QUANT}}}\n"
                    f"        : ({q_t}, tensor<{rows}x{k}xf8E4M3FN>, {s_t}, tensor<{cdiv(rows, 128)}x{kb}xf32>)"
                    f" -> tensor<{m}x{rows}xf32>\n")
        if n2:
            # Two projections of one input merge into gemm_dual_fp8 (no addend).
            body = lin("y1", "w1", n) + lin("y2", "w2", n2)
            outs = f'{y_t} {{kiln.name = "y1"}}, tensor<{m}x{n2}xf32> {{kiln.name = "y2"}}'
            ret = f"%y1, %y2 : {y_t}, tensor<{m}x{n2}xf32>"
            args = f'%x: tensor<{m}x{k}xf32> {{kiln.name = "x"}}'
            kind = "gemm_dual_fp8"
        else:
            body = lin("p1", "w1", n) + f"    %y1 = kiln.add %p1, %r : ({y_t}, {y_t}) -> {y_t}\n"
            outs = f'{y_t} {{kiln.name = "y1"}}'
            ret = f"%y1 : {y_t}"
            args = f'%x: tensor<{m}x{k}xf32> {{kiln.name = "x"}}, %r: {y_t} {{kiln.name = "r"}}'
            kind = "gemm_fp8"
        text = f"""
module {{
  func.func @forward({args}) -> ({outs}) {{
    %q, %s = kiln.quantize %x {{quant = {QUANT}}} : (tensor<{m}x{k}xf32>) -> ({q_t}, {s_t})
{body}    return {ret}
  }}
}}
"""
        kernel, tile_n, ir = self.compile(name, text, weights, kind)
        x = self.rng.standard_normal((m, k)).astype(np.float32)
        x[m // 2, :] *= 1e-3
        r = self.rng.standard_normal((m, n)).astype(np.float32)
        xq, xs = F.quantize_activation(x)
        xq = np.ascontiguousarray(xq.astype(np.uint8))
        xs = np.ascontiguousarray(xs.astype(np.float32))
        y1 = np.empty((m, n), np.float32)
        if n2:
            w2, s2 = ws["w2"]
            y2 = np.empty((m, n2), np.float32)
            buffers = [xq, w1, w2, xs, s1, s2, y1, y2]  # GemmEmitter.cpp's binding order
            outputs, inputs = ["y1", "y2"], {"x": x}
        else:
            buffers = [xq, w1, xs, s1, r, y1]
            outputs, inputs = ["y1"], {"x": x, "r": r}
        for threads in THREADS:
            got = self.run_kernel(name, text, weights, kernel, ir, tile_n, n + n2, m, buffers,
                                  outputs, inputs, threads)
            for (w, (wq, wsc)), g in zip(ws.items(), got):
                extra = r if w == "w1" and not n2 else 0.0
                want = F.fp8_gemm(xq, xs, wq, wsc) + extra
                s_abs = F.fp8_gemm(xq & 0x7F, xs, wq & 0x7F, wsc)
                s_sub = F.fp8_gemm(xq & 0x7F, xs, subnormals(wq), wsc) if self.FLUSHES else 0.0
                bound = (k + kb + 2) * U * s_abs + 2 * U * np.abs(extra) + s_sub + 1e-30
                d = np.abs(g.astype(np.float64) - want)
                bad = np.argwhere(~(d <= bound))
                self.assertEqual(len(bad), 0, f"{name} threads={threads} {w}: {len(bad)} outputs "
                                 f"off, first {bad[:3].tolist()}")

    def test_gemm_with_addend(self):
        for m, k, n in ((16, 300, 200), (40, 256, 72), (33, 128, 48), (300, 128, 64),
                        (17, 40, 70)):
            with self.subTest(m=m, k=k, n=n):
                self.check_linear(m, k, n)

    def test_dual(self):
        for m, k, n, n2 in ((40, 300, 200, 72), (20, 260, 130, 9)):
            with self.subTest(m=m, k=k, n=n, n2=n2):
                self.check_linear(m, k, n, n2)

    # ------------------------------------------------------------------
    # gemm_swiglu_fp8 and its output quantization
    # ------------------------------------------------------------------

    def test_swiglu_with_output_quantization(self):
        for m, k, f in ((16, 300, 260), (37, 256, 130), (20, 128, 40)):
            with self.subTest(m=m, k=k, f=f):
                fb = cdiv(f, 128)
                (gq, gs), (uq, us) = self.weight(f, k), self.weight(f, k)
                weights = [("wg.weight", gq), ("wg.weight_scale_inv", gs),
                           ("wu.weight", uq), ("wu.weight_scale_inv", us)]
                text = swiglu_fp8_text(m, k, f)
                name = f"amx_swiglu_m{m}_k{k}_f{f}"
                kernel, tile_n, ir = self.compile(name, text, weights, "gemm_swiglu_fp8")
                x = self.rng.standard_normal((m, k)).astype(np.float32)
                xq, xs = F.quantize_activation(x)
                xq = np.ascontiguousarray(xq.astype(np.uint8))
                xs = np.ascontiguousarray(xs.astype(np.float32))
                h = silu(F.fp8_gemm(xq, xs, gq, gs)) * F.fp8_gemm(xq, xs, uq, us)
                rq, rs = F.quantize_activation(h.astype(np.float32))
                aq = np.empty((m, f), np.uint8)
                as_ = np.empty((m, fb), np.float32)
                work = np.empty((m, f), np.float32)
                # xq, w_gate, w_up, xs, w_gate_scale, w_up_scale -> q, s, workspace
                buffers = [xq, gq, uq, xs, gs, us, aq, as_, work]
                for threads in THREADS:
                    if self.NATIVE:
                        got_q, got_s = self.run_kernel(name, text, weights, kernel, ir, tile_n, f, m,
                                                       buffers, ["aq", "as"], {"x": x}, threads)
                    else:
                        self.run_kernel(name, text, weights, kernel, ir, tile_n, f, m, buffers,
                                        ["aq", "as", "work"], {"x": x}, threads)
                        got_q, got_s = aq, as_
                    assert_codes_close(self, got_q, got_s, rq, rs, f"{name} threads={threads}")


    # ------------------------------------------------------------------
    # moe_up_fp8 / moe_down_fp8 on expert segments (always emulated: the
    # test writes the layout itself)
    # ------------------------------------------------------------------

    def test_experts_on_segments(self):
        """The experts' grouped GEMMs on a layout of the test's own: segments
        of 40 rows over two blocks (AMX, then the last block's padding), 12
        rows (AVX-512), 70 rows over three blocks with a padding row inside
        (computed, not stored), exactly 16 rows, and an unused block (expert
        -1). Real rows must match the float64 model (SwiGLU codes as above,
        the down projection within the GEMM bound); padding rows must keep
        what the buffers held."""
        t, d, f, e = 64, 256, 192, 4
        kd, kf = cdiv(d, 128), cdiv(f, 128)
        ws = {kind: [self.weight(*shape) for _ in range(e)]
              for kind, shape in (("g", (f, d)), ("u", (f, d)), ("d", (d, f)))}
        weights = [("router", self.rng.standard_normal((e, d)).astype(np.float32))]
        for kind, lst in ws.items():
            for i, (q, sc) in enumerate(lst):
                weights += [(f"{kind}{i}", q), (f"{kind}{i}s", sc)]
        names = lambda kind, suf="": "[" + ", ".join(f'"{kind}{i}{suf}"' for i in range(e)) + "]"  # noqa: E731
        x_t, q_t, s_t = f"tensor<{t}x{d}xf32>", f"tensor<{t}x{d}xf8E4M3FN>", f"tensor<{t}x{kd}xf32>"
        st = (f"tensor<{e}x{f}x{d}xf8E4M3FN>", f"tensor<{e}x{f}x{d}xf8E4M3FN>", f"tensor<{e}x{d}x{f}xf8E4M3FN>",
              f"tensor<{e}x{kf}x{kd}xf32>", f"tensor<{e}x{kf}x{kd}xf32>", f"tensor<{e}x{kd}x{kf}xf32>")
        text = f"""
module {{
  func.func @forward(%x: {x_t} {{kiln.name = "x"}}) -> ({x_t} {{kiln.name = "y"}}) {{
    %r = kiln.weight "router" : tensor<{e}x{d}xf32>
    %wg = kiln.weight_stack {names("g")} : {st[0]}
    %wu = kiln.weight_stack {names("u")} : {st[1]}
    %wd = kiln.weight_stack {names("d")} : {st[2]}
    %wgs = kiln.weight_stack {names("g", "s")} : {st[3]}
    %wus = kiln.weight_stack {names("u", "s")} : {st[4]}
    %wds = kiln.weight_stack {names("d", "s")} : {st[5]}
    %xq, %xs = kiln.quantize %x {{quant = {QUANT}}} : ({x_t}) -> ({q_t}, {s_t})
    %y = kiln.moe %x, %r, %wg, %wu, %wd fp8(%xq, %xs, %wgs, %wus, %wds) {{top_k = 2 : i64, scoring = "softmax", quant = {QUANT}}}
        : ({x_t}, tensor<{e}x{d}xf32>, {st[0]}, {st[1]}, {st[2]}, {q_t}, {s_t}, {st[3]}, {st[4]}, {st[5]}) -> {x_t}
    return %y : {x_t}
  }}
}}
"""
        ir = os.path.join(self.tmp, "experts_ir")
        model = KernelModel(self.tmp, "experts", text, weights,
                            [f"--cpu={self.CPU}", "--moe-block-m=32", "--dump-ir-dir", ir])
        info = {re.sub(r"_d\d.*", "", k["name"]): k for k in model.kernel_info()}
        for kind in ("moe_up_fp8", "moe_down_fp8"):
            self.assertIn(f"cpu={self.TILES} for >= 16 rows (e4m3 -> bf16 exactly", info[kind]["config"])
        tile_f = int(re.search(r"tile_f=(\d+)", info["moe_up_fp8"]["config"]).group(1))
        tile_d = int(re.search(r"tile_d=(\d+)", info["moe_down_fp8"]["config"]).group(1))
        kernels = E.Kernels(E.build_shared_object(os.path.join(ir, "05-cpu.ll"), ir))
        bm, blocks = 32, 8
        segments = [(0, 40, 2), (1, 12, 1), (2, 70, 3), (3, 16, 1)]  # expert, rows, blocks
        sorted_token = np.full(blocks * bm, -1, np.int32)
        block_expert = np.full(blocks, -1, np.int32)
        expert_of = np.full(blocks * bm, -1)
        b0 = 0
        for ex, rows, nb in segments:
            sorted_token[b0 * bm:b0 * bm + rows] = self.rng.integers(0, t, rows)
            block_expert[b0:b0 + nb] = ex
            expert_of[b0 * bm:b0 * bm + rows] = ex
            b0 += nb
        sorted_token[3 * bm + 21] = -1  # a padding row inside expert 2's segment (blocks 3-5)
        expert_of[sorted_token < 0] = -1
        real = np.flatnonzero(sorted_token >= 0)
        x = self.rng.standard_normal((t, d)).astype(np.float32)
        xq, xs = F.quantize_activation(x)
        xq = np.ascontiguousarray(xq.astype(np.uint8))
        xs = np.ascontiguousarray(xs.astype(np.float32))
        tables = {kind: ([q for q, _ in lst], [sc for _, sc in lst]) for kind, lst in ws.items()}
        # The float64 model per real row.
        h = np.zeros((blocks * bm, f))
        for r in real:
            ex, tok = expert_of[r], sorted_token[r]
            g = F.fp8_gemm(xq[tok], xs[tok], ws["g"][ex][0], ws["g"][ex][1])
            u = F.fp8_gemm(xq[tok], xs[tok], ws["u"][ex][0], ws["u"][ex][1])
            h[r] = silu(g) * u
        hq, hs = F.quantize_activation(h.astype(np.float32))
        hq = np.ascontiguousarray(hq.astype(np.uint8))
        hs = np.ascontiguousarray(hs.astype(np.float32))
        for threads in THREADS:
            what = f"experts threads={threads}"
            aq = np.full((blocks * bm, f), 0x55, np.uint8)
            as_ = np.full((blocks * bm, kf), -7.0, np.float32)
            work = np.full((blocks * bm, f), -7.0, np.float32)
            # xq, xs, sorted_token, block_expert, w_gate, w_up, w_gate_scale,
            # w_up_scale -> act_q, act_s, workspace (MoeEmitter.cpp)
            kernels.split(info["moe_up_fp8"]["name"],
                          [xq, xs, sorted_token, block_expert, tables["g"][0], tables["u"][0],
                           tables["g"][1], tables["u"][1], aq, as_, work],
                          blocks * cdiv(f, tile_f), threads)
            assert_codes_close(self, aq[real], as_[real], hq[real], hs[real], what)
            pad = sorted_token < 0
            self.assertTrue(np.all(aq[pad] == 0x55) and np.all(as_[pad] == -7.0), what)
            rows = np.full((blocks * bm, d), -7.0, np.float32)
            # act_q, act_s, sorted_token, block_expert, w_down, w_down_scale -> rows
            kernels.split(info["moe_down_fp8"]["name"],
                          [hq, hs, sorted_token, block_expert, tables["d"][0], tables["d"][1], rows],
                          blocks * cdiv(d, tile_d), threads)
            self.assertTrue(np.all(rows[pad] == -7.0), what)
            for r in real:
                ex = expert_of[r]
                want = F.fp8_gemm(hq[r], hs[r], ws["d"][ex][0], ws["d"][ex][1])
                s_abs = F.fp8_gemm(hq[r] & 0x7F, hs[r], ws["d"][ex][0] & 0x7F, ws["d"][ex][1])
                s_sub = (F.fp8_gemm(hq[r] & 0x7F, hs[r], subnormals(ws["d"][ex][0]), ws["d"][ex][1])
                         if self.FLUSHES else 0.0)
                bound = (f + kf + 2) * U * s_abs + s_sub + 1e-30
                bad = np.flatnonzero(~(np.abs(rows[r].astype(np.float64) - want) <= bound))
                self.assertEqual(len(bad), 0, f"{what} row {r} (expert {ex}): columns {bad[:5]}")

class CpuFP8Dp(CpuFP8Amx):
    """The same cases on AVX-512-BF16 without AMX (--cpu=cooperlake; AMD Zen
    4 and 5 run it natively, as does Sapphire Rapids): vdpbf16ps register
    blocks over the same packed activations, the weights of each column
    block converted to bf16 once. Same tolerances: the same exact products,
    summed in fp32 per 128 of K in another order."""
    CPU = "cooperlake"
    TILES = "avx512-bf16"
    FLUSHES = False  # no avx512vbmi: the f16 route, exact
    NATIVE = host_runs(CPU)
    CALLS = ("@llvm.x86.avx512bf16.dpbf16ps.512(", "@llvm.x86.avx512.vpermi2var.hi.512(")
    INSNS = ("vdpbf16ps", "vpermt2w")


if __name__ == "__main__":
    unittest.main()
