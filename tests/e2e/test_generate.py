"""Generation from text: a tiny checkpoint with a tokenizer
(make_tiny_checkpoint.py --tokenizer) compiled by kiln-compile carries its
tokenizer.json and generation defaults in the plan; `kiln-run --prompt`
encodes with it, generates through the C++ generation API and streams the
text. The tokens are the float64 reference's greedy tokens (hf_reference.py),
encoded and decoded on the reference side by Hugging Face `tokenizers`;
generation stops at the end-of-sequence token, the budget or the cache
capacity (exit code 5), and sampling with a seed is reproducible.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os
import re
import shutil
import tempfile
import unittest

import numpy as np
from tokenizers import Tokenizer

from kilntest import run, tool  # noqa: E402
import hf_reference as ref  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

PROMPT = "the model reads a prompt"
SEQ = 32
# The reference's greedy choice at each step must beat the runner-up by more
# than fp32 error for the comparison to be meaningful.
MIN_MARGIN = 1e-4


def assert_rate_from_median(test, rate, median, rows=1):
    """The printed rate is rows x 1000 / the printed median, up to the
    printing's rounding (median to 0.001 ms, rate to 0.1 tokens/s)."""
    lo, hi = rows * 1000 / (median + 0.0005), rows * 1000 / max(median - 0.0005, 1e-9)
    test.assertTrue(lo - 0.05 <= rate <= hi + 0.05, (rate, median, rows))


def greedy_reference(ck, ids, n):
    """n greedy tokens after `ids` (float64 reference, full recompute each
    step), and the smallest top-1 / top-2 logit margin seen."""
    seq = np.array([ids], dtype=np.int32)
    out, margin = [], np.inf
    for _ in range(n):
        last = ref.forward(ck, seq)[0, -1]
        order = np.argsort(-last)
        margin = min(margin, last[order[0]] - last[order[1]])
        out.append(int(order[0]))
        seq = np.concatenate([seq, [[order[0]]]], axis=1).astype(np.int32)
    return out, margin


