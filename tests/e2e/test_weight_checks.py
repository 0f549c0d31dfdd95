"""End-to-end tests of the checks of external weights: a session checks each
file's size and the identity kiln-compile recorded (XXH64 of 16 chunks of 64
KiB spread over the file), so a truncated, resized or replaced file is
refused when a session starts; a corrupted byte between the sampled chunks
is caught by the full check, `kiln-verify`, which names the weight and its
file. The recorded identity is recomputed here from its definition
(plan.fbs WeightFile) with the independent Python XXH64 of test_plan_checks.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os
import shutil
import struct
import tempfile
import unittest

import numpy as np

from kilntest import run, tool  # noqa: E402
from test_plan_checks import xxh64  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

CHUNK, COUNT = 64 << 10, 16


def sample_offsets(size):
    """Where the sampled chunks of a file of `size` bytes start (plan.fbs)."""
    if size <= CHUNK * COUNT:
        return None  # the whole file
    return [(size - CHUNK) * i // (COUNT - 1) for i in range(COUNT)]


def sampled_xxh64(data):
    offsets = sample_offsets(len(data))
    if offsets is None:
        return xxh64(data, len(data))
    h = len(data)
    for off in offsets:
        h = xxh64(data[off:off + CHUNK], h)
    return h


def tensors(path):
    """name -> (absolute begin, end) of each tensor of a safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return {k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
            for k, v in header.items() if k != "__metadata__"}


