"""The optimized CPU GEMM emitter against the reference emitter, op by op
(llama.cpp's test-backend-ops, oneDNN's benchdnn): every kernel of the GEMM
family (gemm with 0-2 epilogue addends, gemm_swiglu, gemm_dual) compiled with
--cpu-emitter=reference (the scalar programs, the specification) and with the
default emitter, on shapes that hit every edge of the blocking: M = 1, M not
a multiple of the 4-row register block or of AMX's 16-row tiles, N not a
multiple of the 4-column block, of 16 or 32 (AMX), or of any tile (tile_n =
1), K not a multiple of the 16 vector lanes or of 32, tiny K; f32, bf16 and
f16 weights; runs on 1, 2 and 3 threads so the program range is split inside
rows at odd places (the AVX-512 outputs must be bit-identical across them).

Tolerances (x: activations, W: weights, S = |x| |W|^T elementwise):

- f32 (default): the same fp32 products summed in another order, so
  |auto - ref| <= 2 K 2^-24 S (+ 2^-23 (S + |addends|) for the epilogue), and
  max |auto - ref| <= 2e-6 max |ref|.
- bf16 (--cpu-gemm-precision=bf16, AMX-BF16 tiles for blocks of >= 16 rows
  and bf16 weights): such outputs are the exact products of bf16(x) (nearest
  even) and W, summed in fp32, so they are checked against a float64
  emulation of exactly that with the f32 bound above, as are the rows the
  fp32 kernel computes as a bf16 GEMV (vdpbf16ps: those past its last whole
  register block, e.g. every row of a decode); the other outputs of the
  AVX-512 path (blocks of < 16 rows, the last columns) against the
  reference with the same bound. On one thread the partition is known and checked
  exactly; on 2 and 3 every output must match one of the two; both also
  within 2e-6 of the largest output; and all lie within 2^-8 S of the
  reference (x's rounding is at most 2^-9 relative).

Each plan's kernel config must name the emitter (so the comparison is never
the reference against itself), and the generated LLVM IR must hold 16-lane
FMAs (zmm on AVX-512, ymm pairs on AVX2: the same sums in the same order), or
AMX tile products where the bf16 path is on. The host decides what runs:
AVX-512 and AMX cases compiled for a CPU the host is not (sapphirerapids on
an AVX2-only host) are checked up to their IR, except the AVX-512-BF16 ones
(cooperlake), which then run through cpu_emulation.py (vdpbf16ps by its SDM
semantics; KILN_TEST_EMULATE=1 runs them so on a host that has it too);
every host with AVX2 runs the rest.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilntest import (HOST_AMX, HOST_AVX512_BF16, HOST_ISA, KernelModel, bf16_tiles,  # noqa: E402
                      host_runs, run, target_isa, tool)
import make_tiny_checkpoint as mk  # noqa: E402

U = 2.0 ** -24  # fp32 unit roundoff
THREADS = (1, 2, 3)
MLIR_TYPE = {"f32": "f32", "bf16": "bf16", "f16": "f16"}


def bf16_round(a):
    """float32 -> the nearest-even bf16 value, as float32."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32) << 16
    return r.astype(np.uint32).view(np.float32)


def stored(w, dtype):
    """(the values as stored, safetensors code, bytes) of a weight."""
    if dtype == "bf16":
        v = bf16_round(w)
        bits = (v.view(np.uint32) >> 16).astype(np.uint16)
        return v, "BF16", bits.tobytes()
    if dtype == "f16":
        h = w.astype(np.float16)
        return h.astype(np.float32), "F16", h.tobytes()
    return w.astype(np.float32), "F32", w.astype(np.float32).tobytes()


def silu(g):
    return g / (1.0 + np.exp(-g))