class Generate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-generate-")
        cls.ckpts = {}
        for family in ("deepseek_v3", "llama"):
            d = os.path.join(cls.tmp, family)
            mk.make_checkpoint(family, d, tokenizer=True)
            cls.ckpts[family] = d

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compile(self, ck, name, seq=SEQ, batch=1):
        plan = os.path.join(self.tmp, name + ".kplan")
        run([tool("kiln-compile"), ck, "-o", plan, f"--max-seq={seq}", f"--max-batch={batch}",
             "--kv-cache-dtype=f32"])
        return plan

    def kiln_run(self, plan, *args):
        return run([tool("kiln-run"), plan, *args], check=False)

    def test_plan_carries_the_tokenizer_and_defaults(self):
        ck = self.ckpts["llama"]
        plan = self.compile(ck, "llama-carry")
        info = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)["generation"]
        with open(os.path.join(ck, "tokenizer.json"), "rb") as f:
            size = len(f.read())
        self.assertEqual(info["tokenizer"]["bytes"], size)
        self.assertEqual(info["tokenizer"]["vocab_size"], 128)
        with open(os.path.join(ck, "config.json")) as f:
            cfg = json.load(f)
        self.assertEqual(info["eos_token_ids"], [cfg["eos_token_id"]])
        self.assertEqual(info["eos_source"], "generation_config.json")
        self.assertEqual(info["bos_token_id"], cfg["bos_token_id"])
        self.assertFalse(info["do_sample"])
        text = run([tool("kiln-inspect"), plan]).stdout
        self.assertRegex(text, r"tokenizer +128 tokens")
        self.assertIn(f"eos_token_ids     [{cfg['eos_token_id']}] (generation_config.json)", text)
        # The tokenizer is embedded: the plan works with the files gone.
        moved = os.path.join(self.tmp, "llama-moved")
        shutil.copytree(ck, moved)
        embedded = self.compile(moved, "llama-embedded")
        for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            os.unlink(os.path.join(moved, f))
        p = self.kiln_run(embedded, "--prompt", "hi", "--max-new-tokens", "2")
        self.assertEqual(p.returncode, 0, p.stderr)
        # Compiled without them: no tokenizer, eos from config.json.
        bare = self.compile(moved, "llama-bare")
        bare_info = json.loads(run([tool("kiln-inspect"), bare, "--json"]).stdout)["generation"]
        self.assertNotIn("tokenizer", bare_info)
        self.assertEqual(bare_info["eos_source"], "config.json")
        p = self.kiln_run(bare, "--prompt", "hi")
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn("carries no tokenizer", p.stderr)

    def test_prompt_streams_the_reference_greedy_text(self):
        for family, ck in self.ckpts.items():
            with self.subTest(family=family):
                tok = Tokenizer.from_file(os.path.join(ck, "tokenizer.json"))
                ids = tok.encode(PROMPT).ids
                n = 8
                expected, margin = greedy_reference(ck, ids, n)
                self.assertGreater(margin, MIN_MARGIN)
                plan = self.compile(ck, family + "-prompt")
                p = self.kiln_run(plan, "--prompt", PROMPT, "--max-new-tokens", str(n), "--ignore-eos")
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(p.stdout, tok.decode(expected, skip_special_tokens=True) + "\n")
                self.assertIn(f"prompt: {len(ids)} tokens", p.stderr)
                self.assertIn(f"stopped: token budget ({n}) after {n} token(s)", p.stderr)
                # One statistic behind both figures: tokens/s = 1000 / median.
                m = re.search(r"decode: (\d+) step\(s\), median ([0-9.]+) ms/token, ([0-9.]+) tokens/s",
                              p.stderr)
                self.assertIsNotNone(m, p.stderr)
                self.assertEqual(int(m.group(1)), n - 1)
                median, rate = float(m.group(2)), float(m.group(3))
                assert_rate_from_median(self, rate, median)
                self.assertRegex(p.stderr, r"prefill: 1 x %d tokens \(forward\) in [0-9.]+ ms" % len(ids))

    def test_stops_at_the_end_of_sequence_token(self):
        # The checkpoint's eos is set to the third greedy token: generation
        # ends there (it is not printed), exit 0.
        src = self.ckpts["deepseek_v3"]
        ck = os.path.join(self.tmp, "ds-eos")
        shutil.copytree(src, ck)
        tok = Tokenizer.from_file(os.path.join(ck, "tokenizer.json"))
        ids = tok.encode(PROMPT).ids
        expected, margin = greedy_reference(ck, ids, 3)
        self.assertGreater(margin, MIN_MARGIN)
        eos = expected[2]
        self.assertNotIn(eos, expected[:2])
        with open(os.path.join(ck, "generation_config.json")) as f:
            gc = json.load(f)
        gc["eos_token_id"] = [eos, 127]
        with open(os.path.join(ck, "generation_config.json"), "w") as f:
            json.dump(gc, f)
        plan = self.compile(ck, "ds-eos")
        p = self.kiln_run(plan, "--prompt", PROMPT, "--max-new-tokens", "20")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"stopped: end of sequence (token {eos}) after 3 token(s)", p.stderr)
        self.assertEqual(p.stdout, tok.decode(expected[:2], skip_special_tokens=True) + "\n")
        # --generate stops there too, and keeps the token; --ignore-eos does not stop.
        prompt = os.path.join(self.tmp, "eos-prompt.npy")
        np.save(prompt, np.array([ids], dtype=np.int32))
        p = self.kiln_run(plan, "--generate", "10", "--input", f"tokens={prompt}")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("generated[0]: %s\n" % " ".join(map(str, expected)), p.stdout)
        p = self.kiln_run(plan, "--generate", "4", "--input", f"tokens={prompt}", "--ignore-eos")
        self.assertIn("stopped: token budget (4) after 4 token(s)", p.stderr)
        # A bad eos id in the checkpoint is a compile error naming the file.
        gc["eos_token_id"] = 128
        with open(os.path.join(ck, "generation_config.json"), "w") as f:
            json.dump(gc, f)
        p = run([tool("kiln-compile"), ck, "-o", os.path.join(self.tmp, "bad.kplan")], check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("generation_config.json: eos_token_id: token id 128 is outside the model's "
                      "vocabulary [0, 128)", p.stderr)

    def test_cache_capacity_is_a_distinct_outcome(self):
        ck = self.ckpts["llama"]
        plan = self.compile(ck, "llama-small", seq=8)
        tok = Tokenizer.from_file(os.path.join(ck, "tokenizer.json"))
        ids = tok.encode("hello").ids
        self.assertLess(len(ids), 8)
        p = self.kiln_run(plan, "--prompt", "hello", "--max-new-tokens", "50", "--ignore-eos")
        self.assertEqual(p.returncode, 5, p.stderr)
        generated = 8 - len(ids) + 1
        self.assertIn(f"stopped: the KV cache is full (8 positions: {len(ids)} prompt + {generated - 1} "
                      f"decoded; compile with a larger --max-seq) after {generated} token(s)", p.stderr)
        expected, _ = greedy_reference(ck, ids, generated)
        self.assertEqual(p.stdout, tok.decode(expected, skip_special_tokens=True) + "\n")
        # A prompt longer than the plan takes is bad input.
        p = self.kiln_run(plan, "--prompt", "hello world, this is a tiny tokenizer for tests")
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn("the plan takes 1 to 8", p.stderr)

    def test_sampling_is_reproducible(self):
        plan = self.compile(self.ckpts["deepseek_v3"], "ds-sample")
        args = ["--prompt", PROMPT, "--max-new-tokens", "12", "--ignore-eos", "--temperature", "1.5",
                "--top-k", "40", "--top-p", "0.95"]
        a = self.kiln_run(plan, *args, "--seed", "7")
        b = self.kiln_run(plan, *args, "--seed", "7")
        c = self.kiln_run(plan, *args, "--seed", "8")
        for p in (a, b, c):
            self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(a.stdout, b.stdout)
        self.assertNotEqual(a.stdout, c.stdout)
        # Temperature 0 is greedy whatever the seed.
        g1 = self.kiln_run(plan, "--prompt", PROMPT, "--max-new-tokens", "6", "--ignore-eos",
                           "--temperature", "0", "--seed", "1")
        g2 = self.kiln_run(plan, "--prompt", PROMPT, "--max-new-tokens", "6", "--ignore-eos")
        self.assertEqual(g1.stdout, g2.stdout)

    def test_generate_batch_matches_reference(self):
        # --generate through the API, batch 2: each row the reference's greedy tokens.
        ck = self.ckpts["llama"]
        plan = self.compile(ck, "llama-batch", batch=2)
        rng = np.random.default_rng(11)
        prompt = rng.integers(3, 128, size=(2, 5)).astype(np.int32)
        path = os.path.join(self.tmp, "batch.npy")
        np.save(path, prompt)
        p = self.kiln_run(plan, "--generate", "5", "--input", f"tokens={path}", "--ignore-eos")
        self.assertEqual(p.returncode, 0, p.stderr)
        for b in range(2):
            expected, margin = greedy_reference(ck, list(prompt[b]), 5)
            self.assertGreater(margin, MIN_MARGIN)
            self.assertIn("generated[%d]: %s\n" % (b, " ".join(map(str, expected))), p.stdout)
        m = re.search(r"median ([0-9.]+) ms/step \(one token per row\), ([0-9.]+) tokens/s per row, "
                      r"([0-9.]+) tokens/s over 2 rows", p.stderr)
        self.assertIsNotNone(m, p.stderr)
        median, per_row, total = map(float, m.groups())
        assert_rate_from_median(self, per_row, median)
        assert_rate_from_median(self, total, median, rows=2)


if __name__ == "__main__":
    unittest.main()
