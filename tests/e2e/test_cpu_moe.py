"""The optimized CPU emitter of the experts' grouped GEMMs (moe_up: gate +
up + SwiGLU, moe_down) against the reference emitter (--cpu-emitter=
reference, the scalar programs), and both against a float64 MoE.

Each case is one kiln.moe layer. Its routing (moe_route) and combine
(moe_combine) kernels take the reference emitter in both plans, so the two
plans route identically and differ only in the grouped GEMMs: the
comparison of their outputs is the comparison of those two kernels. The
cases hit the edges of the layout and of the blocking: one token (decode:
each expert's segment is one real row in a block of 8), experts with no
rows, segments of several blocks (--moe-block-m=8 with skewed routing), a
shared expert as an extra expert, K and N that are not multiples of the
16 vector lanes or of the register blocks, tiles of one column and of the
whole width (--min-gemm-programs), f32, bf16 and f16 weights, and 1, 2 and
3 threads (ranges that start and end inside blocks; the AVX-512 outputs
must be bit-identical across them).

Tolerances (x: activations, Wg/Wu/Wd: an expert's weights, u = 2^-24;
h = silu(g) * up the expert's hidden row, w_k the routing weights):

- f32 (default): the reference's products summed in another order. Per
  hidden value, dg = 2 D u |x| |Wg|^T, du likewise, and |dh| <= 1.1 (|up|
  + du) dg + (|silu(g)| + 1.1 dg) du + 8 u |h| (test_cpu_gemm.py's SwiGLU
  bound); per output, |dy| <= sum_k w_k (2 F u |Wd| |h| + |Wd| |dh|) plus
  2 slots u sum_k w_k |Wd h| for the combine's roundings of differing
  inputs; and max |dy| <= 2e-6 max |y|.
- bf16 (--cpu-gemm-precision=bf16: AMX-BF16 tiles for segments of >= 16
  rows): x and h rounded to bf16 (2^-9 relative), so the same form with
  2^-8 in place of 2 D u and 2 F u; the generated code holds tile
  products, and the outputs differ from the reference (the AMX path ran).

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import glob
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilntest import HOST_AMX, HOST_AVX512_BF16, HOST_ISA, KernelModel, bf16_tiles, host_runs, target_isa  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402
from test_cpu_gemm import stored  # noqa: E402
from test_moe import moe_reference, silu  # noqa: E402

U = 2.0 ** -24
THREADS = (1, 2, 3)


class Case:
    """One MoE layer: T tokens of D, E routed experts of F (+ `shared`),
    top_k, softmax routing; weights of `wdtype`."""

    def __init__(self, name, t, d, f, e, k, wdtype, rng, shared=0, skew=False):
        self.name, self.t, self.d, self.f, self.e, self.k = name, t, d, f, e, k
        self.shared = shared
        total = e + shared
        self.router = rng.standard_normal((e, d)).astype(np.float32)
        x = rng.standard_normal((t, d)).astype(np.float32)
        if skew:
            # Every token prefers experts 0 .. k-1: their segments span
            # several blocks, the others get no rows.
            self.router *= 0.01
            self.router[:, 0] = -8.0
            for j in range(k):
                self.router[j, 0] = 8.0 - j
            x *= 0.1
            x[:, 0] = 2.0
        self.x = x
        self.weights, self.w = [], {}
        for kind, shape, fan in (("gate", (f, d), d), ("up", (f, d), d), ("down", (d, f), f)):
            vals = []
            for i in range(total):
                v, code, data = stored(rng.standard_normal(shape).astype(np.float32) * fan ** -0.5, wdtype)
                self.weights.append((f"e{i}.{kind}", code, shape, data))
                vals.append(v)
            self.w[kind] = np.stack(vals)
        self.weights.append(("router", "F32", self.router.shape, self.router.tobytes()))
        wt = {"f32": "f32", "bf16": "bf16", "f16": "f16"}[wdtype]
        names = lambda kind: "[" + ", ".join(f'"e{i}.{kind}"' for i in range(total)) + "]"  # noqa: E731
        self.text = f"""
