"""The CUDA executor's host side, run on Kiln's stand-in for libcuda.so.1
(tests/fake_cuda/fake_cuda.cc: device memory is host memory, no kernel runs,
every call is checked as the driver documents it and logged). What a GPU
session would do before its kernels compute anything is checked here: the
cubin's entries found, every tile kernel's dynamic shared memory allowed,
each launch's tensor maps encoded once over the right weights, and every
tile launch's variant, persistent grid, block, shared memory and parameters
(rows, row-advanced activations and outputs) as the plan says. The GPU's
numerics are tests/device/run.sh's."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilntest import BIN, SRC, run, tool  # noqa: E402

sys.path.insert(0, os.path.join(SRC, "models", "testing"))
import make_tiny_checkpoint as mk  # noqa: E402

FAKE = os.path.join(os.path.dirname(BIN), "fake-cuda")
MAX_BATCH, MAX_SEQ, GIVEN = 2, 64, 8


@unittest.skipUnless(os.path.exists(os.path.join(FAKE, "libcuda.so.1")),
                     "the fake driver is built with KILN_ENABLE_CUDA")
class TileLaunchesOnTheFakeDriver(unittest.TestCase):
    """A bf16 Llama: its dense GEMMs (one and two outputs, SwiGLU, the
    residual) in the f32-activation form."""
    # 4 KV heads: the k and v projections (gemm_dual) are 64 rows each.
    FAMILY, CHECKPOINT = "llama", dict(dtype="bf16", overrides={"num_key_value_heads": 4})
    SWAPPED_DECODE = True  # decode runs a swapped tile kernel
    FLAGS = ()  # more kiln-compile flags

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cuda-host-")
        ckpt = os.path.join(cls.tmp, cls.FAMILY)
        mk.make_checkpoint(cls.FAMILY, ckpt, **cls.CHECKPOINT)
        cls.plan = os.path.join(cls.tmp, "p.kplan")
        run([tool("kiln-compile"), ckpt, "-o", cls.plan, "--target=sm_90a,cpu",
             f"--max-batch={MAX_BATCH}", f"--max-seq={MAX_SEQ}", *cls.FLAGS])
        cls.info = json.loads(run([tool("kiln-inspect"), cls.plan, "--json"]).stdout)
        # Each CUDA function's parameter sizes, for the fake's log.
        cls.params = os.path.join(cls.tmp, "params.txt")
        cls.entries = {}
        with open(cls.params, "w") as f:
            for k in cls.info["kernels"]:
                e = [e for e in k["entry_points"] if e["target"] == "cuda"][0]
                cls.entries[k["name"]] = (k, e)
                n = k["num_buffers"] + k["num_scalars"] + 2
                f.write(e["name"] + " 8" * n + "\n")
                for t in e.get("tiles", []):
                    sizes = " ".join("128" if p["kind"] == "tensor_map" else "8" for p in t["params"])
                    f.write(f"{t['name']} {sizes}\n")
        cls.tokens = os.path.join(cls.tmp, "tokens.npy")
        np.save(cls.tokens, (np.arange(MAX_BATCH * GIVEN, dtype=np.int32).reshape(MAX_BATCH, GIVEN) * 5) % 128)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_fake(self, args, sms):
        log = os.path.join(self.tmp, f"log-{sms}.jsonl")
        if os.path.exists(log):
            os.remove(log)
        env = dict(os.environ, LD_LIBRARY_PATH=FAKE, FAKE_CUDA_LOG=log,
                   FAKE_CUDA_PARAMS=self.params, FAKE_CUDA_SMS=str(sms))
        p = subprocess.run([tool("kiln-run"), self.plan, "--device", "cuda", *args],
                           capture_output=True, text=True, env=env)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        with open(log) as f:
            return [json.loads(line) for line in f]

    def launches_of(self, function):
        if function == "forward":
            return self.info["launches"]
        return [f for f in self.info["functions"] if f["name"] == function][0]["launches"]

    def expected_tile_launches(self, function, runs, sms):
        """(name, grid, block, shared, rows, first row) of every tile launch
        of `function` whose window gives the row runs `runs`."""
        out = []
        for la in self.launches_of(function):
            k, e = self.entries[la["kernel"]]
            unit = e.get("rows_per_unit", 1)
            for u0, u1 in runs(la):
                r0, r1 = u0 * unit, u1 * unit
                rows = r1 - r0
                t = next(t for t in e.get("tiles", []) if rows <= t["max_rows"]) if e.get("tiles") else None
                if t is None:
                    continue
                tiles = -(-rows // t["rows_per_tile"]) * t["column_tiles"]
                out.append((t["name"], min(tiles, sms), t["threads"], t["dynamic_shared_bytes"], rows, r0, t, la))
        return out

    def check_launches(self, log, expected):
        got = [c for c in log if c["call"] == "launch" and "_tile" in c["name"]]
        self.assertEqual([c["name"] for c in got], [x[0] for x in expected])
        maps = {}
        for c in log:
            if c["call"] == "tensor_map":
                maps.setdefault(c["address"], []).append(c)
        for c, (name, grid, block, shared, rows, r0, t, la) in zip(got, expected):
            self.assertEqual((c["grid"], c["block"], c["shared"]), (grid, block, shared), name)
            self.assertEqual(len(c["params"]), len(t["params"]), name)
            for value, p in zip(c["params"], t["params"]):
                if p["kind"] == "rows":
                    self.assertEqual(value, rows, name)
                elif p["kind"] == "first_row":
                    self.assertEqual(value, r0, name)
                elif p["kind"] == "tensor_map":
                    dims = list(p["dims"])
                    if p.get("rows_dim"):  # an activation map: the launch's rows
                        ep = self.entries[la["kernel"]][1]
                        dims[-1] = la["programs"] // ep["programs_per_row"] * ep.get("rows_per_unit", 1)
                    self.assertEqual((value["dims"], value["box"]), (dims, p["box"]), name)
                    # Encoded over the binding's address, with the plan's shape.
                    enc = maps.get(value["map_address"], [])
                    dtype = {"bf16": 9, "f8e4m3": 0}[p["dtype"]]
                    self.assertTrue(any(m["dims"] == dims and m["box"] == p["box"] and m["dtype"] == dtype
                                        and m["swizzle"] == 3 for m in enc), (name, enc))
        # Row-indexed bindings of a later run start row_bytes x its first row
        # after the same launch's first run.
        firsts = {}
        for c, (name, grid, block, shared, rows, r0, t, la) in zip(got, expected):
            key = id(la)  # a launch of forward or decode
            for value, p in zip(c["params"], t["params"]):
                if p["kind"] == "binding" and p.get("row_bytes"):
                    base = firsts.setdefault((key, p["binding"]), (value, r0))
                    self.assertEqual(value - base[0], (r0 - base[1]) * p["row_bytes"], name)
        return got

    def test_forward_and_decode_run_their_tile_variants(self):
        for sms in (132, 1):
            with self.subTest(sms=sms):
                log = self.run_fake(["--generate", "2", "--input", f"tokens={self.tokens}",
                                     "--ignore-eos"], sms)
                # Every tile kernel found and given its dynamic shared memory, once.
                allowed = {c["name"]: c["value"] for c in log if c["call"] == "set_attribute"}
                for k, e in self.entries.values():
                    for t in e.get("tiles", []):
                        # (none asked for a kernel without dynamic shared memory)
                        self.assertEqual(allowed.get(t["name"]), t["dynamic_shared_bytes"] or None,
                                         t["name"])
                # The prompt gives 8 of 64 positions per batch row: one run
                # per row (rows [64 b, 64 b + 8)); decode steps one run of
                # the batch's 2 rows.
                def prompt_runs(la):
                    per = self.entries[la["kernel"]][1].get("programs_per_row", 0)
                    if not per:
                        return []
                    if "tokens" not in la:
                        return [(0, la["programs"] // per)]
                    return [(b * MAX_SEQ, b * MAX_SEQ + GIVEN) for b in range(MAX_BATCH)]
                def decode_runs(la):
                    per = self.entries[la["kernel"]][1].get("programs_per_row", 0)
                    return [(0, la["programs"] // per)] if per else []
                expected = self.expected_tile_launches("forward", prompt_runs, sms)
                step = self.expected_tile_launches("decode", decode_runs, sms)
                self.assertTrue(step, "decode runs no tile kernel")
                # Generating 2 tokens: the prompt, then one decode step.
                got = self.check_launches(log, expected + step)
                if self.SWAPPED_DECODE:
                    self.assertTrue(any(" swapped " in x[6]["config"] for x in step))
                self.assertGreater(len(got), 0)
                # A kernel with tile variants never runs its program form.
                tiled = {e["name"] for _, e in self.entries.values() if e.get("tiles")}
                self.assertFalse([c for c in log if c["call"] == "launch" and c["name"] in tiled])
                # Tensor maps: each variant's per launch, encoded once.
                want = sum(sum(p["kind"] == "tensor_map" for p in t["params"])
                           for fn in ("forward", "decode") for la in self.launches_of(fn)
                           for t in self.entries[la["kernel"]][1].get("tiles", []))
                self.assertEqual(sum(c["call"] == "tensor_map" for c in log), want)

    def test_driver_refusals_name_the_call_and_variant(self):
        """A device that allows less dynamic shared memory than a tile kernel
        needs (the fake told so): the session fails at set-up, naming the
        call and the tile kernel, and exits cleanly."""
        env = dict(os.environ, LD_LIBRARY_PATH=FAKE, FAKE_CUDA_MAX_DYNAMIC_SHARED="100000")
        p = subprocess.run([tool("kiln-run"), self.plan, "--device", "cuda", "--input",
                            f"tokens={self.tokens}"], capture_output=True, text=True, env=env)
        self.assertNotIn(p.returncode, (0, -11, -6), p.stderr)
        self.assertRegex(p.stderr, r"cuFuncSetAttribute \(dynamic shared memory of 'gemm_\w+_tile\d+'\): "
                                   r"CUDA_ERROR_INVALID_VALUE")


class MoETileLaunchesOnTheFakeDriver(TileLaunchesOnTheFakeDriver):
    """A bf16 DeepSeek-V3 (hidden 64, experts' intermediate 128): its
    moe_up and moe_down run grouped (prefill's 64-row layout blocks) and
    grouped swapped (decode's 8-row blocks), the experts' weights through 3D
    maps over their tables (moe_up: the gate's and the up projection's, its
    tokens gathered through the layout); the dense SwiGLU's decode swapped."""
    FAMILY, CHECKPOINT = "deepseek_v3", dict(dtype="bf16", overrides={"moe_intermediate_size": 128})
    SWAPPED_DECODE = True

    def test_experts_maps_span_their_tables(self):
        def tiled(prefix):
            return [e for k, e in self.entries.values() if k["name"].startswith(prefix) and e.get("tiles")]
        downs, ups = tiled("moe_down"), tiled("moe_up")
        self.assertEqual((len(downs), len(ups)), (2, 2))
        for e in ups:
            (t,) = e["tiles"]
            self.assertIn("gathered swiglu", t["config"])
            kinds = [p["kind"] for p in t["params"]]
            # (gate map, up map, x, block_expert, sorted_token, out, rows)
            self.assertEqual(kinds, ["tensor_map"] * 2 + ["binding"] * 4 + ["rows"])
            self.assertEqual([p["binding"] for p in t["params"][:6]], [3, 4, 0, 2, 1, 5])
        self.assertTrue(any(" swapped " in t["config"] for e in ups for t in e["tiles"]))
        self.assertTrue(any(" swapped swiglu" in t["config"] for e in tiled("gemm_swiglu") for t in e["tiles"]))
        log = self.run_fake(["--input", f"tokens={self.tokens}"], 132)
        maps = [c for c in log if c["call"] == "tensor_map" and len(c["dims"]) == 3]
        self.assertTrue(maps)
        # down [I, H, E], gate and up [H, I, E]: the 8 routed experts and the
        # shared one, as the plan says.
        want = {tuple(p["dims"]) for e in downs + ups for t in e["tiles"] for p in t["params"] if p.get("table")}
        self.assertEqual(want, {(128, 64, 9), (64, 128, 9)})
        for m in maps:
            self.assertIn(tuple(m["dims"]), want)
        self.assertEqual({tuple(m["dims"]) for m in maps}, want)


class FP8TileLaunchesOnTheFakeDriver(TileLaunchesOnTheFakeDriver):
    """An FP8 DeepSeek-V3: its block-scaled GEMMs in the e4m3 form, both
    operands by TMA, the activations' map over the launch's rows and offset
    by each run's first row."""
    # q_a 128 and kv_a 112 + 16 rows over a 256-wide hidden state: the
    # merged gemm_dual_fp8 has tile variants too, the 256-wide dense MLP
    # gemm_swiglu_fp8's quantizing form, the 128-wide experts' moe_down_fp8
    # the grouped e4m3 form.
    FAMILY, CHECKPOINT = "deepseek_v3", dict(variant="fp8dims", fp8=True, overrides={
        "q_lora_rank": 128, "kv_lora_rank": 112, "hidden_size": 256, "intermediate_size": 256,
        "moe_intermediate_size": 128})
    # Its decode GEMMs with tiles all add a residual (no swapped form).
    SWAPPED_DECODE = False

    def test_fp8_gemms_have_tile_variants(self):
        kinds = {k["name"].split("_n")[0] for k, e in self.entries.values() if e.get("tiles")}
        self.assertIn("gemm_fp8", kinds)
        self.assertIn("gemm_dual_fp8", kinds)
        self.assertIn("gemm_swiglu_fp8", kinds)
        self.assertTrue(any(n.startswith("moe_down_fp8") for n in kinds), kinds)
        # The quantizing SwiGLU: (activations', gate's, up's maps, three
        # scales, e4m3 out, its scales, rows, first row).
        for k, e in self.entries.values():
            if k["name"].startswith("gemm_swiglu_fp8"):
                (t,) = e["tiles"]
                self.assertIn("quantized", t["config"])
                self.assertEqual([p["kind"] for p in t["params"]],
                                 ["tensor_map"] * 3 + ["binding"] * 5 + ["rows", "first_row"])
                self.assertEqual([p.get("row_bytes", 0) for p in t["params"][6:8]], [256, 8])


class FP8MoEPrefillTileLaunchesOnTheFakeDriver(FP8TileLaunchesOnTheFakeDriver):
    """The same FP8 DeepSeek-V3 with the experts' layout in 64-row blocks:
    moe_up_fp8 runs the grouped quantized SwiGLU over e4m3 tokens the
    producer gathers, moe_down_fp8 the grouped e4m3 form unswapped."""
    FLAGS = ("--moe-block-m=64",)
    SWAPPED_DECODE = False

    def test_fp8_experts_have_tile_variants(self):
        ups = [(k, e) for k, e in self.entries.values() if k["name"].startswith("moe_up_fp8")]
        self.assertTrue(ups)
        for k, e in ups:
            (t,) = e["tiles"]
            self.assertIn("gathered swiglu quantized", t["config"])
            # (gate and up maps over their tables, x, block_expert,
            # sorted_token, x's scales, the weight scales' tables, out, its
            # scales, rows)
            self.assertEqual([p["kind"] for p in t["params"]], ["tensor_map"] * 2 + ["binding"] * 8 + ["rows"])
            self.assertEqual([p["binding"] for p in t["params"][:10]], [4, 5, 0, 3, 2, 1, 6, 7, 8, 9])
            self.assertTrue(all(p.get("table") for p in t["params"][:2]))
        downs = [e for k, e in self.entries.values() if k["name"].startswith("moe_down_fp8")]
        self.assertTrue(downs and all(" grouped e4m3" in e["tiles"][0]["config"] for e in downs))


if __name__ == "__main__":
    unittest.main()
