"""End-to-end tests of the bundled example model: compile, run, compare with
an independent float64 numpy reference; bad plans and inputs; IR dumps.

Run by ctest with KILN_BIN (the tools) and KILN_SOURCE_DIR set.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilntest import SRC, run, tool  # noqa: E402
import reference  # noqa: E402
MODEL = os.path.join(SRC, "models", "example", "tiny_mlp.mlir")
WEIGHTS = os.path.join(SRC, "models", "example", "tiny_mlp.safetensors")

# fp32 compute against float64: the reductions here are at most 128 long.
RTOL_L2 = 1e-5
ATOL_MAX = 1e-4


def have_ptxas():
    if shutil.which("ptxas"):
        return True
    return any(os.access(os.path.join(d, "ptxas"), os.X_OK)
               for d in [os.path.join(os.environ.get("CUDA_HOME", "/nonexistent"), "bin"),
                         "/usr/local/cuda/bin"])


class ExampleModel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-e2e-")
        cls.plan = os.path.join(cls.tmp, "tiny.kplan")
        run([tool("kiln-compile"), MODEL, "-o", cls.plan, "--target=cpu"])
        rng = np.random.default_rng(1)
        cls.tokens = rng.integers(0, 256, size=(2, 8)).astype(np.int32)
        cls.tokens_path = os.path.join(cls.tmp, "tokens.npy")
        np.save(cls.tokens_path, cls.tokens)
        cls.weights = reference.read_safetensors(WEIGHTS)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_plan(self, plan, extra=()):
        out = os.path.join(self.tmp, "logits.npy")
        if os.path.exists(out):
            os.remove(out)
        run([tool("kiln-run"), plan, "--input", f"tokens={self.tokens_path}",
             "--output", f"logits={out}", *extra])
        return np.load(out)

    def check_numerics(self, logits, tokens=None):
        tokens = self.tokens if tokens is None else tokens
        ref = reference.tiny_mlp(self.weights, tokens)
        self.assertEqual(logits.shape, (2, 8, 256))
        self.assertEqual(logits.dtype, np.float32)
        err = reference.rel_l2(logits, ref)
        maxabs = float(np.max(np.abs(logits - ref)))
        self.assertLessEqual(err, RTOL_L2, f"relative L2 error {err:.3e}")
        self.assertLessEqual(maxabs, ATOL_MAX, f"max abs error {maxabs:.3e}")
        # The reference must not be trivially small: the check means something.
        self.assertGreater(np.abs(ref).max(), 0.1)

    def test_cpu_matches_float64_reference(self):
        self.check_numerics(self.run_plan(self.plan))

    def test_cpu_threads_agree(self):
        one = self.run_plan(self.plan, ["--threads", "1"])
        two = self.run_plan(self.plan, ["--threads", "2"])
        np.testing.assert_array_equal(one, two)

    def test_out_of_range_tokens_are_refused(self):
        """Token ids index the embedding table: the plan records [0, 256) for
        them, and kiln-run refuses others before any kernel runs, naming the
        row, the element and the value."""
        info = json.loads(run([tool("kiln-inspect"), self.plan, "--json"]).stdout)
        self.assertEqual(info["inputs"][0]["value_range"], {"min": 0, "max": 255})
        for (row, col), value in [((0, 0), 1000), ((1, 3), -5), ((1, 7), 256)]:
            with self.subTest(value=value):
                tokens = self.tokens.copy()
                tokens[row, col] = value
                path = os.path.join(self.tmp, "bad_tokens.npy")
                np.save(path, tokens)
                p = run([tool("kiln-run"), self.plan, "--input", f"tokens={path}"], check=False)
                self.assertEqual(p.returncode, 3, p.stderr)  # bad input
                self.assertIn(f"input 'tokens' row {row}, element [{row}, {col}]: value {value} is "
                              "outside [0, 255] (it indexes a table of 256 rows)", p.stderr)
                self.assertNotIn("ran ", p.stdout)
        tokens = self.tokens.copy()
        tokens[1, 7] = 255  # the last row of the table is fine
        path = os.path.join(self.tmp, "edge_tokens.npy")
        np.save(path, tokens)
        out = os.path.join(self.tmp, "logits_edge.npy")
        run([tool("kiln-run"), self.plan, "--input", f"tokens={path}", "--output", f"logits={out}"])
        self.check_numerics(np.load(out), tokens)

    def test_embedded_weights_match_referenced(self):
        packed = os.path.join(self.tmp, "packed.kplan")
        run([tool("kiln-compile"), MODEL, "-o", packed, "--target=cpu", "--embed-weights"])
        self.assertGreater(os.path.getsize(packed), os.path.getsize(WEIGHTS))
        np.testing.assert_array_equal(self.run_plan(packed), self.run_plan(self.plan))

    def test_inspect_reports_plan(self):
        text = run([tool("kiln-inspect"), self.plan]).stdout
        for word in ["gemm", "rms_norm", "arena", "tokens", "logits",
                     "model.layers.0.mlp.gate_proj.weight", "kiln 0.1.0"]:
            self.assertIn(word, text)
        data = json.loads(run([tool("kiln-inspect"), self.plan, "--json"]).stdout)
        self.assertIsInstance(data, dict)
        blob = json.dumps(data)
        self.assertIn("model.layers.1.mlp.down_proj", blob)

    def test_kernels_are_shared_across_layers(self):
        data = json.loads(run([tool("kiln-inspect"), self.plan, "--json"]).stdout)
        kernels = data["kernels"]
        names = [k["name"] for k in kernels]
        self.assertEqual(len(names), len(set(names)))
        # gather, rms_norm (3 launches, 1 kernel), gate+up+SwiGLU (1),
        # down + residual add (1), lm_head (1): 5 distinct kernels, 9 launches.
        self.assertEqual(len(kernels), 5, names)
        self.assertEqual(len(data["launches"]), 9)

    def test_wrong_input_shape_and_dtype(self):
        bad = os.path.join(self.tmp, "t_shape.npy")
        np.save(bad, np.zeros((2, 9), np.int32))
        p = run([tool("kiln-run"), self.plan, "--input", f"tokens={bad}"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("tokens", p.stderr)
        self.assertIn("[2, 8]", p.stderr)
        np.save(bad, np.zeros((2, 8), np.float32))
        p = run([tool("kiln-run"), self.plan, "--input", f"tokens={bad}"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("int32", p.stderr)
        p = run([tool("kiln-run"), self.plan, "--input", f"nope={self.tokens_path}"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("nope", p.stderr)

    def corrupt_copy(self, name, mutate):
        with open(self.plan, "rb") as f:
            data = bytearray(f.read())
        data = mutate(data)
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def assert_rejected(self, path, *needles):
        for t in ("kiln-run", "kiln-inspect"):
            args = [tool(t), path] + (["--input", f"tokens={self.tokens_path}"] if t == "kiln-run" else [])
            p = run(args, check=False)
            self.assertNotEqual(p.returncode, 0, f"{t} accepted {path}")
            self.assertLess(p.returncode, 128, f"{t} crashed on {path}: {p.stderr}")
            self.assertTrue(any(n in p.stderr for n in needles), p.stderr)

    def test_truncated_plans_are_rejected(self):
        size = os.path.getsize(self.plan)
        for cut in [0, 7, 64, size // 2, size - 1]:
            path = self.corrupt_copy(f"trunc{cut}.kplan", lambda d, c=cut: d[:c])
            self.assert_rejected(path, "truncated", "too small", "verif", "invalid", "corrupt")

    def test_corrupt_plans_are_rejected(self):
        # Wrong file identifier.
        path = self.corrupt_copy("ident.kplan", lambda d: d[:4] + b"XXXX" + d[8:])
        self.assert_rejected(path, "identifier", "KPLN")
        # Garbage over the root table offset: the checksum trailer notices.
        path = self.corrupt_copy("root.kplan", lambda d: b"\xff\xff\xff\x7f" + d[4:])
        self.assert_rejected(path, "checksum mismatch: the file is damaged")

    def test_missing_and_changed_weights(self):
        d = tempfile.mkdtemp(dir=self.tmp)
        shutil.copy(MODEL, d)
        shutil.copy(WEIGHTS, d)
        plan = os.path.join(d, "p.kplan")
        run([tool("kiln-compile"), os.path.join(d, "tiny_mlp.mlir"), "-o", plan])
        wpath = os.path.join(d, "tiny_mlp.safetensors")
        with open(wpath, "r+b") as f:
            f.seek(-4, 2)
            f.write(b"\x00\x01\x02\x03")
        p = run([tool("kiln-run"), plan, "--input", f"tokens={self.tokens_path}"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("tiny_mlp.safetensors", p.stderr)
        os.remove(wpath)
        p = run([tool("kiln-run"), plan, "--input", f"tokens={self.tokens_path}"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("tiny_mlp.safetensors", p.stderr)

    def test_cuda_without_gpu_is_a_clear_error(self):
        p = run([tool("kiln-run"), self.plan, "--device", "cuda",
                 "--input", f"tokens={self.tokens_path}"], check=False)
        if p.returncode == 0:
            self.skipTest("a GPU is present")
        self.assertLess(p.returncode, 128)
        self.assertIn("cuda", p.stderr.lower())


class ExampleWeights(unittest.TestCase):
    def test_committed_weights_are_reproducible(self):
        tmp = tempfile.mkdtemp(prefix="kiln-w-")
        try:
            out = os.path.join(tmp, "w.safetensors")
            run([sys.executable, os.path.join(SRC, "models", "example", "make_weights.py"), out])
            with open(out, "rb") as a, open(WEIGHTS, "rb") as b:
                self.assertEqual(a.read(), b.read())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class CompilerErrors(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-e2e-err-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def compile_text(self, text, weights=True):
        path = os.path.join(self.tmp, "m.mlir")
        with open(path, "w") as f:
            f.write(text)
        if weights:
            shutil.copy(WEIGHTS, self.tmp)
        out = os.path.join(self.tmp, "m.kplan")
        return run([tool("kiln-compile"), path, "-o", out], check=False), out

    def test_no_partial_plan_on_failure(self):
        with open(MODEL) as f:
            text = f.read()
        bad = text.replace('"model.norm.weight"', '"model.missing.weight"')
        p, out = self.compile_text(bad)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("model.missing.weight", p.stderr)
        self.assertFalse(os.path.exists(out))
        self.assertEqual([f for f in os.listdir(self.tmp) if "kplan" in f], [])

    def test_weight_shape_mismatch_names_tensor(self):
        with open(MODEL) as f:
            text = f.read()
        bad = text.replace('"model.norm.weight" : tensor<64xf32>', '"model.norm.weight" : tensor<32xf32>')
        bad = bad.replace("%fnorm_w {epsilon = 1.0e-06 : f32} : (tensor<2x8x64xf32>, tensor<64xf32>)",
                          "%fnorm_w {epsilon = 1.0e-06 : f32} : (tensor<2x8x64xf32>, tensor<32xf32>)")
        p, _ = self.compile_text(bad)
        self.assertNotEqual(p.returncode, 0)
        # Either the verifier (weight width) or the checkpoint check names it.
        self.assertTrue("model.norm" in p.stderr or "weight" in p.stderr, p.stderr)

    def test_malformed_model(self):
        p, out = self.compile_text("module { func.func @forward( }", weights=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("m.mlir:1", p.stderr)
        self.assertFalse(os.path.exists(out))


class Dumps(unittest.TestCase):
    def test_dump_ir_dir_stages_parse_with_kiln_opt(self):
        tmp = tempfile.mkdtemp(prefix="kiln-dump-")
        try:
            plan = os.path.join(tmp, "p.kplan")
            dump = os.path.join(tmp, "ir")
            targets = "sm_90a,cpu"
            run([tool("kiln-compile"), MODEL, "-o", plan, f"--target={targets}",
                 "--dump-ir-dir", dump])
            files = sorted(os.listdir(dump))
            self.assertTrue(files[0].startswith("00-input"), files)
            for stage in ["graph", "kernel", "cpu-programs", "cpu-llvm",
                          "gpu-programs-sm_90a", "gpu-nvvm-sm_90a"]:
                self.assertTrue(any(stage in f for f in files), (stage, files))
            self.assertTrue(any(f.endswith(".ptx") for f in files))
            for f in files:
                if f.endswith(".mlir"):
                    run([tool("kiln-opt"), os.path.join(dump, f), "-o", os.devnull])
            kernel = open(os.path.join(dump, [f for f in files if "kernel" in f][0])).read()
            self.assertIn("kiln_kernel.gemm", kernel)
            self.assertIn("model.layers.1.mlp.down_proj", kernel)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@unittest.skipUnless(have_ptxas(), "ptxas not found: sm_90a kernels are not assembled on this machine")
class Sm90a(unittest.TestCase):
    def check_plan(self, source, extra=()):
        """Compiles `source` for sm_90a and checks every kernel's ptxas report."""
        tmp = tempfile.mkdtemp(prefix="kiln-sm90a-")
        try:
            plan = os.path.join(tmp, "p.kplan")
            run([tool("kiln-compile"), source, "-o", plan, "--target=sm_90a,cpu", *extra])
            data = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
            cuda = [t for t in data["targets"] if t["target"] == "cuda"]
            self.assertEqual(len(cuda), 1)
            self.assertEqual(cuda[0]["arch"], "sm_90a")
            self.assertGreater(cuda[0]["binary_bytes"], 0, "no cubin in the plan")
            self.assertGreater(cuda[0]["ptx_bytes"], 0, "no PTX in the plan")
            for k in data["kernels"]:
                eps = [e for e in k["entry_points"] if e["target"] == "cuda"]
                self.assertEqual(len(eps), 1, k["name"])
                res = eps[0].get("resources")
                self.assertIsNotNone(res, k["name"])
                self.assertGreater(res["registers"], 0, k["name"])
                self.assertLessEqual(res["registers"], 255, k["name"])
                self.assertEqual(res["spill_store_bytes"], 0, k["name"])
                self.assertEqual(res["spill_load_bytes"], 0, k["name"])
                self.assertGreater(eps[0]["code_bytes"], 0, k["name"])
                for t in eps[0].get("tiles", []):
                    tr = t.get("resources")
                    self.assertIsNotNone(tr, t["name"])
                    self.assertEqual(tr["spill_store_bytes"], 0, t["name"])
                    self.assertEqual(tr["spill_load_bytes"], 0, t["name"])
                    # Every thread of the block gets its registers.
                    self.assertLessEqual(tr["registers"] * t["threads"], 65536, t["name"])
            return [k["name"] for k in data["kernels"]]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_tile_variants_in_plans_assemble_to_tensor_core_sass(self):
        """Every tile variant a plan carries, read back from the plan's own
        PTX assembled for sm_90a: its SASS has the warpgroup MMAs (HGMMA for
        bf16, QGMMA for e4m3) and the TMA loads (UTMALDG) it is built on, and
        the row kernels their shuffles (the MoE combine its 16-byte loads and
        stores)."""
        import sysconfig
        import make_tiny_checkpoint as mk
        ptxas = shutil.which("ptxas") or "/usr/local/cuda/bin/ptxas"
        cuobjdump = shutil.which("cuobjdump") or os.path.join(
            sysconfig.get_paths()["purelib"], "nvidia", "cu13", "bin", "cuobjdump")
        if not (os.path.exists(ptxas) and os.path.exists(cuobjdump)):
            self.skipTest("ptxas or cuobjdump not found (scripts/setup.sh installs cuobjdump)")
        tmp = tempfile.mkdtemp(prefix="kiln-sm90a-sass-")
        try:
            seen = {}
            for name, kwargs in [("llama", dict(dtype="bf16", overrides={"num_key_value_heads": 4})),
                                 ("ds-fp8", dict(variant="fp8dims", fp8=True, overrides={
                                     "hidden_size": 256, "intermediate_size": 256,
                                     "moe_intermediate_size": 128})),
                                 ("ds-moe", dict(dtype="bf16", overrides={"moe_intermediate_size": 64}))]:
                ckpt = os.path.join(tmp, name)
                mk.make_checkpoint("llama" if name == "llama" else "deepseek_v3", ckpt, **kwargs)
                plan, ir = os.path.join(tmp, name + ".kplan"), os.path.join(tmp, name + "-ir")
                # (the FP8 experts in 64-row layout blocks: moe_up_fp8's tile)
                flags = ["--moe-block-m=64"] if name == "ds-fp8" else []
                run([tool("kiln-compile"), ckpt, "-o", plan, "--target=sm_90a,cpu",
                     "--max-batch=2", "--max-seq=64", "--dump-ir-dir", ir, *flags])
                ptx = [os.path.join(ir, f) for f in os.listdir(ir) if f.endswith("sm_90a.ptx")]
                self.assertEqual(len(ptx), 1, os.listdir(ir))
                cubin = os.path.join(tmp, name + ".cubin")
                run([ptxas, "-arch=sm_90a", "-O3", ptx[0], "-o", cubin])
                env = dict(os.environ, PATH=os.path.dirname(cuobjdump) + os.pathsep + os.environ["PATH"])
                p = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, env=env)
                self.assertEqual(p.returncode, 0, p.stderr)
                sass = {}
                for part in p.stdout.split("Function : ")[1:]:
                    sass[part.split()[0]] = part
                data = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
                for k in data["kernels"]:
                    for e in k["entry_points"]:
                        for t in e.get("tiles", []):
                            code = sass.get(t["name"])
                            self.assertIsNotNone(code, t["name"])
                            if k["name"].startswith(("rms_norm", "quantize")):
                                self.assertIn("SHFL.BFLY", code, t["name"])
                                kind = "row"
                            elif k["name"].startswith("moe_combine"):
                                self.assertIn("LDG.E.128", code, t["name"])
                                self.assertIn("STG.E.128", code, t["name"])
                                kind = "combine"
                            else:
                                mma = "QGMMA" if "e4m3" in t["config"] else "HGMMA"
                                self.assertIn(mma, code, t["name"])
                                self.assertIn("UTMALDG", code, t["name"])
                                kind = mma
                            seen[kind] = seen.get(kind, 0) + 1
            self.assertEqual(set(seen), {"HGMMA", "QGMMA", "row", "combine"}, seen)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_fp8_gemms_get_e4m3_tile_variants(self):
        """An FP8 checkpoint's block-scaled GEMMs (gemm_fp8, act and weight
        blocks 128, N a multiple of 64, K of 128, at most a residual) carry
        the e4m3 tile kernels: both operands by TMA, the activations' map
        over the launch's rows and offset by the run's first row, the 1 x 128
        and 128 x 128 scales as bindings."""
        import re
        import make_tiny_checkpoint as mk
        tmp = tempfile.mkdtemp(prefix="kiln-sm90a-fp8-tiles-")
        try:
            ckpt = os.path.join(tmp, "ds")
            # q_a 128 and kv_a 112 + 16 rows of a 256-wide hidden state: the
            # merged gemm_dual_fp8 has whole 128-row blocks of W1.
            mk.make_checkpoint("deepseek_v3", ckpt, variant="fp8dims", fp8=True, overrides={
                "q_lora_rank": 128, "kv_lora_rank": 112, "hidden_size": 256})
            plan = os.path.join(tmp, "p.kplan")
            run([tool("kiln-compile"), ckpt, "-o", plan, "--target=sm_90a,cpu",
                 "--max-batch=2", "--max-seq=64"])
            data = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
            tiled = duals = 0
            for k in data["kernels"]:
                m = re.match(r"gemm_fp8_n(\d+)_k(\d+)_tn\d+_a128_bn128_f8E4M3FN_f8E4M3FN_f32_f32(_f32)?_f32$",
                             k["name"])
                du = re.match(r"gemm_dual_fp8_n(\d+)_n(\d+)_k(\d+)_tn\d+_a128_bn128_", k["name"])
                if not m and not du:
                    continue
                cuda = [e for e in k["entry_points"] if e["target"] == "cuda"][0]
                tiles = cuda.get("tiles", [])
                if du:
                    n1, n2, kd = int(du.group(1)), int(du.group(2)), int(du.group(3))
                    self.assertEqual(bool(tiles), n1 % 128 == 0 and n2 % 64 == 0 and kd % 128 == 0,
                                     k["name"])
                    duals += bool(tiles)
                    for t in tiles:  # W1, W2 and the activations; both weights' scales
                        self.assertEqual(sum(p["kind"] == "tensor_map" for p in t["params"]), 3, t["name"])
                        scales = [p for p in t["params"] if p["kind"] == "binding" and p["binding"] in (3, 4, 5)]
                        self.assertEqual([(p["binding"], p.get("row_bytes", 0)) for p in scales],
                                         [(3, 4 * (kd // 128)), (4, 0), (5, 0)], t["name"])
                    continue
                n, kd = int(m.group(1)), int(m.group(2))
                self.assertEqual(bool(tiles), n % 64 == 0 and kd % 128 == 0, k["name"])
                tiled += bool(tiles)
                for t in tiles:
                    self.assertIn("e4m3", t["config"])
                    maps = [p for p in t["params"] if p["kind"] == "tensor_map"]
                    self.assertEqual(sorted(p["binding"] for p in maps), [0, 1], t["name"])
                    for p in maps:
                        self.assertEqual(p["dtype"], "f8e4m3")
                        self.assertEqual(p["box"][0], 128)  # one 128-byte swizzle span
                        self.assertEqual(p.get("rows_dim", False), p["binding"] == 0, t["name"])
                    self.assertEqual(t["params"][-1]["kind"], "first_row", t["name"])
                    # Activation scales advance with the rows, weight scales do not.
                    scales = {p["binding"]: p.get("row_bytes", 0) for p in t["params"]
                              if p["kind"] == "binding" and p["binding"] in (2, 3)}
                    self.assertEqual(scales, {2: 4 * (kd // 128), 3: 0}, t["name"])
            self.assertGreaterEqual(tiled, 2)
            self.assertGreaterEqual(duals, 1)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_bf16_gemms_get_tma_wgmma_tile_variants(self):
        """A bf16 checkpoint's dense GEMMs (kernel.gemm with N and K multiples
        of 64, at most one residual; kernel.gemm_swiglu with 2 I a multiple
        of 16 and K of 64) carry the Hopper tile kernels, one per row range
        up to the kernel's most rows (decode's swapped forms first, where the
        epilogue allows them); the others keep the program form only; the
        plan still verifies and runs on the CPU."""
        import re
        import make_tiny_checkpoint as mk
        tmp = tempfile.mkdtemp(prefix="kiln-sm90a-tiles-")
        try:
            ckpt = os.path.join(tmp, "llama")
            # 4 KV heads: the k and v projections are 64 rows each (gemm_dual).
            mk.make_checkpoint("llama", ckpt, dtype="bf16", overrides={"num_key_value_heads": 4})
            plan = os.path.join(tmp, "p.kplan")
            run([tool("kiln-compile"), ckpt, "-o", plan, "--target=sm_90a,cpu",
                 "--max-batch=2", "--max-seq=64"])
            data = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
            tiled = untiled = swiglus = duals = norms = 0
            for k in data["kernels"]:
                m = re.match(r"gemm_n(\d+)_k(\d+)_tn\d+_f32_(\w+?)_f32(_f32)?$", k["name"])
                sw = re.match(r"gemm_swiglu_n(\d+)_k(\d+)_tn\d+_f32_(bf16|f32)_\3_f32$", k["name"])
                du = re.match(r"gemm_dual_n(\d+)_n(\d+)_k(\d+)_tn\d+_f32_(bf16|f32)_\4_f32_f32$", k["name"])
                cuda = [e for e in k["entry_points"] if e["target"] == "cuda"][0]
                tiles = cuda.get("tiles", [])
                if k["name"].startswith("rms_norm_") and tiles:
                    # The cooperative row kernel: one variant, every row.
                    self.assertEqual(len(tiles), 1, k["name"])
                    self.assertEqual(tiles[0]["config"], "block of 256 threads per row")
                    self.assertEqual(tiles[0]["max_rows"], k["max_programs"])
                    norms += 1
                    continue
                if not m and not sw and not du:
                    self.assertEqual(tiles, [], k["name"])
                    continue
                if du:
                    n1, n2, kd = int(du.group(1)), int(du.group(2)), int(du.group(3))
                    want = du.group(4) == "bf16" and n1 % 64 == 0 and n2 % 64 == 0 and kd % 64 == 0
                    duals += want
                elif sw:
                    n, kd, wtype = int(sw.group(1)), int(sw.group(2)), sw.group(3)
                    want = wtype == "bf16" and (2 * n) % 16 == 0 and kd % 64 == 0
                    swiglus += want
                else:
                    n, kd, wtype = int(m.group(1)), int(m.group(2)), m.group(3)
                    want = wtype == "bf16" and n % 64 == 0 and kd % 64 == 0
                self.assertEqual(bool(tiles), want, k["name"])
                if not want:
                    untiled += 1
                    continue
                tiled += 1
                rows = k["max_programs"] // cuda["programs_per_row"]
                bounds = [t["max_rows"] for t in tiles]
                self.assertEqual(bounds, sorted(set(bounds)), k["name"])
                self.assertEqual(bounds[-1], rows, k["name"])
                residual = bool(m) and m.group(4) is not None
                for t in tiles:
                    self.assertIn("f32-act", t["config"])
                    self.assertEqual("residual" in t["config"], residual, t["name"])
                    self.assertEqual("swiglu" in t["config"], bool(sw), t["name"])
                    self.assertEqual("dual" in t["config"].split(), bool(du), t["name"])
                    # SwiGLU and two outputs: a map for each weight.
                    self.assertEqual(sum(p["kind"] == "tensor_map" for p in t["params"]),
                                     2 if sw or du else 1, t["name"])
                    if du:  # both outputs, each advanced by its own rows
                        outs = [p for p in t["params"] if p["kind"] == "binding" and p["binding"] in (3, 4)]
                        self.assertEqual([p["row_bytes"] for p in outs], [4 * n1, 4 * n2], t["name"])
                    swapped = "swapped" in t["config"]
                    # Decode's swapped form up to 32 rows (none with a
                    # residual; SwiGLU's in 64-row blocks of gate and up
                    # rows, 2 N a multiple of 64).
                    self.assertEqual(swapped, t["max_rows"] <= 32 and not residual
                                     and (not sw or (2 * n) % 64 == 0), t["name"])
                    if swapped and sw:  # 8-row boxes of gate and up rows
                        self.assertEqual([p["box"] for p in t["params"] if p["kind"] == "tensor_map"],
                                         [[64, 8]] * 2, t["name"])
                    self.assertIn(t["threads"], (256, 384))
                    self.assertLessEqual(t["dynamic_shared_bytes"], 227 * 1024)
                if rows > 64:
                    self.assertEqual(tiles[-1]["threads"], 384, k["name"])  # two math warpgroups
            self.assertGreaterEqual(tiled, 5)   # q/o, k+v projections, LM head, gate+up
            self.assertGreaterEqual(swiglus, 1)
            self.assertGreaterEqual(duals, 1)
            self.assertGreaterEqual(norms, 1)
            self.assertGreaterEqual(untiled, 1)  # the down projection (K = 96)
            tokens = os.path.join(tmp, "tokens.npy")
            np.save(tokens, np.arange(16, dtype=np.int32).reshape(2, 8) % 128)
            run([tool("kiln-run"), plan, "--device", "cpu", "--input", f"tokens={tokens}"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_every_kernel_assembles_with_ptxas(self):
        self.check_plan(MODEL)

    def test_every_model_kernel_assembles_with_ptxas(self):
        """Every kernel kind the importer's families produce, fused and
        unfused, plain and FP8: MLA, routing with the permutation, grouped
        experts, the combine, the merged and FP8 GEMMs."""
        import make_tiny_checkpoint as mk
        tmp = tempfile.mkdtemp(prefix="kiln-sm90a-models-")
        try:
            seen = set()
            # Config features too: biases (bias_add), DeepSeek-V3's
            # half-split rope (rope_interleave false) in MLA and the cache write.
            features = {"attention_bias": True, "mlp_bias": True}
            for family, fp8, extra, overrides in [
                    ("deepseek_v3", False, (), None), ("deepseek_v3", False, ("--no-fuse",), None),
                    ("deepseek_v3", True, (), None), ("deepseek_v2", False, (), None),
                    ("llama", False, (), None), ("llama", False, (), features),
                    ("deepseek_v3", False, (), {"rope_interleave": False, "attention_bias": True})]:
                with self.subTest(family=family, fp8=fp8, extra=extra, overrides=overrides):
                    ckpt = os.path.join(tmp, f"{family}{'-fp8' if fp8 else ''}"
                                             f"{'-' + '-'.join(overrides) if overrides else ''}")
                    if not os.path.isdir(ckpt):
                        mk.make_checkpoint(family, ckpt, variant="fp8dims" if fp8 else None, fp8=fp8,
                                           overrides=overrides)
                    seen.update(self.check_plan(ckpt, extra))
            for kind in ["moe_route", "moe_up", "moe_up_fp8", "moe_down", "moe_down_fp8",
                         "moe_combine", "gemm_dual", "gemm_dual_fp8", "mla_s", "mla_naive", "latent_cache_write", "gemm_swiglu", "gemm_swiglu_fp8",
                         "rms_norm_quant", "attn", "ew_bias_add"]:
                self.assertTrue(any(n.startswith(kind) for n in seen), (kind, sorted(seen)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