module attributes {{kiln.weights = "w.safetensors"}} {{
  func.func @forward(%x: tensor<{t}x{d}xf32> {{kiln.name = "x"}}) -> (tensor<{t}x{d}xf32> {{kiln.name = "y"}}) {{
    %r = kiln.weight "router" : tensor<{e}x{d}xf32>
    %wg = kiln.weight_stack {names("gate")} : tensor<{total}x{f}x{d}x{wt}>
    %wu = kiln.weight_stack {names("up")} : tensor<{total}x{f}x{d}x{wt}>
    %wd = kiln.weight_stack {names("down")} : tensor<{total}x{d}x{f}x{wt}>
    %y = kiln.moe %x, %r, %wg, %wu, %wd {{top_k = {k} : i64, scoring = "softmax", shared_experts = {shared} : i64}}
        : (tensor<{t}x{d}xf32>, tensor<{e}x{d}xf32>, tensor<{total}x{f}x{d}x{wt}>,
           tensor<{total}x{f}x{d}x{wt}>, tensor<{total}x{d}x{f}x{wt}>) -> tensor<{t}x{d}xf32>
    return %y : tensor<{t}x{d}xf32>
  }}
}}
"""

    def routes(self):
        """Per token, [(expert, weight)] as the float64 reference routes."""
        x = self.x.astype(np.float64)
        logits = x @ self.router.T.astype(np.float64)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = z / z.sum(axis=1, keepdims=True)
        out = []
        for t in range(self.t):
            ids = np.argsort(-scores[t], kind="stable")[:self.k]
            w = scores[t, ids] / scores[t, ids].sum()
            out.append(list(zip(ids, w)) + [(self.e + s, 1.0) for s in range(self.shared)])
        return out

    def bound(self, eps_up, eps_down):
        """Per output, the bound on |optimized - reference| when the up and
        down sums each carry a relative error eps * sum |terms| (eps = 2 K u
        for fp32 in another order, 2^-8 with bf16-rounded activations)."""
        wg, wu, wd = (self.w[k].astype(np.float64) for k in ("gate", "up", "down"))
        x = self.x.astype(np.float64)
        ax = np.abs(x)
        b = np.zeros((self.t, self.d))
        slots = self.k + self.shared
        for t, route in enumerate(self.routes()):
            for ex, wt in route:
                g, up = wg[ex] @ x[t], wu[ex] @ x[t]
                dg = eps_up * (np.abs(wg[ex]) @ ax[t])
                du = eps_up * (np.abs(wu[ex]) @ ax[t])
                h = silu(g) * up
                dh = 1.1 * (np.abs(up) + du) * dg + (np.abs(silu(g)) + 1.1 * dg) * du + 8 * U * np.abs(h)
                ah = np.abs(h) + dh
                b[t] += wt * (eps_down * (np.abs(wd[ex]) @ ah) + np.abs(wd[ex]) @ dh
                              + 2 * slots * U * np.abs(wd[ex] @ h))
        return b + 1e-30


# Where AMX cases run: the host when it has AMX, else compiled for
# sapphirerapids and checked up to the IR.
AMX_CPU = None if HOST_AMX else "sapphirerapids"
# AVX-512-BF16 cases: the host when it has it without AMX, else cooperlake
# (native on Sapphire Rapids, the IR only where the host lacks it).
DP_CPU = None if HOST_AVX512_BF16 and not HOST_AMX else "cooperlake"


@unittest.skipIf(HOST_ISA is None, "the host has neither AVX-512 nor AVX2 + FMA")
class CpuMoeEmitter(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cpu-moe-")
        cls.rng = np.random.default_rng(11)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compile(self, case, variant, flags):
        d = os.path.join(self.tmp, f"{case.name}_{variant}")
        os.makedirs(d, exist_ok=True)
        mk.write_safetensors(os.path.join(d, "w.safetensors"), case.weights)
        ir = os.path.join(self.tmp, f"{case.name}_{variant}_ir")
        return KernelModel(self.tmp, f"{case.name}_{variant}", case.text,
                           flags=[*flags, "--dump-ir-dir", ir]), ir

    def expert_kernels(self, model):
        ks = [k for k in model.kernel_info() if k["name"].startswith(("moe_up", "moe_down"))]
        self.assertEqual(len(ks), 2, [k["name"] for k in ks])
        return ks

    def check(self, case, flags=(), precision="f32", amx_expected=False, cpu=None):
        """`cpu`: compile the optimized plan for it (a CPU whose code the host
        cannot run: checked up to the IR)."""
        ref, _ = self.compile(case, "ref", ["--cpu-emitter=reference", *flags])
        opt, ir = self.compile(case, precision, [f"--cpu-gemm-precision={precision}", *flags,
                                                 *([f"--cpu={cpu}"] if cpu else [])])
        for k in self.expert_kernels(ref):
            self.assertIn("cpu=reference", k["config"])
        tiles = bf16_tiles(cpu) if (precision == "bf16" and all(w[1] == "BF16" for w in case.weights[:-1])
                                    and case.d % 32 == 0 and case.f % 32 == 0) else None
        amx = tiles is not None
        isa = target_isa(cpu)
        for k in self.expert_kernels(opt):
            self.assertIn(f"cpu={tiles} for >= 16 rows" if amx else f"cpu={isa} fp32", k["config"])
            self.assertIn("per expert segment", k["config"])
        (ll_path,) = glob.glob(os.path.join(ir, "*-cpu.ll"))
        with open(ll_path) as f:
            ll = f.read()
        self.assertRegex(ll, r"fmuladd\.v16f32|fma\.v16f32")
        if tiles == "amx-bf16":
            self.assertIn("llvm.x86.tdpbf16ps.internal", ll)
        if tiles == "avx512-bf16":
            self.assertIn("llvm.x86.avx512bf16.dpbf16ps.512", ll)
        if not host_runs(cpu):
            return [k["config"] for k in self.expert_kernels(opt)]  # the IR only

        want = moe_reference(case.x.astype(np.float64), case.router, case.w["gate"], case.w["up"],
                             case.w["down"], case.k, "softmax", shared=case.shared)
        (r,) = ref({"x": case.x}, ["y"], threads=1)
        r64 = r.astype(np.float64)
        err = np.linalg.norm(r64 - want) / np.linalg.norm(want)
        self.assertLess(err, 1e-5, f"{case.name}: the reference emitter vs float64")
        if precision == "bf16":
            bound = case.bound(2.0 ** -8, 2.0 ** -8)
            rel_max = 2.0 ** -6
        else:
            bound = case.bound(2 * case.d * U, 2 * case.f * U)
            rel_max = 2e-6
        first = None
        for threads in THREADS:
            (g,) = opt({"x": case.x}, ["y"], threads=threads)
            what = f"{case.name} threads={threads} precision={precision}"
            if not amx:
                # One order of the sums per output whatever the thread split.
                first = g if first is None else first
                np.testing.assert_array_equal(g, first, what)
            d = np.abs(g.astype(np.float64) - r64)
            bad = np.argwhere(d > bound)
            self.assertEqual(len(bad), 0, f"{what}: {len(bad)} outputs off the reference, "
                             f"first {bad[:3].tolist()}")
            self.assertLessEqual(d.max() / np.abs(r64).max(), rel_max, what)
            if amx_expected and threads == 1:
                self.assertFalse(np.array_equal(g, r), f"{what}: equals the fp32 reference")
        return [k["config"] for k in self.expert_kernels(opt)]

    def test_one_token(self):
        # Decode: 3 experts of one real row each in blocks of 8; D = 38 and
        # F = 23: K tails in both GEMMs and N tails of the register blocks.
        for wd in ("f32", "bf16", "f16"):
            with self.subTest(w=wd):
                self.check(Case(f"one_{wd}", 1, 38, 23, 8, 3, wd, self.rng))

    def test_shared_expert_and_tiles(self):
        # A shared expert as an extra expert; tiles of the whole width and of
        # few columns, so ranges split inside blocks.
        for mgp in (1, 4096):
            with self.subTest(min_gemm_programs=mgp):
                self.check(Case(f"shared_{mgp}", 12, 40, 36, 6, 2, "bf16", self.rng, shared=1),
                           flags=[f"--min-gemm-programs={mgp}"])

    def test_skewed_segments_of_several_blocks(self):
        # 40 tokens all to experts 0 and 1 in blocks of 8: segments of 5
        # blocks, 6 experts without rows.
        self.check(Case("skew", 40, 48, 40, 8, 2, "f32", self.rng, skew=True),
                   flags=["--moe-block-m=8"])

    def check_segments(self, prefix, cpu):
        """A skewed layout whose 40-row segments span 5 blocks of 8, a shared
        expert beside routed ones, a one-token plan: bf16 weights, D and F
        multiples of 32, compiled for `cpu`'s bf16 tile path."""
        self.check(Case(f"{prefix}_skew", 40, 64, 96, 8, 2, "bf16", self.rng, skew=True),
                   flags=["--moe-block-m=8"], precision="bf16", amx_expected=True, cpu=cpu)
        self.check(Case(f"{prefix}_mixed", 24, 64, 32, 4, 2, "bf16", self.rng, shared=1),
                   precision="bf16", cpu=cpu)
        self.check(Case(f"{prefix}_one", 1, 64, 32, 8, 3, "bf16", self.rng), precision="bf16", cpu=cpu)

    def test_amx_segments(self):
        # The 40-row segments take AMX tiles (merged over 5 blocks of 8), the
        # one-token plan and small segments AVX-512; F = 96: six gate/up tile
        # pairs of 16 columns.
        self.check_segments("amx", AMX_CPU)

    def test_avx512_bf16_segments(self):
        # On vdpbf16ps register blocks (6 columns, or 3 gate/up pairs, x 4
        # blocks of 16 rows): the 40-row segments take 3 16-row blocks, F =
        # 96 is 32 blocks of 3 gate/up columns, D = 64 ten of 6 and 4 columns
        # on fp32; the one-token plan and small segments take the fp32
        # register blocks (K < 2048: no bf16 GEMV).
        self.check_segments("dp", DP_CPU)

    def test_amx_refused_where_it_does_not_apply(self):
        configs = self.check(Case("amx_f32", 20, 64, 32, 4, 2, "f32", self.rng), precision="bf16",
                             cpu=AMX_CPU)
        self.assertTrue(all("weights are not bf16" in c for c in configs), configs)


if __name__ == "__main__":
    unittest.main()
