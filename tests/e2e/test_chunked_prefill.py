"""Chunked prefill: a plan whose context (--max-seq) is longer than its
--prefill-chunk takes prompts of up to the whole context through `forward`
(the first chunk, from position 0) and `extend` (each next chunk at its
position), so its activations are sized by the chunk and its arena by the
cache.

Checked here, on all four families:
- the plan's functions and shapes (forward [B, C], extend [B, C] + position,
  decode), and which MLA form each uses (naive over the cache's prefix in
  forward at batch 1, absorbed in extend);
- prompts of one chunk, a chunk and one token, several chunks with a short
  last one, and the whole context, prefilled as generation does (kiln-run
  --prefill): the last position's logits against the float64 reference
  (fp32 compute, f32 caches: rel L2 <= 1e-4, as test_request_work.py); and
  greedy generation after a chunked prefill gives the tokens an unchunked
  plan of the same context gives;
- extend's position range follows the tokens a call gives: position + given
  <= capacity is accepted, one more is refused with an error naming the
  limit, before any kernel runs;
- bad --prefill-chunk values are compile errors naming the flag.

The full DeepSeek-V3 memory figures (arena against cache at 163840 tokens)
are in docs/benchmarks.md; a scaled check of the same property is here.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os
import re

import numpy as np

from kilntest import TokensCase, run, tool  # noqa: E402
import hf_reference as ref  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

CASES = [("deepseek_v3", None), ("deepseek_v2", "group_limited_greedy"), ("llama", None),
         ("mixtral", None)]
RTOL_L2 = 1e-4
CAPACITY, CHUNK = 24, 8


def functions(info):
    """name -> (inputs, outputs, launches) of every function of a plan."""
    out = {"forward": (info["inputs"], info["outputs"], info["launches"])}
    for f in info["functions"]:
        out[f["name"]] = (f["inputs"], f["outputs"], f["launches"])
    return out


class ChunkedPrefill(TokensCase):
    PREFIX = "kiln-chunked-"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ckpts, cls.plans = {}, {}
        for family, variant in CASES:
            ck = os.path.join(cls.tmp, family)
            mk.make_checkpoint(family, ck, variant=variant)
            cls.ckpts[family] = ck
            for batch in (1, 2):
                plan = f"{ck}.b{batch}.kplan"
                run([tool("kiln-compile"), ck, "-o", plan, f"--max-batch={batch}",
                     f"--max-seq={CAPACITY}", f"--prefill-chunk={CHUNK}", "--kv-cache-dtype=f32"])
                cls.plans[family, batch] = plan

    def inspect(self, plan):
        return json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)

    def prefill(self, plan, tokens):
        path = os.path.join(self.tmp, "prompt.npy")
        out = os.path.join(self.tmp, "last.npy")
        np.save(path, tokens)
        p = run([tool("kiln-run"), plan, "--prefill", out, "--input", f"tokens={path}"])
        calls = int(re.search(r"in (\d+) call", p.stdout).group(1))
        return np.load(out), calls

    def test_functions_and_shapes(self):
        for family, _ in CASES:
            for batch in (1, 2):
                with self.subTest(family=family, batch=batch):
                    fns = functions(self.inspect(self.plans[family, batch]))
                    self.assertEqual(set(fns), {"forward", "extend", "decode"})
                    ins = {n: {i["name"]: i["shape"] for i in fns[n][0]} for n in fns}
                    self.assertEqual(ins["forward"], {"tokens": [batch, CHUNK]})
                    self.assertEqual(ins["extend"], {"tokens": [batch, CHUNK], "position": [batch]})
                    self.assertEqual(ins["decode"], {"tokens": [batch, 1], "position": [batch]})
                    if family.startswith("deepseek"):
                        # MLA kernels: mla_naive_s..., or absorbed mla_s...
                        forms = {n: {("naive" if l["kernel"].startswith("mla_naive") else "absorbed")
                                     for l in fns[n][2] if l["kernel"].startswith("mla_")}
                                 for n in fns}
                        # Naive over the first CHUNK cache rows at batch 1 (a
                        # prefix view), absorbed where keys reach further.
                        self.assertEqual(forms["forward"], {"naive" if batch == 1 else "absorbed"}, forms)
                        self.assertEqual(forms["extend"], {"absorbed"}, forms)
                        self.assertEqual(forms["decode"], {"absorbed"}, forms)

    def test_prefill_in_chunks_matches_the_reference(self):
        rng = np.random.default_rng(21)
        for family, _ in CASES:
            ck = self.ckpts[family]
            for batch in (1, 2):
                for length, calls in ((CHUNK, 1), (CHUNK + 1, 2), (19, 3), (CAPACITY, 3)):
                    with self.subTest(family=family, batch=batch, length=length):
                        tokens = rng.integers(0, 128, size=(batch, length)).astype(np.int32)
                        got, n = self.prefill(self.plans[family, batch], tokens)
                        self.assertEqual(n, calls)
                        self.assertEqual(got.shape, (batch, 128))
                        want = ref.forward(ck, tokens)[:, -1]
                        err = ref.rel_l2(got, want)
                        self.assertLessEqual(err, RTOL_L2, f"{family} [{batch}, {length}]: rel L2 {err:.2e}")

    def test_generation_after_chunks_equals_an_unchunked_plan(self):
        tokens = np.random.default_rng(4).integers(0, 128, size=(1, 19)).astype(np.int32)
        path = os.path.join(self.tmp, "gen-prompt.npy")
        np.save(path, tokens)
        for family, _ in CASES:
            with self.subTest(family=family):
                whole = self.ckpts[family] + ".whole.kplan"
                run([tool("kiln-compile"), self.ckpts[family], "-o", whole, f"--max-seq={CAPACITY}",
                     "--kv-cache-dtype=f32"])
                self.assertNotIn("extend", functions(self.inspect(whole)))
                outs = [run([tool("kiln-run"), plan, "--generate", "5", "--ignore-eos", "--input",
                             f"tokens={path}"]).stdout
                        for plan in (self.plans[family, 1], whole)]
                gen = [re.findall(r"generated\[0\]: (.*)", o) for o in outs]
                self.assertTrue(gen[0], outs[0])
                self.assertEqual(gen[0], gen[1])

    def test_extend_position_follows_the_tokens_given(self):
        plan = self.plans["llama", 1]
        for given, position, ok in ((5, CAPACITY - 5, True), (5, CAPACITY - 4, False),
                                    (CHUNK, CAPACITY - CHUNK, True), (CHUNK, CAPACITY - CHUNK + 1, False),
                                    (1, CAPACITY - 1, True), (1, CAPACITY, False)):
            with self.subTest(given=given, position=position):
                tpath = os.path.join(self.tmp, "ext-tokens.npy")
                ppath = os.path.join(self.tmp, "ext-pos.npy")
                np.save(tpath, np.ones((1, given), np.int32))
                np.save(ppath, np.array([position], np.int32))
                p = run([tool("kiln-run"), plan, "--function", "extend", "--input", f"tokens={tpath}",
                         "--input", f"position={ppath}"], check=False)
                if ok:
                    self.assertEqual(p.returncode, 0, p.stderr)
                else:
                    self.assertEqual(p.returncode, 3, p.stderr)
                    self.assertIn("input 'position' row 0: value", p.stderr)
                    self.assertIn(f"[0, {CAPACITY - given}]", p.stderr)

    def test_bad_chunk_values_are_compile_errors(self):
        ck = self.ckpts["llama"]
        for chunk in (CAPACITY + 1, -3):
            with self.subTest(chunk=chunk):
                p = run([tool("kiln-compile"), ck, "-o", os.path.join(self.tmp, "bad.kplan"),
                         f"--max-seq={CAPACITY}", f"--prefill-chunk={chunk}"], check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn("--prefill-chunk", p.stderr)
                self.assertFalse(os.path.exists(os.path.join(self.tmp, "bad.kplan")))

    def test_arena_follows_the_chunk_not_the_context(self):
        """A long context compiled with a short chunk: the arena (above the
        caches) stays what the chunk needs, while an unchunked plan's grows
        with the context."""
        ck = os.path.join(self.tmp, "long-ds")
        mk.make_checkpoint("deepseek_v3", ck, overrides={"max_position_embeddings": 8192})
        sizes = {}
        for name, flags in (("chunked", ["--prefill-chunk=256"]), ("whole", ["--prefill-chunk=8192"])):
            plan = f"{ck}.{name}.kplan"
            run([tool("kiln-compile"), ck, "-o", plan, "--max-seq=8192", *flags])
            mem = self.inspect(plan)["memory"]
            sizes[name] = (mem["arena_bytes"], mem["state_bytes"])
        (chunked, state), (whole, state2) = sizes["chunked"], sizes["whole"]
        self.assertEqual(state, state2)
        self.assertLess(chunked - state, state, sizes)  # dominated by the cache
        self.assertLess(chunked * 4, whole, sizes)


if __name__ == "__main__":
    import unittest
    unittest.main()
