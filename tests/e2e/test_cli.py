"""The tools follow the conventions of command-line tools (docs/tools.md).
kiln-compile: --help shows Kiln's options (and the MLIR flags for IR
inspection), LLVM's only with --help-hidden; --version prints Kiln's version
and the plan format it writes; exit codes 0 success, 1 the model could not be
compiled, 2 usage. kiln-run and kiln-inspect: --help, --version (Kiln's
version, the plan format they read), exit codes 0 success, 1 run failure,
2 usage, 3 bad input, 4 bad plan, 5 generation stopped at the cache capacity.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import os
import re
import shutil
import tempfile
import unittest

import numpy as np

from kilntest import SRC, run, tool  # noqa: E402

MODEL = os.path.join(SRC, "models", "example", "tiny_mlp.mlir")


class KilnCompileCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cli-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compile(self, *args):
        return run([tool("kiln-compile"), *args], check=False)

    def test_help_shows_kiln_options_not_llvms(self):
        p = self.compile("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertLess(len(lines), 80, p.stdout)
        for flag in ("--target=", "--cpu=", "--max-seq=", "--quantize=", "--dump-ir-dir=",
                     "--mlir-print-ir-after-all", "--mlir-timing", "exit codes"):
            self.assertIn(flag, p.stdout)
        kiln = next(i for i, l in enumerate(lines) if l.startswith("Kiln options"))
        mlir = next(i for i, l in enumerate(lines) if l.startswith("MLIR options"))
        self.assertLess(kiln, mlir)
        self.assertNotIn("--amdgpu", p.stdout)
        hidden = self.compile("--help-hidden")
        self.assertIn("--amdgpu", hidden.stdout)  # still there, on request

    def test_version(self):
        p = self.compile("--version")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^kiln \d+\.\d+\.\d+ \(MLIR 22\.")
        self.assertRegex(p.stdout, r"writes plan format version \d+")
        self.assertNotIn("Debian LLVM", p.stdout)

    def test_exit_codes(self):
        out = os.path.join(self.tmp, "x.kplan")
        usage = [("--no-such-flag", MODEL, "-o", out), (MODEL,), ("--quantize=int3", MODEL, "-o", out),
                 ("--mla-form=sideways", MODEL, "-o", out), ("--moe-block-m=-1", MODEL, "-o", out)]
        for args in usage:
            with self.subTest(args=args):
                p = self.compile(*args)
                self.assertEqual(p.returncode, 2, p.stderr)
        bad = os.path.join(self.tmp, "bad.mlir")
        with open(bad, "w") as f:
            f.write("module { this is not mlir }\n")
        for args in ((bad, "-o", out), (os.path.join(self.tmp, "missing-dir"), "-o", out),
                     (MODEL, "-o", out, "--cpu=pentium-9000")):
            with self.subTest(args=args):
                p = self.compile(*args)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn("no plan written", p.stderr)
        self.assertFalse(os.path.exists(out))
        p = self.compile(MODEL, "-o", out)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_mlir_timing(self):
        p = self.compile(MODEL, "-o", os.path.join(self.tmp, "t.kplan"), "--mlir-timing")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(re.search(r"Execution time report", p.stderr), p.stderr)


class RuntimeToolsCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cli-rt-")
        cls.plan = os.path.join(cls.tmp, "tiny.kplan")
        run([tool("kiln-compile"), MODEL, "-o", cls.plan])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_help_and_version(self):
        compile_version = run([tool("kiln-compile"), "--version"]).stdout
        kiln_version = re.match(r"kiln (\d+\.\d+\.\d+)", compile_version).group(1)
        plan_version = re.search(r"writes plan format version (\d+)", compile_version).group(1)
        for name in ("kiln-run", "kiln-inspect"):
            with self.subTest(tool=name):
                p = run([tool(name), "--version"], check=False)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(p.stdout, f"{name} (kiln {kiln_version})\n"
                                           f"reads plan format version {plan_version}\n")
                h = run([tool(name), "--help"], check=False)
                self.assertEqual(h.returncode, 0, h.stderr)
                self.assertIn("Exit codes:", h.stdout)
                self.assertIn("--version", h.stdout)

    def test_exit_codes(self):
        x = os.path.join(self.tmp, "tokens.npy")
        np.save(x, np.arange(16, dtype=np.int32).reshape(2, 8))
        wrong = os.path.join(self.tmp, "wrong.npy")
        np.save(wrong, np.ones((3,), dtype=np.float32))
        big = os.path.join(self.tmp, "big.npy")
        np.save(big, np.full((2, 8), 999, dtype=np.int32))
        garbage = os.path.join(self.tmp, "garbage.kplan")
        with open(garbage, "wb") as f:
            f.write(b"not a plan at all, not at all")
        cases = [
            ("kiln-run", [self.plan, "--input", f"tokens={x}"], 0),
            ("kiln-run", [self.plan, "--input", f"tokens={x}", "--repeat", "3"], 0),
            ("kiln-run", [self.plan, "--bogus"], 2),
            ("kiln-run", [self.plan, "--repeat", "0", "--input", f"tokens={x}"], 2),
            ("kiln-run", [self.plan, "--temperature", "0.5", "--input", f"tokens={x}"], 2),
            ("kiln-run", [self.plan, "--prompt", "hi", "--repeat", "2"], 2),
            ("kiln-run", [], 2),
            ("kiln-run", [self.plan], 3),                                   # missing input
            ("kiln-run", [self.plan, "--input", f"tokens={wrong}"], 3),     # wrong shape
            ("kiln-run", [self.plan, "--input", f"tokens={big}"], 3),       # ids out of range
            ("kiln-run", [self.plan, "--input", f"y={x}"], 3),              # unknown input
            ("kiln-run", [self.plan, "--input", f"tokens={self.tmp}/none.npy"], 3),
            ("kiln-run", [garbage, "--input", f"tokens={x}"], 4),
            ("kiln-run", [self.plan, "--prompt", "hello"], 4),              # no tokenizer
            ("kiln-run", [self.plan, "--generate", "2", "--input", f"tokens={x}"], 4),  # no decode
            ("kiln-inspect", [self.plan], 0),
            ("kiln-inspect", [self.plan, "--json"], 0),
            ("kiln-inspect", [self.plan, "--bogus"], 2),
            ("kiln-inspect", [], 2),
            ("kiln-inspect", [garbage], 4),
            ("kiln-inspect", [os.path.join(self.tmp, "missing.kplan")], 4),
        ]
        for name, args, code in cases:
            with self.subTest(tool=name, args=args):
                p = run([tool(name), *args], check=False)
                self.assertEqual(p.returncode, code, p.stdout + p.stderr)
                if code:
                    self.assertIn(f"{name}: error: ", p.stderr)


if __name__ == "__main__":
    unittest.main()
