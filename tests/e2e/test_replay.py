"""The process-replay recorder (tests/replay/replay.py): two recordings of
the corpus by the same build agree (compilation is deterministic, and the
recording normalizes paths and times), and the comparison reports a change
in any artifact.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import unittest

from kilntest import BIN, SRC  # noqa: E402

sys.path.insert(0, os.path.join(SRC, "tests", "replay"))
import replay  # noqa: E402


class Replay(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-replay-test-")
        cls.a, cls.b = os.path.join(cls.tmp, "a"), os.path.join(cls.tmp, "b")
        with contextlib.redirect_stderr(io.StringIO()):
            replay.dump(cls.a, BIN)
            replay.dump(cls.b, BIN)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compare(self, a, b):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = replay.compare(a, b)
        return rc, out.getvalue()

    def test_recordings_of_one_build_agree(self):
        rc, out = self.compare(self.a, self.b)
        self.assertEqual(rc, 0, out)
        self.assertIn("no difference", out)
        artifacts = os.listdir(os.path.join(self.a, "deepseek_v3"))
        for stage in ("graph.mlir", "kernel.mlir", "cpu.ll", "plan.json"):
            self.assertIn(stage, artifacts)

    def test_a_changed_artifact_is_reported(self):
        c = os.path.join(self.tmp, "c")
        shutil.copytree(self.b, c)
        path = os.path.join(c, "llama", "cpu.ll")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("fmul", "fadd", 1))
        manifest = os.path.join(c, "manifest.json")
        with open(manifest) as f:
            m = json.load(f)
        with open(path) as f:
            m["artifacts"]["llama/cpu.ll"] = hashlib.sha256(f.read().encode()).hexdigest()
        with open(manifest, "w") as f:
            json.dump(m, f)
        rc, out = self.compare(self.a, c)
        self.assertEqual(rc, 1)
        self.assertIn("llama/cpu.ll differs", out)
        self.assertIn("+", out)


if __name__ == "__main__":
    unittest.main()
