"""The request decides the work: a plan compiled for --max-batch x --max-seq
runs only the tokens a request gives. Token-major launches (kiln-inspect
marks them) run the programs of the given batch rows and positions, and the
MoE routing routes and permutes only those tokens; the logits of every
shape a request may take match the float64 reference, both every position's
(--logits=all) and, by default, each row's last given position's.

Speed (prefill time against prompt length on one plan) is measured in
docs/benchmarks.md, not here.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os

import numpy as np

from kilntest import TokensCase, run, tool  # noqa: E402
import hf_reference as ref  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

CASES = [("deepseek_v3", None), ("deepseek_v2", "group_limited_greedy"), ("llama", None),
         ("mixtral", None)]
RTOL_L2 = 1e-4  # fp32 compute (f32 caches) against float64


class RequestWork(TokensCase):
    BATCH, SEQ, PREFIX = 3, 8, "kiln-request-"
    COMPILE_FLAGS = ("--kv-cache-dtype=f32",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.plans, cls.last_plans = {}, {}
        for family, variant in CASES:
            ck = os.path.join(cls.tmp, family)
            mk.make_checkpoint(family, ck, variant=variant)
            for logits, plans in (("all", cls.plans), ("last", cls.last_plans)):
                plan = f"{ck}.{logits}.kplan"
                run([tool("kiln-compile"), ck, "-o", plan, f"--max-batch={cls.BATCH}",
                     f"--max-seq={cls.SEQ}", f"--logits={logits}", *cls.COMPILE_FLAGS])
                plans[family] = (ck, plan)

    def test_every_request_shape_matches_the_reference(self):
        rng = np.random.default_rng(11)
        for family, _ in CASES:
            ck, plan = self.plans[family]
            for rows, seq in ((1, 1), (1, 5), (2, 3), (3, 8), (3, 1), (2, 8)):
                with self.subTest(family=family, rows=rows, seq=seq):
                    tokens = rng.integers(0, 128, size=(rows, seq)).astype(np.int32)
                    path = os.path.join(self.tmp, f"t-{family}-{rows}x{seq}.npy")
                    np.save(path, tokens)
                    want = ref.forward(ck, tokens)
                    logits = self.run_forward(plan, path)
                    self.assertEqual(logits.shape, (rows, seq, 128))
                    err = ref.rel_l2(logits, want)
                    self.assertLessEqual(err, RTOL_L2, f"{family} [{rows}, {seq}]: rel L2 {err:.2e}")
                    last = self.run_forward(self.last_plans[family][1], path)
                    self.assertEqual(last.shape, (rows, 128))
                    err = ref.rel_l2(last, want[:, -1])
                    self.assertLessEqual(err, RTOL_L2, f"{family} last [{rows}, {seq}]: rel L2 {err:.2e}")

    def test_last_position_logits_by_default(self):
        """Without --logits the plan returns [batch, vocab] from forward and
        decode and computes the LM head for one row per batch row: with a
        32k vocabulary, every position's logits would be 4x its whole arena."""
        vocab, batch, seq = 32768, 2, 256
        for family, variant in CASES:
            with self.subTest(family=family):
                ck = os.path.join(self.tmp, f"vocab-{family}")
                mk.make_checkpoint(family, ck, variant=variant, overrides={"vocab_size": vocab})
                plan = ck + ".kplan"
                run([tool("kiln-compile"), ck, "-o", plan, f"--max-batch={batch}", f"--max-seq={seq}"])
                info = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
                [logits] = [o for o in info["outputs"] if o["name"] == "logits"]
                self.assertEqual(logits["shape"], [batch, vocab])
                [dec] = [f for f in info["functions"] if f["name"] == "decode"]
                [dlogits] = [o for o in dec["outputs"] if o["name"] == "logits"]
                self.assertEqual(dlogits["shape"], [batch, vocab])
                heads = [l for l in info["launches"] if "lm_head" in l.get("location", "")]
                self.assertTrue(heads, info["launches"])
                self.assertLess(info["memory"]["arena_bytes"], batch * seq * vocab * 4 / 4)
                tokens = np.random.default_rng(5).integers(0, 128, size=(batch, 5)).astype(np.int32)
                path = os.path.join(self.tmp, f"vocab-{family}.npy")
                np.save(path, tokens)
                got = self.run_forward(plan, path)
                want = ref.forward(ck, tokens, kv_cache_dtype="bf16")[:, -1]
                err = ref.rel_l2(got, want)
                self.assertLessEqual(err, RTOL_L2, f"{family}: rel L2 {err:.2e}")

    def test_token_major_launches_are_marked(self):
        for family, _ in CASES:
            with self.subTest(family=family):
                info = json.loads(run([tool("kiln-inspect"), self.plans[family][1], "--json"]).stdout)
                fns = [("forward", info["launches"], self.SEQ)] + [
                    (f["name"], f["launches"], 1) for f in info["functions"]]
                for name, launches, seq in fns:
                    marked = [l for l in launches if "tokens" in l]
                    for l in marked:
                        t = l["tokens"]
                        self.assertEqual((t["max_batch"], t["max_seq"]), (self.BATCH, seq), l)
                        self.assertEqual(t["per_token"] * self.BATCH * seq, l["programs"], l)
                    # Everything but the experts' grouped GEMMs (over the
                    # layout's blocks) follows the request.
                    rest = {l["kernel"].split("_")[0] for l in launches if "tokens" not in l}
                    self.assertLessEqual(rest, {"moe"}, (name, rest))
                    routes = [l for l in launches if l["kernel"].startswith("moe_route")]
                    for l in routes:
                        self.assertEqual(l["tokens"]["tokens_scalar"], 1)
                        self.assertEqual(l["tokens"]["seq_scalar"], 2)


    def test_gpu_launch_geometry_follows_each_launch(self):
        """sm_90a: each launch's block comes from its own work, so a decode
        launch of a few hundred programs spreads over the SMs (two blocks
        per SM of an H100/H200 when the work allows, warps otherwise)."""
        ck = os.path.join(self.tmp, "gpu-ckpt")
        mk.make_checkpoint("deepseek_v3", ck, overrides={"max_position_embeddings": 4096})
        plan = os.path.join(self.tmp, "gpu.kplan")
        run([tool("kiln-compile"), ck, "-o", plan, "--target=sm_90a,cpu", "--max-batch=1",
             "--max-seq=4096"])
        info = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
        launches = info["launches"] + [l for f in info["functions"] for l in f["launches"]]
        blocks = set()
        for l in launches:
            block, programs = l["block_x"], l["programs"]
            blocks.add(block)
            ctas = -(-programs // block)
            self.assertIn(block, (32, 64, 128, 256), l)
            # As many blocks as 2 per SM allows, else one warp per block.
            self.assertTrue(ctas >= 2 * 132 or block == 32, l)
            if block > 32:
                self.assertLess(-(-programs // (2 * block)), 2 * 132, l)
        self.assertIn(32, blocks)  # decode
        self.assertGreater(len(blocks), 1)  # and larger blocks for the prefill

    def test_defaults_fit_a_real_prompt(self):
        """Without --max-batch/--max-seq a checkpoint compiles for batch 1
        and its config's context, at most 4096 tokens; an input beyond the
        plan's limits is refused naming the flag to change."""
        for max_pos, want in ((256, 256), (8192, 4096)):
            with self.subTest(max_position_embeddings=max_pos):
                ck = os.path.join(self.tmp, f"ctx{max_pos}")
                mk.make_checkpoint("llama", ck, overrides={"max_position_embeddings": max_pos})
                plan = ck + ".kplan"
                run([tool("kiln-compile"), ck, "-o", plan])
                info = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
                [tokens] = [i for i in info["inputs"] if i["name"] == "tokens"]
                self.assertEqual(tokens["shape"], [1, want])
        _, plan = self.plans["llama"]
        for shape, flag in (((1, self.SEQ + 1), f"--max-seq (the plan has --max-seq {self.SEQ})"),
                            ((self.BATCH + 1, 2), f"--max-batch (the plan has --max-batch {self.BATCH})")):
            with self.subTest(shape=shape):
                path = os.path.join(self.tmp, "too-big.npy")
                np.save(path, np.ones(shape, np.int32))
                p = run([tool("kiln-run"), plan, "--input", f"tokens={path}"], check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn(f"compile with a larger {flag}", p.stderr)


if __name__ == "__main__":
    import unittest
    unittest.main()