class Case:
    """One kiln-dialect model around one GEMM-family kernel, with its float64
    emulations: `f32(x)` (what the reference computes) and `bf16(x)` (the
    AMX path's arithmetic), plus the elementwise scale S for the bounds."""

    def __init__(self, kind, m, k, n, wdtype, rng, addends=0, n2=0):
        self.kind, self.m, self.k, self.n, self.n2 = kind, m, k, n, n2
        self.addends = addends
        wt = MLIR_TYPE[wdtype]
        self.weights, self.w = [], {}
        names = {"gemm": ["w"], "swiglu": ["wg", "wu"], "dual": ["w1", "w2"]}[kind]
        for name in names:
            rows = n2 if name == "w2" else n
            v, code, data = stored(rng.standard_normal((rows, k)).astype(np.float32) * k ** -0.5,
                                   wdtype)
            self.w[name] = v.astype(np.float64)
            self.weights.append((name, code, v.shape, data))
        x_t = f"tensor<{m}x{k}xf32>"
        y_t = f"tensor<{m}x{n}xf32>"
        decls = "\n".join(f'    %{nm} = kiln.weight "{nm}" : tensor<{self.w[nm].shape[0]}x{k}x{wt}>'
                          for nm in names)

        def lin(out, w, rows):
            return (f"    %{out} = kiln.linear %x, %{w} : ({x_t}, tensor<{rows}x{k}x{wt}>)"
                    f" -> tensor<{m}x{rows}xf32>")
        args = [f'%x: {x_t} {{kiln.name = "x"}}']
        if kind == "gemm":
            args += [f'%r{i}: {y_t} {{kiln.name = "r{i}"}}' for i in range(addends)]
            body = [lin("y0", "w", n)]
            for i in range(addends):
                body.append(f"    %y{i + 1} = kiln.add %y{i}, %r{i} : ({y_t}, {y_t}) -> {y_t}")
            body.append(f"    return %y{addends} : {y_t}")
            results = f'{y_t} {{kiln.name = "y"}}'
            self.outputs = ["y"]
        elif kind == "swiglu":
            body = [lin("g", "wg", n), lin("u", "wu", n),
                    f"    %a = kiln.swiglu %g, %u : ({y_t}, {y_t}) -> {y_t}",
                    f"    return %a : {y_t}"]
            results = f'{y_t} {{kiln.name = "y"}}'
            self.outputs = ["y"]
        else:
            y2_t = f"tensor<{m}x{n2}xf32>"
            body = [lin("p1", "w1", n), lin("p2", "w2", n2), f"    return %p1, %p2 : {y_t}, {y2_t}"]
            results = f'{y_t} {{kiln.name = "p1"}}, {y2_t} {{kiln.name = "p2"}}'
            self.outputs = ["p1", "p2"]
        self.text = f"""
module {{
  func.func @forward({", ".join(args)}) -> ({results}) {{
{decls}
{chr(10).join(body)}
  }}
}}
"""
        self.inputs = {"x": rng.standard_normal((m, k)).astype(np.float32)}
        for i in range(addends):
            self.inputs[f"r{i}"] = rng.standard_normal((m, n)).astype(np.float32)
        self.name = f"{kind}_m{m}_k{k}_n{n}{'_' + str(n2) if n2 else ''}_{wdtype}_a{addends}"

    def expected(self, x):
        """float64 outputs of the model on activations `x` (already rounded
        for the bf16 emulation), with each output's scale S and its epilogue
        slack for the f32 bound."""
        ax = np.abs(self.inputs["x"]).astype(np.float64)
        x = x.astype(np.float64)
        if self.kind == "gemm":
            y = x @ self.w["w"].T
            s = ax @ np.abs(self.w["w"]).T
            extra = s.copy()
            for i in range(self.addends):
                r = self.inputs[f"r{i}"].astype(np.float64)
                y, extra = y + r, extra + np.abs(r)
            return [(y, 2 * self.k * U * s + 2 * U * extra)]
        if self.kind == "swiglu":
            g, u = x @ self.w["wg"].T, x @ self.w["wu"].T
            sg, su = ax @ np.abs(self.w["wg"]).T, ax @ np.abs(self.w["wu"]).T
            dg, du = 2 * self.k * U * sg, 2 * self.k * U * su
            y = silu(g) * u
            # silu' <= 1.1; the epilogue's few fp32 roundings on top.
            bound = 1.1 * (np.abs(u) + du) * dg + (np.abs(silu(g)) + 1.1 * dg) * du + 8 * U * np.abs(y)
            return [(y, bound + 1e-30)]
        out = []
        for w in ("w1", "w2"):
            s = ax @ np.abs(self.w[w]).T
            out.append((x @ self.w[w].T, 2 * self.k * U * s))
        return out

    def loose(self):
        """2^-8 S per output: the bf16 path against the reference."""
        ax = np.abs(self.inputs["x"]).astype(np.float64)
        if self.kind == "gemm":
            return [2.0 ** -8 * (ax @ np.abs(self.w["w"]).T) + 1e-30]
        if self.kind == "swiglu":
            g = self.inputs["x"].astype(np.float64) @ self.w["wg"].T
            u = self.inputs["x"].astype(np.float64) @ self.w["wu"].T
            dg = 2.0 ** -8 * (ax @ np.abs(self.w["wg"]).T)
            du = 2.0 ** -8 * (ax @ np.abs(self.w["wu"]).T)
            return [1.1 * (np.abs(u) + du) * dg + (np.abs(silu(g)) + 1.1 * dg) * du + 1e-30]
        return [2.0 ** -8 * (ax @ np.abs(self.w[w]).T) + 1e-30 for w in ("w1", "w2")]

    def tile_columns(self, which, tiles):
        """Columns of output `which` the bf16 tile path computes for a block
        of all rows and all columns; the rest go to AVX-512 fp32. AMX: whole
        16-column tiles (32 for gemm and gemm_dual, then one 16-column
        tile); AVX-512-BF16: whole register blocks of 6 columns (3 for
        SwiGLU's gate and up pairs)."""
        n = self.n2 if which == 1 else self.n
        step = 16 if tiles == "amx-bf16" else 3 if self.kind == "swiglu" else 6
        return n // step * step


