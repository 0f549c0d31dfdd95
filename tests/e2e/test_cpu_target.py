"""End-to-end tests of CPU targets by name (kiln-compile --cpu): the host's
features are read from its flags (compared here with /proc/cpuinfo), the
plan records the features its code needs, and the runtime refuses a plan
whose features the host lacks, naming them.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os
import shutil
import tempfile
import unittest

import numpy as np

from kilntest import SRC, run, tool  # noqa: E402

MODEL = os.path.join(SRC, "models", "example", "tiny_mlp.mlir")

# LLVM's feature names -> the flags Linux prints in /proc/cpuinfo.
CPUINFO = {
    "sse3": "pni", "pclmul": "pclmulqdq", "ssse3": "ssse3", "fma": "fma", "cx16": "cx16",
    "sse4.1": "sse4_1", "sse4.2": "sse4_2", "movbe": "movbe", "popcnt": "popcnt", "aes": "aes",
    "xsave": "xsave", "avx": "avx", "f16c": "f16c", "rdrnd": "rdrand", "sse": "sse", "sse2": "sse2",
    "bmi": "bmi1", "avx2": "avx2", "bmi2": "bmi2", "avx512f": "avx512f", "avx512dq": "avx512dq",
    "adx": "adx", "avx512ifma": "avx512ifma", "avx512cd": "avx512cd",
    "sha": "sha_ni", "avx512bw": "avx512bw", "avx512vl": "avx512vl", "avx512vbmi": "avx512vbmi",
    "avx512vbmi2": "avx512_vbmi2", "gfni": "gfni", "vaes": "vaes", "vpclmulqdq": "vpclmulqdq",
    "avx512vnni": "avx512_vnni", "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq", "amx-bf16": "amx_bf16", "avx512fp16": "avx512_fp16",
    "amx-tile": "amx_tile", "amx-int8": "amx_int8", "avxvnni": "avx_vnni",
    "avx512bf16": "avx512_bf16", "amx-fp16": "amx_fp16", "avxifma": "avx_ifma",
    "avxvnniint8": "avx_vnni_int8", "avxneconvert": "avx_ne_convert", "amx-complex": "amx_complex",
    "lzcnt": "abm",
}


def cpuinfo_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


@unittest.skipUnless(os.uname().machine == "x86_64" and os.path.exists("/proc/cpuinfo"),
                     "x86_64 Linux host")
class CpuTarget(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cpu-")
        cls.tokens = os.path.join(cls.tmp, "tokens.npy")
        np.save(cls.tokens, np.random.default_rng(0).integers(0, 256, size=(2, 8)).astype(np.int32))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compile(self, cpu, check=True):
        plan = os.path.join(self.tmp, f"{cpu}.kplan")
        p = run([tool("kiln-compile"), MODEL, "-o", plan, f"--cpu={cpu}"], check=check)
        return plan, p

    def target(self, plan):
        info = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
        [cpu] = [t for t in info["targets"] if t["target"] == "cpu"]
        return cpu

    def forward(self, plan, check=True):
        out = plan + ".logits.npy"
        p = run([tool("kiln-run"), plan, "--input", f"tokens={self.tokens}",
                 "--output", f"logits={out}"], check=check)
        return (np.load(out) if p.returncode == 0 else None), p

    def test_host_features_are_the_cpu_flags(self):
        plan, _ = self.compile("host")
        t = self.target(plan)
        self.assertEqual(t["arch"], "x86_64")
        flags = cpuinfo_flags()
        features = set(t["features"])
        for f in features:
            self.assertIn(CPUINFO[f], flags, f"the plan needs {f}, which /proc/cpuinfo lacks")
        for f, flag in CPUINFO.items():
            if flag in flags:
                self.assertIn(f, features, f"/proc/cpuinfo has {flag}; the host plan omits {f}")
        self.forward(plan)

    def test_generic_levels_run_and_agree(self):
        host, _ = self.compile("host")
        want, _ = self.forward(host)
        for cpu, needs, lacks in (("x86-64", {"sse2"}, {"avx"}),
                                  ("x86-64-v3", {"avx2", "fma", "f16c", "bmi2"}, {"avx512f"}),
                                  ("x86-64-v4", {"avx512f", "avx512bw", "avx512vl"}, {"avx512bf16"})):
            with self.subTest(cpu=cpu):
                plan, _ = self.compile(cpu)
                t = self.target(plan)
                self.assertEqual(t["cpu"], cpu)
                self.assertTrue(needs <= set(t["features"]), t["features"])
                self.assertFalse(lacks & set(t["features"]), t["features"])
                if all(CPUINFO[f] in cpuinfo_flags() for f in t["features"]):
                    got, _ = self.forward(plan)
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    def test_missing_features_are_refused(self):
        flags = cpuinfo_flags()
        for cpu, feature in (("graniterapids", "amx-fp16"), ("sapphirerapids", "amx-tile"),
                             ("x86-64-v4", "avx512f")):
            if CPUINFO[feature] in flags:
                continue
            with self.subTest(cpu=cpu):
                plan, _ = self.compile(cpu)
                self.assertIn(feature, self.target(plan)["features"])
                _, p = self.forward(plan, check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn("needs CPU features this host lacks", p.stderr)
                self.assertIn(feature, p.stderr)
                self.assertIn(f"--cpu={cpu}", p.stderr)
                return
        self.skipTest("this host has every feature of the CPUs tried")

    def test_unknown_cpu(self):
        plan, p = self.compile("pentium-9000", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("unknown --cpu=pentium-9000", p.stderr)
        self.assertFalse(os.path.exists(plan))


if __name__ == "__main__":
    unittest.main()
