"""End-to-end tests of what plans record for the runtime to check, and of
the checks: value ranges of integer inputs (token ids, KV cache positions)
derived by kiln-compile from how launches use them, enforced by kiln-run
before any kernel runs; the checksums of a plan and of its executables.

XXH64 is written here again from its specification, independently of the
C++ one, to re-seal plans after changing them.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os
import shutil
import struct
import tempfile
import unittest

import numpy as np

from kilntest import KernelModel, run, tool  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

BATCH, SEQ = 2, 16

M64 = (1 << 64) - 1
P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)


def xxh64(data, seed=0):
    """XXH64 (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md)."""
    def rotl(x, r):
        return ((x << r) | (x >> (64 - r))) & M64

    def rnd(acc, lane):
        return (rotl((acc + lane * P2) & M64, 31) * P1) & M64

    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed, (seed - P1) & M64]
        while i + 32 <= n:
            for j in range(4):
                v[j] = rnd(v[j], struct.unpack_from("<Q", data, i + 8 * j)[0])
            i += 32
        acc = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M64
        for x in v:
            acc = ((acc ^ rnd(0, x)) * P1 + P4) & M64
    else:
        acc = (seed + P5) & M64
    acc = (acc + n) & M64
    while i + 8 <= n:
        acc = (rotl(acc ^ rnd(0, struct.unpack_from("<Q", data, i)[0]), 27) * P1 + P4) & M64
        i += 8
    if i + 4 <= n:
        acc = (rotl(acc ^ ((struct.unpack_from("<I", data, i)[0] * P1) & M64), 23) * P2 + P3) & M64
        i += 4
    while i < n:
        acc = (rotl(acc ^ ((data[i] * P5) & M64), 11) * P1) & M64
        i += 1
    acc ^= acc >> 33
    acc = (acc * P2) & M64
    acc ^= acc >> 29
    acc = (acc * P3) & M64
    return acc ^ (acc >> 32)


def reseal(data):
    """The plan bytes with their checksum trailer recomputed (plan.fbs)."""
    body = bytes(data[:-16])
    return body + struct.pack("<Q", xxh64(body)) + b"KPLNXX64"


class Xxh64(unittest.TestCase):
    def test_reference_values(self):
        self.assertEqual(xxh64(b""), 0xEF46DB3751D8E999)
        self.assertEqual(xxh64(b"abc"), 0x44BC2CF5AD770999)
        self.assertEqual(xxh64(b"Nobody inspects the spammish repetition"), 0xFBCEA83C8A378BF1)


class DecodeInputs(unittest.TestCase):
    """A tiny DeepSeek-V3 compiled with a 16-position KV cache."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-checks-")
        ck = os.path.join(cls.tmp, "ck")
        cls.vocab = mk.make_checkpoint("deepseek_v3", ck)["vocab_size"]
        cls.plan = os.path.join(cls.tmp, "ds.kplan")
        run([tool("kiln-compile"), ck, "-o", cls.plan, f"--max-batch={BATCH}", f"--max-seq={SEQ}"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def save(self, name, array):
        path = os.path.join(self.tmp, name + ".npy")
        np.save(path, np.asarray(array, dtype=np.int32))
        return path

    def decode(self, tokens, position):
        return run([tool("kiln-run"), self.plan, "--function", "decode",
                    "--input", f"tokens={self.save('tokens', tokens)}",
                    "--input", f"position={self.save('position', position)}"], check=False)

    def test_ranges_recorded_and_shown(self):
        info = json.loads(run([tool("kiln-inspect"), self.plan, "--json"]).stdout)
        decode = [f for f in info["functions"] if f["name"] == "decode"][0]
        specs = {s["name"]: s for s in decode["inputs"]}
        self.assertEqual(specs["position"]["value_range"], {"min": 0, "max": SEQ - 1})
        self.assertEqual(specs["position"]["range_note"],
                         f"the KV cache holds {SEQ} positions; compile with a larger --max-seq")
        self.assertEqual(specs["tokens"]["value_range"], {"min": 0, "max": self.vocab - 1})
        self.assertEqual(info["inputs"][0]["value_range"], {"min": 0, "max": self.vocab - 1})
        text = run([tool("kiln-inspect"), self.plan]).stdout
        self.assertIn(f"values [0, {SEQ - 1}] (the KV cache holds {SEQ} positions", text)
        # Kernels shared by forward and decode carry both grids.
        self.assertTrue(any(len(k["grids"]) == 2 for k in info["kernels"]), info["kernels"])

    def test_bad_positions_are_refused_per_row(self):
        for position, row, value in [([3, -16], 1, -16), ([SEQ, 0], 0, SEQ), ([-1, 2], 0, -1)]:
            with self.subTest(position=position):
                p = self.decode([[1], [2]], position)
                self.assertEqual(p.returncode, 3, p.stderr)  # bad input
                self.assertIn(f"kiln-run: error: function 'decode': input 'position' row {row}: value {value} "
                              f"is outside [0, {SEQ - 1}] (the KV cache holds {SEQ} positions; compile with "
                              "a larger --max-seq)", p.stderr)
                self.assertNotIn("ran ", p.stdout)
        p = self.decode([[1], [2]], [0, SEQ - 1])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("logits: float32 [2, ", p.stdout)

    def test_bad_token_ids_are_refused(self):
        p = self.decode([[1], [self.vocab]], [0, 0])
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn(f"input 'tokens' row 1, element [1, 0]: value {self.vocab} is outside "
                      f"[0, {self.vocab - 1}] (it indexes a table of {self.vocab} rows)", p.stderr)
        prompt = self.save("prompt", [[1, 2, 3], [4, -7, 6]])
        p = run([tool("kiln-run"), self.plan, "--input", f"tokens={prompt}"], check=False)
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn("input 'tokens' row 1, element [1, 1]: value -7 is outside", p.stderr)

    def damaged(self, name, mutate):
        with open(self.plan, "rb") as f:
            data = bytearray(f.read())
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(mutate(data))
        return path

    def rejected(self, path):
        p = run([tool("kiln-inspect"), path], check=False)
        self.assertEqual(p.returncode, 4, p.stdout)  # the plan cannot be verified
        return p.stderr

    def test_damaged_and_truncated_plans_are_refused(self):
        with open(self.plan, "rb") as f:
            data = f.read()
        self.assertEqual(data[-8:], b"KPLNXX64")
        self.assertEqual(struct.unpack("<Q", data[-16:-8])[0], xxh64(data[:-16]))
        elf = data.find(b"\x7fELF")
        self.assertGreater(elf, 0)

        def flip(at):
            def f(d):
                d[at] ^= 0x20
                return d
            return f
        # A byte of the CPU executable: the plan's checksum names it.
        err = self.rejected(self.damaged("exe.kplan", flip(elf + 100)))
        self.assertIn("checksum mismatch: the file is damaged", err)
        self.assertIn("executable 0 (", err)
        # Re-sealed, the executable's own checksum still refuses it.
        err = self.rejected(self.damaged("exe-sealed.kplan", lambda d: reseal(flip(elf + 100)(d))))
        self.assertIn("checksum mismatch: its binary", err)
        self.assertNotIn("the file is damaged", err)
        # Anywhere else, and truncated.
        for at in (16, len(data) // 3, len(data) - 20):
            self.assertIn("checksum mismatch", self.rejected(self.damaged(f"flip{at}.kplan", flip(at))))
        err = self.rejected(self.damaged("cut.kplan", lambda d: d[:len(d) - 100]))
        self.assertIn("truncated or damaged", err)
        # An unchanged plan re-sealed by this independent XXH64 still opens.
        run([tool("kiln-inspect"), self.damaged("same.kplan", reseal)])


class DerivedRanges(unittest.TestCase):
    """Ranges of kiln-dialect models, from the kernel-level uses."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-ranges-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_intersection_over_uses_through_views(self):
        text = """
module {
  func.func @forward(%a: tensor<10x4xf32> {kiln.name = "a"}, %b: tensor<6x4xf32> {kiln.name = "b"},
                     %ids: tensor<3xi32> {kiln.name = "ids"})
      -> (tensor<3x4xf32> {kiln.name = "x"}, tensor<3x4xf32> {kiln.name = "y"}) {
    %x = kiln_kernel.gather_rows %a, %ids {fused_ops = ["kiln.embedding"]}
        : (tensor<10x4xf32>, tensor<3xi32>) -> tensor<3x4xf32>
    %v = kiln_kernel.view %ids : (tensor<3xi32>) -> tensor<1x3xi32>
    %y = kiln_kernel.gather_rows %b, %v {fused_ops = ["kiln.embedding"]}
        : (tensor<6x4xf32>, tensor<1x3xi32>) -> tensor<3x4xf32>
    return %x, %y : tensor<3x4xf32>, tensor<3x4xf32>
  }
}
"""
        m = KernelModel(self.tmp, "two_tables", text)
        info = json.loads(run([tool("kiln-inspect"), m.plan, "--json"]).stdout)
        ids = [s for s in info["inputs"] if s["name"] == "ids"][0]
        self.assertEqual(ids["value_range"], {"min": 0, "max": 5})
        self.assertEqual(ids["range_note"], "it indexes a table of 6 rows")
        self.assertIsNone([s for s in info["inputs"] if s["name"] == "a"][0]["value_range"])
        a = np.arange(40, dtype=np.float32).reshape(10, 4)
        b = -np.arange(24, dtype=np.float32).reshape(6, 4)
        x, y = m({"a": a, "b": b, "ids": np.array([5, 0, 2], np.int32)}, ["x", "y"])
        np.testing.assert_array_equal(x, a[[5, 0, 2]])
        np.testing.assert_array_equal(y, b[[5, 0, 2]])
        with self.assertRaises(AssertionError) as e:
            m({"a": a, "b": b, "ids": np.array([5, 6, 2], np.int32)}, ["x"])
        self.assertIn("input 'ids' row 1: value 6 is outside [0, 5] (it indexes a table of 6 rows)",
                      str(e.exception))

    def test_no_valid_position_is_a_compile_error(self):
        # Each call writes 8 rows into a cache of 4: no start keeps them inside.
        text = """
module {
  func.func @forward(%v: tensor<1x8x4xf32> {kiln.name = "v"}, %pos: tensor<1xi32> {kiln.name = "pos"})
      -> (tensor<1x4x4xf32> {kiln.name = "y"}) {
    %c = kiln.state "cache" : tensor<1x4x4xf32>
    %c2 = kiln_kernel.cache_write %c, %v start(%pos) {fused_ops = ["kiln.cache_update"]}
        : (tensor<1x4x4xf32>, tensor<1x8x4xf32>, tensor<1xi32>) -> tensor<1x4x4xf32>
    %y = kiln_kernel.slice %c2 {offset = 0 : i64, fused_ops = ["kiln.slice"]}
        : (tensor<1x4x4xf32>) -> tensor<1x4x4xf32>
    return %y : tensor<1x4x4xf32>
  }
}
"""
        d = os.path.join(self.tmp, "small_cache")
        os.makedirs(d, exist_ok=True)
        src = os.path.join(d, "m.mlir")
        with open(src, "w") as f:
            f.write(text)
        out = os.path.join(d, "m.kplan")
        p = run([tool("kiln-compile"), src, "-o", out], check=False)
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn("input 'pos': no value is valid for every launch that reads it: they need at least 0 "
                      "(the KV cache holds 4 positions and a call covers 8 of them) and at most -4", p.stderr)
        self.assertFalse(os.path.exists(out))
        # With room for the 8 rows the same model compiles, its range [0, 8].
        with open(src, "w") as f:
            f.write(text.replace("1x4x4", "1x16x4"))
        run([tool("kiln-compile"), src, "-o", out])
        info = json.loads(run([tool("kiln-inspect"), out, "--json"]).stdout)
        pos = [s for s in info["inputs"] if s["name"] == "pos"][0]
        self.assertEqual(pos["value_range"], {"min": 0, "max": 8})
        self.assertEqual(pos["range_note"], "the KV cache holds 16 positions and a call covers 8 of them")


if __name__ == "__main__":
    unittest.main()