def gemv_rows(m, config):
    """Rows of a one-thread block of m rows that the fp32 kernel computes as
    the bf16 GEMV of the bf16 precision: those past its last whole register
    block of R rows, per packed chunk of C rows when the block takes the
    tile path (m >= 16), as the kernel config gives R and C; none where the
    config names no bf16 GEMV (AMX targets: fp32 there)."""
    if "bf16 GEMV" not in config:
        return []
    reg = int(re.search(r"fp32 (\d+)x\d+", config).group(1))
    chunk = int(re.search(r"packed (\d+) rows", config).group(1))
    bounds = [(0, m)] if m < 16 else [(c, min(c + chunk, m)) for c in range(0, m, chunk)]
    return [r for a, b in bounds for r in range(b - (b - a) % reg, b)]


# Where the AMX tests run: the host when it has AMX, else compiled for
# sapphirerapids and checked up to the IR. The AVX-512-BF16 tests: the host
# when it has AVX-512-BF16 without AMX, else cooperlake (run natively on
# Sapphire Rapids, through cpu_emulation.py on a host without AVX-512-BF16).
AMX_CPU = None if HOST_AMX else "sapphirerapids"
DP_CPU = None if HOST_AVX512_BF16 and not HOST_AMX else "cooperlake"
# Also run the AVX-512-BF16 cases through cpu_emulation.py where the host
# runs them natively (what a host without AVX-512-BF16 does), to check that
# path of the test itself.
FORCE_EMULATION = os.environ.get("KILN_TEST_EMULATE") == "1"