class WeightChecks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-weights-")
        cls.ckpt = os.path.join(cls.tmp, "ckpt")
        # Two shards over 1 MiB each, so that sampling leaves bytes unread.
        mk.make_checkpoint("llama", cls.ckpt, shards=2, seed=5, dtype="f32",
                           overrides={"vocab_size": 4096})
        cls.plan = os.path.join(cls.tmp, "m.kplan")
        run([tool("kiln-compile"), cls.ckpt, "-o", cls.plan, "--max-batch=1", "--max-seq=4"])
        cls.tokens = os.path.join(cls.tmp, "tokens.npy")
        np.save(cls.tokens, np.array([[3, 1, 4, 1]], dtype=np.int32))
        cls.shards = sorted(f for f in os.listdir(cls.ckpt) if f.endswith(".safetensors"))
        cls.pristine = {s: open(os.path.join(cls.ckpt, s), "rb").read() for s in cls.shards}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def tearDown(self):
        for s, data in self.pristine.items():
            with open(os.path.join(self.ckpt, s), "wb") as f:
                f.write(data)

    def write(self, shard, data):
        with open(os.path.join(self.ckpt, shard), "wb") as f:
            f.write(data)

    def session(self):
        """kiln-run of one forward (a session starts: the default check)."""
        return run([tool("kiln-run"), self.plan, "--input", f"tokens={self.tokens}"], check=False)

    def verify(self, *flags):
        return run([tool("kiln-verify"), self.plan, *flags], check=False)

    def test_compiling_a_small_checkpoint_is_quiet(self):
        # Progress is reported every 2 s of hashing: never for a small model.
        out = os.path.join(self.tmp, "quiet.kplan")
        for flags in ((), ("--quiet", "--hash-threads=1")):
            p = run([tool("kiln-compile"), self.ckpt, "-o", out, "--max-batch=1", "--max-seq=4", *flags])
            self.assertEqual(p.stderr, "", flags)
        self.assertEqual(run([tool("kiln-compile"), self.ckpt, "-o", out, "--hash-threads=-1"],
                             check=False).returncode, 2)
        # The hashes do not depend on the threads: the same weights either way.
        weights = lambda: json.loads(run([tool("kiln-inspect"), out, "--json"]).stdout)["weights"]  # noqa: E731
        one = weights()
        run([tool("kiln-compile"), self.ckpt, "-o", out, "--max-batch=1", "--max-seq=4", "--hash-threads=3"])
        self.assertEqual(weights(), one)

    def test_identity_recorded_per_file(self):
        files = json.loads(run([tool("kiln-inspect"), self.plan, "--json"]).stdout)["weights"]["files"]
        self.assertEqual(sorted(os.path.basename(f["path"]) for f in files), self.shards)
        for f in files:
            data = self.pristine[os.path.basename(f["path"])]
            self.assertGreater(len(data), CHUNK * COUNT)
            self.assertEqual((f["size"], f["sample_count"], f["sample_bytes"]), (len(data), COUNT, CHUNK))
            self.assertEqual(int(f["sample_xxh64"], 16), sampled_xxh64(data), f["path"])

    def test_intact_weights_pass_both_checks(self):
        self.assertEqual(self.session().returncode, 0)
        for flags in ((), ("--threads", "1"), ("--threads", "3", "--quiet")):
            p = self.verify(*flags)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertRegex(p.stdout, r"\d+ external weights in 2 files, .*: all match the plan")

    def test_truncated_and_resized_files_are_refused_at_start(self):
        shard = self.shards[1]
        data = self.pristine[shard]
        for changed, what in ((data[:-1], "truncated"), (data + b"\0" * 4096, "grown"),
                              (data[:len(data) // 2], "halved")):
            with self.subTest(what):
                self.write(shard, changed)
                p = self.session()
                self.assertNotEqual(p.returncode, 0)
                self.assertIn(f"file changed since compile (size {len(changed)} bytes, expected {len(data)})",
                              p.stderr)
                self.assertIn(shard, p.stderr)
                self.assertEqual(self.verify().returncode, 1)

    def test_replaced_file_is_refused_at_start(self):
        # Another checkpoint of the same shapes: same sizes, other contents.
        other = os.path.join(self.tmp, "other")
        mk.make_checkpoint("llama", other, shards=2, seed=6, dtype="f32", overrides={"vocab_size": 4096})
        shard = self.shards[0]
        with open(os.path.join(other, shard), "rb") as f:
            replacement = f.read()
        self.assertEqual(len(replacement), len(self.pristine[shard]))
        self.write(shard, replacement)
        p = self.session()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("file changed since compile (its sampled contents differ", p.stderr)
        self.assertIn(shard, p.stderr)

    def test_byte_in_a_sampled_chunk_is_caught_at_start(self):
        shard = self.shards[0]
        data = bytearray(self.pristine[shard])
        at = sample_offsets(len(data))[7] + 100
        data[at] ^= 0x40
        self.write(shard, bytes(data))
        p = self.session()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("its sampled contents differ", p.stderr)

    def test_corrupted_byte_between_chunks_is_caught_by_the_full_check(self):
        shard = self.shards[1]
        data = bytearray(self.pristine[shard])
        offsets = sample_offsets(len(data))
        at = (offsets[4] + CHUNK + offsets[5]) // 2  # between chunks 4 and 5
        self.assertGreater(at, offsets[4] + CHUNK)
        self.assertLess(at, offsets[5])
        name = next(n for n, (b, e) in tensors(os.path.join(self.ckpt, shard)).items() if b <= at < e)
        data[at] ^= 0x01
        self.write(shard, bytes(data))
        # The default check samples and lets it through (what the full check is for).
        self.assertEqual(self.session().returncode, 0)
        for threads in ("1", "2"):
            p = self.verify("--threads", threads)
            self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
            self.assertIn(f"weight '{name}' in ckpt/{shard}: file changed since compile (hash mismatch", p.stderr)
            self.assertNotIn("weights differ", p.stderr)  # one weight
        # Two weights corrupted: the first in plan order is named, with the count.
        # (between chunks too, so that the default check still passes).
        spans = tensors(os.path.join(self.ckpt, shard))
        gaps = [(offsets[i] + CHUNK + offsets[i + 1]) // 2 for i in range(COUNT - 1)]
        at2 = next(g for g in gaps if not spans[name][0] <= g < spans[name][1] and
                   any(b <= g < e for b, e in spans.values()))
        data[at2] ^= 0x01
        self.write(shard, bytes(data))
        p = self.verify()
        self.assertEqual(p.returncode, 1)
        self.assertIn("2 of ", p.stderr)
        self.assertIn("weights differ", p.stderr)

    def test_usage_and_missing_files(self):
        self.assertEqual(self.verify("--threads").returncode, 2)
        self.assertEqual(self.verify("--bogus").returncode, 2)
        self.assertEqual(run([tool("kiln-verify")], check=False).returncode, 2)
        p = run([tool("kiln-verify"), os.path.join(self.tmp, "none.kplan")], check=False)
        self.assertEqual(p.returncode, 4)
        os.remove(os.path.join(self.ckpt, self.shards[0]))
        p = self.verify()
        self.assertEqual(p.returncode, 1)
        self.assertIn(self.shards[0], p.stderr)


if __name__ == "__main__":
    unittest.main()
