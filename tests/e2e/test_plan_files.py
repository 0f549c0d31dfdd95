"""End-to-end tests of the files kiln-compile reads and writes: shard names
of a checkpoint index stay inside the checkpoint directory; external weight
paths are stored relative to the plan, the same however -o is spelled; a
write failure (here a file-size limit, which fails write(2) like a full disk)
leaves neither a partial plan nor a temporary file, and keeps an older plan.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import unittest

from kilntest import run, tool  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

FLAGS = ["--max-batch=1", "--max-seq=4"]


class PlanFiles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-files-")
        cls.ckpt = os.path.join(cls.tmp, "ckpt")
        mk.make_checkpoint("llama", cls.ckpt, shards=2, seed=5)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compile(self, ckpt, out, cwd=None, check=True, limit=None):
        def limit_size():
            # Ignored, SIGXFSZ turns an oversized write into EFBIG, as a full
            # disk turns it into ENOSPC; the disposition survives exec.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        p = subprocess.run([tool("kiln-compile"), ckpt, "-o", out, *FLAGS], cwd=cwd,
                           capture_output=True, text=True,
                           preexec_fn=limit_size if limit is not None else None)
        if check and p.returncode != 0:
            raise AssertionError(f"kiln-compile failed ({p.returncode}):\n{p.stderr}")
        return p

    def sources(self, plan):
        info = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
        return sorted({w["source"] for w in info["weights"]["weights"]})

    def index_with(self, shard_name):
        """A copy of the checkpoint whose index sends one tensor to `shard_name`."""
        d = tempfile.mkdtemp(dir=self.tmp)
        ck = os.path.join(d, "ck")
        shutil.copytree(self.ckpt, ck)
        path = os.path.join(ck, "model.safetensors.index.json")
        with open(path) as f:
            index = json.load(f)
        name = sorted(index["weight_map"])[0]
        index["weight_map"][name] = shard_name
        with open(path, "w") as f:
            json.dump(index, f)
        return ck, name

    def test_shard_outside_the_checkpoint_is_refused(self):
        outside = os.path.join(self.tmp, "outside.safetensors")
        shutil.copy(os.path.join(self.ckpt, "model-00001-of-00002.safetensors"), outside)
        for shard in ("../../outside.safetensors", outside, "sub/../../outside.safetensors"):
            with self.subTest(shard=shard):
                ck, name = self.index_with(shard)
                p = self.compile(ck, os.path.join(ck, "x.kplan"), check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn(f"weight_map entry '{name}'", p.stderr)
                self.assertIn("inside the checkpoint directory", p.stderr)
                self.assertFalse(os.path.exists(os.path.join(ck, "x.kplan")))

    def test_external_paths_relative_however_o_is_spelled(self):
        got = {}
        for spelling in ("x.kplan", "./x.kplan", os.path.join(self.tmp, "x.kplan"),
                         "../" + os.path.basename(self.tmp) + "/x.kplan"):
            plan = os.path.join(self.tmp, "x.kplan")
            if os.path.exists(plan):
                os.remove(plan)
            self.compile(self.ckpt, spelling, cwd=self.tmp)
            got[spelling] = self.sources(plan)
        want = ["ckpt/model-00001-of-00002.safetensors", "ckpt/model-00002-of-00002.safetensors"]
        for spelling, sources in got.items():
            self.assertEqual(sources, want, spelling)
        # The plan runs from another working directory, and after the plan and
        # the checkpoint move together.
        moved = os.path.join(self.tmp, "moved")
        os.makedirs(moved)
        shutil.copytree(self.ckpt, os.path.join(moved, "ckpt"))
        shutil.copy(os.path.join(self.tmp, "x.kplan"), moved)
        tokens = os.path.join(self.tmp, "tokens.npy")
        import numpy as np
        np.save(tokens, np.array([[1, 2, 3]], dtype=np.int32))
        for plan in (os.path.join(self.tmp, "x.kplan"), os.path.join(moved, "x.kplan")):
            run([tool("kiln-run"), plan, "--input", f"tokens={tokens}"])

    def test_write_failure_leaves_nothing_behind(self):
        out_dir = tempfile.mkdtemp(dir=self.tmp)
        out = os.path.join(out_dir, "x.kplan")
        self.compile(self.ckpt, out)
        with open(out, "rb") as f:
            before = f.read()
        # One byte short of the plan: the kernels' object and shared object
        # (which the plan contains) fit, the plan does not. 4 KiB: the object
        # file does not fit either.
        for limit, message in ((len(before) - 1, "cannot write " + out),
                               (4096, "cannot write")):
            with self.subTest(limit=limit):
                os.remove(out)
                p = self.compile(self.ckpt, out, limit=limit, check=False)
                self.assertGreater(p.returncode, 0, p.stderr)  # an error exit, not a signal
                self.assertIn(message, p.stderr)
                self.assertEqual(os.listdir(out_dir), [])
                # An existing plan survives a failed rewrite untouched.
                with open(out, "wb") as f:
                    f.write(before)
                p = self.compile(self.ckpt, out, limit=limit, check=False)
                self.assertGreater(p.returncode, 0, p.stderr)
                self.assertEqual(os.listdir(out_dir), ["x.kplan"])
                with open(out, "rb") as f:
                    self.assertEqual(f.read(), before)

if __name__ == "__main__":
    unittest.main()
