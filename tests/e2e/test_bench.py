"""End-to-end test of kiln-bench on the tiny DeepSeek-V3 example plan and
the bundled kiln-dialect MLP: the JSON structure, every figure positive,
the derived figures consistent with the measured ones (tokens/s from the same
median as ms), the per-kernel profile consistent with the plan (its launches
and kernels, as kiln-inspect lists them) and with itself (times add up, shares
to 100 %), and errors for requests the plan cannot take. No timing is
compared with anything.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os
import shutil
import tempfile
import unittest

from kilntest import SRC, run, tool  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

BATCH, SEQ = 2, 32


class Bench(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-bench-")
        ckpt = os.path.join(cls.tmp, "ds")
        mk.make_checkpoint("deepseek_v3", ckpt, dtype="bf16", seed=2)
        cls.plan = os.path.join(cls.tmp, "ds.kplan")
        run([tool("kiln-compile"), ckpt, "-o", cls.plan, f"--max-batch={BATCH}", f"--max-seq={SEQ}"])
        cls.info = json.loads(run([tool("kiln-inspect"), cls.plan, "--json"]).stdout)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def bench(self, *flags, plan=None, check=True):
        p = run([tool("kiln-bench"), plan or self.plan, "--threads", "1", *flags], check=check)
        return p if not check else json.loads(p.stdout) if "-" in flags else p

    def check_profile(self, prof, launches, prompt_length):
        self.assertEqual(prof["prompt_length"], prompt_length)
        kernels = {k["name"] for k in self.info["kernels"]}
        per_kernel = {}
        for la in launches:
            per_kernel[la["kernel"]] = per_kernel.get(la["kernel"], 0) + 1
        self.assertEqual(prof["launches"], len(launches))
        self.assertEqual({k["kernel"]: k["launches"] for k in prof["kernels"]}, per_kernel)
        self.assertTrue({k["kernel"] for k in prof["kernels"]} <= kernels)
        self.assertGreater(prof["launch_ms"], 0)
        for k in prof["kernels"]:
            self.assertGreaterEqual(k["ms"], 0)
        self.assertAlmostEqual(sum(k["ms"] for k in prof["kernels"]), prof["launch_ms"],
                               delta=1e-9 * prof["launch_ms"] + 1e-12)
        self.assertAlmostEqual(sum(k["percent"] for k in prof["kernels"]), 100.0, delta=1e-6)
        ms = [k["ms"] for k in prof["kernels"]]
        self.assertEqual(ms, sorted(ms, reverse=True))

    def test_json_structure_and_consistency(self):
        r = self.bench("--prompt-lengths", "4,8,16", "--decode-tokens", "5", "--rounds", "3",
                       "--warmup", "1", "--profile", "--json", "-")
        self.assertEqual((r["device"], r["threads"], r["rounds"], r["warmup"], r["batch"]), ("cpu", 1, 3, 1, BATCH))
        st = r["startup"]
        self.assertEqual(st["weight_check"], "identity")
        self.assertGreater(st["plan_open_ms"], 0)
        self.assertGreater(st["session_create_ms"], 0)
        self.assertEqual([p["prompt_length"] for p in r["prefill"]], [4, 8, 16])
        for p in r["prefill"]:
            self.assertEqual(p["tokens"], BATCH * p["prompt_length"])
            self.assertGreater(p["min_ms"], 0)
            self.assertLessEqual(p["min_ms"], p["median_ms"])
            self.assertLessEqual(p["median_ms"], p["max_ms"])
            self.assertAlmostEqual(p["tokens_per_s"], p["tokens"] * 1000 / p["median_ms"],
                                   delta=1e-9 * p["tokens_per_s"])
        d = r["decode"]
        self.assertEqual((d["prompt_length"], d["steps_per_round"], d["batch"]), (4, 5, BATCH))
        self.assertGreater(d["median_ms_per_step"], 0)
        self.assertAlmostEqual(d["tokens_per_s"], BATCH * 1000 / d["median_ms_per_step"],
                               delta=1e-9 * d["tokens_per_s"])
        fns = {f["name"]: f["launches"] for f in self.info["functions"]}
        self.check_profile(r["profile"]["prefill"], self.info["launches"], 16)
        self.check_profile(r["profile"]["decode"], fns["decode"], 4)

    def test_text_report_and_json_file(self):
        out = os.path.join(self.tmp, "bench.json")
        p = self.bench("--prompt-lengths", "8", "--decode-tokens", "2", "--rounds", "1", "--json", out)
        self.assertIn("prefill, batch 2", p.stdout)
        self.assertRegex(p.stdout, r"decode after 8 tokens: median [\d.]+ ms/step, [\d.]+ tokens/s")
        with open(out) as f:
            r = json.load(f)
        self.assertEqual([x["prompt_length"] for x in r["prefill"]], [8])
        self.assertNotIn("profile", r)
        self.assertFalse(os.path.exists(out + ".tmp"))

    def test_defaults_cap_the_prompt_lengths(self):
        r = self.bench("--rounds", "1", "--decode-tokens", "1", "--json", "-")
        self.assertEqual([p["prompt_length"] for p in r["prefill"]], [8, 32])  # 128 > --max-seq 32

    def test_batch_rows(self):
        r = self.bench("--batch", "1", "--prompt-lengths", "4", "--decode-tokens", "2", "--rounds", "1",
                       "--json", "-")
        self.assertEqual(r["batch"], 1)
        self.assertEqual(r["prefill"][0]["tokens"], 4)
        self.assertAlmostEqual(r["decode"]["tokens_per_s"], 1000 / r["decode"]["median_ms_per_step"],
                               delta=1e-9 * r["decode"]["tokens_per_s"])

    def test_startup_only_with_the_full_check(self):
        r = self.bench("--startup-only", "--weight-check", "full", "--json", "-")
        self.assertEqual(r["startup"]["weight_check"], "full")
        self.assertNotIn("prefill", r)

    def test_plan_without_decode(self):
        plan = os.path.join(self.tmp, "tiny.kplan")
        run([tool("kiln-compile"), os.path.join(SRC, "models", "example", "tiny_mlp.mlir"), "-o", plan])
        r = self.bench("--rounds", "2", "--profile", "--json", "-", plan=plan)
        self.assertEqual([p["prompt_length"] for p in r["prefill"]], [8])  # its fixed shape [2, 8]
        self.assertIsNone(r["decode"])
        self.assertIsNone(r["profile"]["decode"])
        self.assertEqual(r["profile"]["prefill"]["launches"],
                         len(json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)["launches"]))
        p = self.bench("--prompt-lengths", "4", plan=plan, check=False)
        self.assertEqual(p.returncode, 3)
        self.assertIn("prompt length 4: the plan takes exactly 8 tokens per row", p.stderr)

    def test_requests_beyond_the_plan_and_usage(self):
        p = self.bench("--prompt-lengths", "64", check=False)
        self.assertEqual(p.returncode, 3)
        self.assertIn("prompt length 64: the plan takes at most 32 tokens per row (compile with --max-seq)", p.stderr)
        p = self.bench("--prompt-lengths", "30", "--decode-tokens", "5", check=False)
        self.assertEqual(p.returncode, 3)
        self.assertIn("needs 35 positions, but the KV cache holds 32", p.stderr)
        p = self.bench("--batch", "3", check=False)
        self.assertEqual(p.returncode, 3)
        self.assertIn("at most 2 rows", p.stderr)
        for flags in (["--rounds", "0"], ["--prompt-lengths", "4,x"], ["--device", "tpu"], ["--bogus"]):
            self.assertEqual(self.bench(*flags, check=False).returncode, 2, flags)
        p = run([tool("kiln-bench"), os.path.join(self.tmp, "none.kplan")], check=False)
        self.assertEqual(p.returncode, 4)


if __name__ == "__main__":
    unittest.main()
