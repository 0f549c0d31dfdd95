"""kiln-compile follows the conventions of command-line tools: --help shows
Kiln's options (and the MLIR flags for IR inspection), LLVM's only with
--help-hidden; --version prints Kiln's version and the plan format it
writes; exit codes 0 success, 1 the model could not be compiled, 2 usage.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import os
import re
import shutil
import tempfile
import unittest

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


if __name__ == "__main__":
    unittest.main()