@unittest.skipIf(HOST_ISA is None, "the host has neither AVX-512 nor AVX2 + FMA")
class CpuGemmEmitter(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cpu-gemm-")
        cls.rng = np.random.default_rng(11)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compile(self, case, variant, flags):
        weights = [(n, c, s, d) for n, c, s, d in case.weights]
        d = os.path.join(self.tmp, f"{case.name}_{variant}")
        os.makedirs(d, exist_ok=True)
        mk.write_safetensors(os.path.join(d, "w.safetensors"), weights)
        text = case.text.replace("module {", 'module attributes {kiln.weights = "w.safetensors"} {', 1)
        ir = os.path.join(self.tmp, f"{case.name}_{variant}_ir")
        return KernelModel(self.tmp, f"{case.name}_{variant}", text,
                           flags=[*flags, "--dump-ir-dir", ir]), ir

    def gemm_kernel(self, model):
        ks = [k for k in model.kernel_info() if k["name"].startswith("gemm")]
        self.assertEqual(len(ks), 1, [k["name"] for k in model.kernel_info()])
        return ks[0]

    def cpu_ll(self, ir):
        (path,) = glob.glob(os.path.join(ir, "*-cpu.ll"))
        with open(path) as f:
            return f.read()

    def check(self, case, min_gemm_programs=None, precision="f32", cpu=None):
        """Compares the two emitters on `case` (the optimized one compiled for
        `cpu`, default the host); returns the optimized kernel's config
        text."""
        extra = [f"--min-gemm-programs={min_gemm_programs}"] if min_gemm_programs else []
        ref, _ = self.compile(case, "ref", ["--cpu-emitter=reference", *extra])
        opt, ir = self.compile(case, precision, [f"--cpu-gemm-precision={precision}", *extra,
                                                 *([f"--cpu={cpu}"] if cpu else [])])
        kref, kopt = self.gemm_kernel(ref), self.gemm_kernel(opt)
        prefix = {"gemm": "gemm_n", "swiglu": "gemm_swiglu", "dual": "gemm_dual"}[case.kind]
        self.assertTrue(kopt["name"].startswith(prefix), kopt["name"])
        self.assertEqual(kref["name"], kopt["name"])
        if case.kind == "gemm":
            self.assertEqual(kopt["num_buffers"], 3 + case.addends)
        self.assertIn("cpu=reference", kref["config"])
        tiles = bf16_tiles(cpu) if (precision == "bf16" and all(w[1] == "BF16" for w in case.weights)
                                    and case.k % 32 == 0) else None
        amx = tiles is not None
        isa = target_isa(cpu)
        self.assertIn(f"cpu={tiles} for >= 16 rows" if amx else f"cpu={isa} fp32", kopt["config"])
        ll = self.cpu_ll(ir)
        self.assertRegex(ll, r"fmuladd\.v16f32|fma\.v16f32")
        if tiles == "amx-bf16":
            self.assertIn("llvm.x86.tdpbf16ps.internal", ll)
        if tiles == "avx512-bf16":
            self.assertIn("llvm.x86.avx512bf16.dpbf16ps.512", ll)
        if tiles == "avx512-bf16" and (not host_runs(cpu) or FORCE_EMULATION):
            self.check_emulated(case, kopt, ir)
        if not host_runs(cpu):
            return kopt["config"]  # code for a CPU this host is not: the IR only

        want = [o for o, _ in case.expected(case.inputs["x"])]
        got_ref = ref(case.inputs, case.outputs, threads=1)
        for r, e, (name) in zip(got_ref, want, case.outputs):
            # The reference itself against float64 numpy: the test's inputs
            # and emulation are what the model computes.
            err = np.abs(r - e).max() / max(np.abs(e).max(), 1e-30)
            self.assertLess(err, 1e-5, f"{case.name} reference {name}")
        f32 = case.expected(case.inputs["x"])
        b16 = case.expected(bf16_round(case.inputs["x"]))
        loose = case.loose()
        first = None
        for threads in THREADS:
            got = opt(case.inputs, case.outputs, threads=threads)
            if not amx:
                # Every AVX-512 instance sums an output in one order: the
                # thread split (where rows fall into blocks) changes nothing.
                first = first or got
                for g, g1, name in zip(got, first, case.outputs):
                    np.testing.assert_array_equal(g, g1, f"{case.name} {name} threads={threads}")
            for i, (g, r, name) in enumerate(zip(got, got_ref, case.outputs)):
                what = f"{case.name} {name} threads={threads} precision={precision}"
                g64, r64 = g.astype(np.float64), r.astype(np.float64)
                (_, bound), (e16, bound16) = f32[i], b16[i]
                if not amx:
                    near_ref = np.abs(g64 - r64) <= 2 * bound
                    bad = np.argwhere(~near_ref)
                    self.assertEqual(len(bad), 0, f"{what}: {len(bad)} outputs off the "
                                     f"reference, first {bad[:3].tolist()}")
                    rel = np.abs(g64 - r64).max() / max(np.abs(r64).max(), 1e-30)
                    self.assertLessEqual(rel, 2e-6, what)
                    continue
                self.assertTrue(np.all(np.abs(g64 - r64) <= loose[i]), what)
                d_ref, d_16 = np.abs(g64 - r64), np.abs(g64 - e16)
                if threads == 1:
                    # One block of all rows: bf16 tiles iff >= 16 rows, on
                    # whole tiles or register blocks; the rest on AVX-512.
                    on_amx = np.zeros(g.shape, bool)
                    fp32_cols = slice(0, None)
                    if case.m >= 16:
                        on_amx[:, :case.tile_columns(i, tiles)] = True
                        fp32_cols = slice(case.tile_columns(i, tiles), None)
                        self.assertFalse(np.all(g64[on_amx] == r64[on_amx]),
                                         f"{what}: the {tiles} outputs equal the fp32 reference")
                    # The fp32 kernel's rows past its last register block
                    # (per packed chunk) are a bf16 GEMV (vdpbf16ps).
                    on_amx[gemv_rows(case.m, kopt["config"]), fp32_cols] = True
                    d = np.where(on_amx, d_16, d_ref)
                    tol = np.where(on_amx, 2 * bound16, 2 * bound)
                else:
                    d, tol = np.minimum(d_ref, d_16), 2 * np.maximum(bound, bound16)
                bad = np.argwhere(d > tol)
                self.assertEqual(len(bad), 0, f"{what}: first {bad[:3].tolist()}")
                self.assertLessEqual(d.max() / max(np.abs(r64).max(), 1e-30), 2e-6, what)
        return kopt["config"]

    def check_emulated(self, case, kopt, ir):
        """The AVX-512-BF16 kernel's LLVM IR with vdpbf16ps (and the other
        intrinsics cpu_emulation.py covers) replaced by its SDM semantics,
        built for this host and called through ctypes on the runtime's
        splits of the program range: every output within the bound of the
        fp32 model or of the bf16 one (which of the two depends on the
        split), and all within 2^-8 S of the exact result."""
        import cpu_emulation as E
        (ll,) = glob.glob(os.path.join(ir, "*-cpu.ll"))
        kernels = E.Kernels(E.build_shared_object(ll, ir))
        tile_n = int(re.search(r"tile_n=(\d+)", kopt["config"]).group(1))
        x = np.ascontiguousarray(case.inputs["x"])
        ws = [np.frombuffer(d, np.uint16).reshape(shape).copy() for _, code, shape, d in case.weights]
        adds = [np.ascontiguousarray(case.inputs[f"r{i}"]) for i in range(case.addends)]
        widths = [case.n, case.n2] if case.kind == "dual" else [case.n]
        f32, b16, loose = case.expected(x), case.expected(bf16_round(x)), case.loose()
        for threads in THREADS:
            outs = [np.full((case.m, w), np.nan, np.float32) for w in widths]
            kernels.split(kopt["name"], [x, *ws, *adds, *outs],
                          case.m * -(-sum(widths) // tile_n), threads)
            for i, g in enumerate(outs):
                what = f"{case.name} output {i} threads={threads} (emulated)"
                (e32, bound), (e16, bound16) = f32[i], b16[i]
                g64 = g.astype(np.float64)
                d = np.minimum(np.abs(g64 - e32), np.abs(g64 - e16))
                bad = np.argwhere(~(d <= 2 * np.maximum(bound, bound16)))
                self.assertEqual(len(bad), 0, f"{what}: first {bad[:3].tolist()}")
                self.assertTrue(np.all(np.abs(g64 - e32) <= loose[i]), what)

    # --- f32 precision (the default): AVX-512 ---

    def test_gemm_shapes_and_dtypes(self):
        shapes = [(1, 64, 48), (7, 100, 70), (37, 37, 67), (5, 3, 10), (16, 16, 16), (33, 256, 96)]
        for wd in ("f32", "bf16", "f16"):
            for m, k, n in shapes:
                with self.subTest(m=m, k=k, n=n, w=wd):
                    self.check(Case("gemm", m, k, n, wd, self.rng))

    def test_gemm_tile_sizes(self):
        # --min-gemm-programs=1: the largest tile dividing N (64 here), so a
        # thread's range starts and ends inside rows of few, wide tiles.
        for mgp in (1, 4096):
            with self.subTest(min_gemm_programs=mgp):
                self.check(Case("gemm", 9, 72, 192, "bf16", self.rng), min_gemm_programs=mgp)

    def test_gemm_addends(self):
        for addends in (1, 2):
            for m, k, n in ((1, 40, 36), (9, 80, 70)):
                with self.subTest(addends=addends, m=m):
                    self.check(Case("gemm", m, k, n, "bf16", self.rng, addends=addends))

    def test_swiglu(self):
        for wd in ("f32", "bf16"):
            for m, k, n in ((1, 50, 40), (7, 100, 70), (18, 33, 5)):
                with self.subTest(w=wd, m=m):
                    self.check(Case("swiglu", m, k, n, wd, self.rng))

    def test_dual(self):
        for wd in ("f32", "f16"):
            for m, k, n, n2 in ((1, 64, 48, 16), (7, 100, 70, 6), (13, 20, 3, 5)):
                with self.subTest(w=wd, m=m, n=n, n2=n2):
                    self.check(Case("dual", m, k, n, wd, self.rng, n2=n2))

    def test_swiglu_exp_over_its_range(self):
        """The optimized epilogue's exp (a polynomial, not libm's expf)
        through silu: K = 1 and unit weights, so y = x silu(x) with no
        summation; within 4 ulp of the reference, overflow and underflow
        included."""
        x = np.concatenate([np.linspace(-110, 110, 4001), [-88.8, -88.7, -87.4, -87.3, 87.3, 88.7,
                                                            88.8, 1e-30, -1e-30, 0.0]])
        x = x.astype(np.float32).reshape(-1, 1)
        case = Case("swiglu", len(x), 1, 1, "f32", self.rng)
        case.weights = [(nm, "F32", (1, 1), np.ones((1, 1), np.float32).tobytes()) for nm in ("wg", "wu")]
        case.inputs = {"x": x}
        ref, _ = self.compile(case, "ref", ["--cpu-emitter=reference"])
        opt, _ = self.compile(case, "f32", [])
        self.assertIn(f"cpu={HOST_ISA}", self.gemm_kernel(opt)["config"])
        (r,) = ref(case.inputs, ["y"])
        (g,) = opt(case.inputs, ["y"])
        ulp = np.spacing(np.abs(r).astype(np.float32)).astype(np.float64)
        err = np.abs(g.astype(np.float64) - r) / np.maximum(ulp, np.spacing(np.float32(1e-30)))
        self.assertLessEqual(err.max(), 4, f"worst at x = {x[np.argmax(err), 0]}")

    # --- bf16 precision: AMX-BF16 tiles where they apply ---

    def test_amx_gemm(self):
        # 37 rows: an odd number of 16-row tiles with a partial one; 70
        # columns: two 32-column blocks, then 6 on AVX-512; 100 columns:
        # three blocks and one 16-column tile, then 4; M = 1 and M = 15 stay
        # on AVX-512; K = 96 is a multiple of 32 but not of 64.
        for m, k, n in ((37, 96, 70), (70, 256, 100), (1, 64, 48), (15, 64, 48), (64, 64, 64)):
            with self.subTest(m=m, k=k, n=n):
                self.check(Case("gemm", m, k, n, "bf16", self.rng), precision="bf16", cpu=AMX_CPU)

    def test_amx_row_chunks_and_addends(self):
        # K = 4096: the packed activations take 128 rows at a time, so 150
        # rows are two chunks; a residual in the epilogue.
        self.check(Case("gemm", 150, 4096, 40, "bf16", self.rng, addends=1), precision="bf16", cpu=AMX_CPU)

    def test_amx_swiglu_and_dual(self):
        self.check(Case("swiglu", 37, 96, 40, "bf16", self.rng), precision="bf16", cpu=AMX_CPU)
        self.check(Case("dual", 37, 96, 48, "bf16", self.rng, n2=20), precision="bf16", cpu=AMX_CPU)

    def check_refused(self, cpu):
        """f32 weights and K % 32 != 0 keep the f32 AVX-512 path on `cpu`,
        and its config says why."""
        for case, why in ((Case("gemm", 20, 64, 32, "f32", self.rng), "weights are not bf16"),
                          (Case("gemm", 20, 40, 32, "bf16", self.rng), "K is not a multiple of 32")):
            self.assertIn(why, self.check(case, precision="bf16", cpu=cpu))

    def test_amx_refused_where_it_does_not_apply(self):
        self.check_refused(AMX_CPU)


    # --- bf16 precision without AMX: AVX-512-BF16 register blocks ---

    def test_avx512_bf16_gemm(self):
        # Register blocks of 6 columns x 4 blocks of 16 rows. 37 rows: one
        # block of 3 (the last partial); 70 columns: 11 blocks of 6, then 4
        # on fp32; 100 rows: one full block of 4 and one of 3; 16 rows: one
        # of 1; K = 96 is a multiple of 32 but not of 64; M = 1 and 15 take
        # the fp32 register blocks, and from K = 2048 on the bf16 GEMV
        # (gemv_rows; shorter rows stay on the fp32 kernel, faster there).
        for m, k, n in ((37, 96, 70), (100, 256, 100), (1, 64, 48), (15, 64, 48), (64, 64, 64),
                        (16, 32, 8), (1, 2048, 24), (15, 2080, 10), (37, 2048, 14)):
            with self.subTest(m=m, k=k, n=n):
                config = self.check(Case("gemm", m, k, n, "bf16", self.rng), precision="bf16",
                                    cpu=DP_CPU)
                self.assertEqual("bf16 GEMV" in config, k >= 2048, config)

    def test_avx512_bf16_row_chunks_and_addends(self):
        # K = 4096: 128 packed rows at a time, so 150 rows are two chunks
        # (the second of 22 rows: a register block of 2, one partial).
        self.check(Case("gemm", 150, 4096, 40, "bf16", self.rng, addends=1), precision="bf16",
                   cpu=DP_CPU)
        self.check(Case("gemm", 53, 64, 33, "bf16", self.rng, addends=2), precision="bf16",
                   cpu=DP_CPU)

    def test_avx512_bf16_swiglu_and_dual(self):
        self.check(Case("swiglu", 37, 96, 42, "bf16", self.rng), precision="bf16", cpu=DP_CPU)
        self.check(Case("dual", 49, 96, 48, "bf16", self.rng, n2=20), precision="bf16", cpu=DP_CPU)

    def test_avx512_bf16_refused_where_it_does_not_apply(self):
        self.check_refused(DP_CPU)

    def test_choice_follows_the_target_cpu(self):
        # x86-64-v4: AVX-512 without AVX512-BF16 or AMX, so no AMX path.
        config = self.check(Case("gemm", 37, 96, 70, "bf16", self.rng), precision="bf16", cpu="x86-64-v4")
        self.assertIn("the target CPU lacks amx-bf16", config)
        # x86-64-v3: AVX2 + FMA, smaller register blocks of the same sums.
        config = self.check(Case("gemm", 7, 100, 70, "bf16", self.rng), cpu="x86-64-v3")
        self.assertIn("cpu=avx2 fp32 2x2 rows x cols", config)
        # x86-64: neither, so the reference, saying why.
        case = Case("gemm", 7, 100, 70, "bf16", self.rng)
        model, _ = self.compile(case, "v1", ["--cpu=x86-64"])
        self.assertIn("cpu=reference (neither AVX-512 nor AVX2 + FMA on the target CPU)",
                      self.gemm_kernel(model)["config"])


    def test_whole_model(self):
        """The tiny llama checkpoint (bf16 weights, hidden 64; batch 2 x 8
        tokens = 16 rows on one thread, so the bf16 plan takes the AMX
        path): logits of each emitter and precision against the reference
        emitter's. fp32: relative L2 <= 1e-5; bf16: <= 2^-7 (activations
        rounded to bf16 at every GEMM of 3 layers), and above 1e-5, so the
        AMX path did run."""
        ck = os.path.join(self.tmp, "llama")
        mk.make_checkpoint("llama", ck, dtype="bf16")
        tokens = np.random.default_rng(3).integers(0, 128, (2, 8), dtype=np.int32)
        logits = {}
        for name, flags in (("ref", ["--cpu-emitter=reference"]), ("f32", []),
                            ("bf16", ["--cpu-gemm-precision=bf16"])):
            plan = os.path.join(self.tmp, f"llama-{name}.kplan")
            run([tool("kiln-compile"), ck, "-o", plan, "--max-batch=2", "--max-seq=8", *flags])
            configs = [k["config"] for k in json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)["kernels"]
                       if k["name"].startswith("gemm")]
            want = {"ref": "cpu=reference", "f32": f"cpu={HOST_ISA}",
                    "bf16": f"cpu={bf16_tiles() or HOST_ISA}"}[name]
            self.assertTrue(configs and all(want in c for c in configs), configs)
            np.save(os.path.join(self.tmp, "tokens.npy"), tokens)
            out = os.path.join(self.tmp, f"logits-{name}.npy")
            run([tool("kiln-run"), plan, "--input", f"tokens={os.path.join(self.tmp, 'tokens.npy')}",
                 "--output", f"logits={out}", "--threads", "1"])
            logits[name] = np.load(out).astype(np.float64)
        ref = logits["ref"]
        for name, tol in (("f32", 1e-5), ("bf16", 2.0 ** -7)):
            rel = np.linalg.norm(logits[name] - ref) / np.linalg.norm(ref)
            self.assertLessEqual(rel, tol, name)
        if bf16_tiles():  # the bf16 tile path did run
            self.assertGreater(np.linalg.norm(logits["bf16"] - ref) / np.linalg.norm(ref), 1e-5)


if __name__ == "__main__":
    unittest.main()
