"""End-to-end tests of Hugging Face checkpoints: tiny random checkpoints of
every supported family are compiled by kiln-compile, run by kiln-run on the
CPU and compared with the independent float64 numpy reference
(hf_reference.py). Also: decode against the KV cache, greedy generation,
bad checkpoints, and the full DeepSeek-V3 graph from its config alone.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os
import shutil
import sys
import tempfile
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilntest import SRC, TokensCase, run, tool, write_tensors  # noqa: E402
import hf_reference as ref  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

# fp32 compute (weights upcast) against float64: the bound.
RTOL_L2 = 1e-4
BATCH, SEQ = 2, 6
CASES = [
    ("deepseek_v3", None),
    ("deepseek_v2", "group_limited_greedy"),
    ("deepseek_v2", "greedy"),
    ("llama", None),
    ("mixtral", None),
]


class Families(TokensCase):
    BATCH, SEQ, PREFIX = BATCH, SEQ, "kiln-hf-"
    COMPILE_FLAGS = ("--kv-cache-dtype=f32",)

    def checkpoint(self, family, variant=None, dtype="f32", shards=1, seed=0):
        name = f"{family}-{variant}-{dtype}-{shards}-{seed}"
        d = os.path.join(self.tmp, name)
        if not os.path.exists(d):
            mk.make_checkpoint(family, d, dtype=dtype, shards=shards, seed=seed, variant=variant)
        return d

    def test_prefill_matches_reference(self):
        for family, variant in CASES:
            with self.subTest(family=family, variant=variant):
                ck = self.checkpoint(family, variant)
                logits = self.run_forward(self.compile(ck))
                expected = ref.forward(ck, self.tokens)
                self.assertEqual(logits.shape, (BATCH, SEQ, 128))
                err = ref.rel_l2(logits, expected)
                self.assertLessEqual(err, RTOL_L2, f"{family}/{variant}: rel L2 {err:.2e}")

    def test_fused_matches_unfused(self):
        for family, variant in CASES:
            with self.subTest(family=family, variant=variant):
                ck = self.checkpoint(family, variant)
                fused_plan = self.compile(ck)
                unfused_plan = ck + "-nofuse.kplan"
                run([tool("kiln-compile"), ck, "-o", unfused_plan, f"--max-batch={BATCH}",
                     f"--max-seq={SEQ}", "--no-fuse", "--logits=all", *self.COMPILE_FLAGS])
                count = lambda plan: len(json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)["launches"])
                self.assertLess(count(fused_plan), count(unfused_plan))
                fused, unfused = self.run_forward(fused_plan), self.run_forward(unfused_plan)
                # Same arithmetic, other summation order in the epilogues.
                self.assertLessEqual(ref.rel_l2(fused, unfused), 1e-6)

    def test_bf16_and_sharded_checkpoints(self):
        for family, variant in [("deepseek_v3", None), ("mixtral", None)]:
            with self.subTest(family=family):
                ck = self.checkpoint(family, variant, dtype="bf16", shards=3)
                self.assertTrue(os.path.exists(os.path.join(ck, "model.safetensors.index.json")))
                logits = self.run_forward(self.compile(ck))
                # The reference reads the same bf16 values, upcast to float64.
                err = ref.rel_l2(logits, ref.forward(ck, self.tokens))
                self.assertLessEqual(err, RTOL_L2, f"{family} bf16: rel L2 {err:.2e}")

    def test_decode_matches_prefill(self):
        for family, variant in [("deepseek_v3", None), ("llama", None), ("mixtral", None)]:
            with self.subTest(family=family):
                ck = self.checkpoint(family, variant)
                plan = self.compile(ck)
                prefill = self.run_forward(plan)
                # Decode the same sequence one token at a time through the
                # KV cache, in one session (kiln-run --decode-steps).
                out = os.path.join(self.tmp, f"decode-{family}.npy")
                p = run([tool("kiln-run"), plan, "--input", f"tokens={self.tokens_path}",
                         "--decode-each", out], check=False)
                self.assertEqual(p.returncode, 0, p.stderr)
                steps = np.load(out)
                self.assertEqual(steps.shape, prefill.shape)
                err = ref.rel_l2(steps, prefill)
                self.assertLessEqual(err, 1e-5, f"{family}: decode vs prefill rel L2 {err:.2e}")

    def test_mla_cache_is_latent(self):
        ck = self.checkpoint("deepseek_v3")
        plan = self.compile(ck)
        data = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
        with open(os.path.join(ck, "config.json")) as f:
            cfg = json.load(f)
        per_token = cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]
        state = data["memory"]["state_bytes"]
        # fp32 cache, 256-byte aligned buffers: at least the latent size and
        # far below full per-head K and V.
        latent = cfg["num_hidden_layers"] * BATCH * SEQ * per_token * 4
        full_kv = cfg["num_hidden_layers"] * BATCH * SEQ * cfg["num_attention_heads"] * (
            cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"] + cfg["v_head_dim"]) * 4
        self.assertGreaterEqual(state, latent)
        self.assertLess(state, latent + cfg["num_hidden_layers"] * 2 * 256)
        self.assertLess(state, full_kv)

    def test_generate(self):
        ck = self.checkpoint("deepseek_v3")
        plan = self.compile(ck)
        prompt = os.path.join(self.tmp, "prompt.npy")
        np.save(prompt, self.tokens[:, :3])
        p = run([tool("kiln-run"), plan, "--input", f"tokens={prompt}", "--generate", "3"])
        lines = [l for l in p.stdout.splitlines() if l.startswith("generated[")]
        self.assertEqual(len(lines), BATCH, p.stdout)
        # Greedy tokens must follow the reference's argmax.
        seq = self.tokens[:, :3].copy()
        for _ in range(3):
            nxt = ref.forward(ck, seq)[:, -1].argmax(-1)
            seq = np.concatenate([seq, nxt[:, None].astype(np.int32)], axis=1)
        for b in range(BATCH):
            got = [int(t) for t in lines[b].split(":", 1)[1].split()]
            self.assertEqual(got, list(seq[b, 3:]), lines[b])

    def test_weights_referenced_and_changed_file_detected(self):
        ck = self.checkpoint("llama", seed=7)
        plan = self.compile(ck)
        self.assertLess(os.path.getsize(plan), os.path.getsize(os.path.join(ck, "model.safetensors")))
        packed = ck + "-packed.kplan"
        run([tool("kiln-compile"), ck, "-o", packed, f"--max-batch={BATCH}",
             f"--max-seq={SEQ}", "--embed-weights", "--logits=all", *self.COMPILE_FLAGS])
        np.testing.assert_array_equal(self.run_forward(packed), self.run_forward(plan))
        with open(os.path.join(ck, "model.safetensors"), "r+b") as f:
            f.seek(-2, 2)
            f.write(b"\x7f\x7f")
        p = run([tool("kiln-run"), plan, "--input", f"tokens={self.tokens_path}"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("changed", p.stderr)
        self.assertIn("model.safetensors", p.stderr)

    def test_smaller_batch_and_sequence(self):
        """--max-batch/--max-seq bound the input: fewer rows and positions are
        padded by the runtime and the logits sliced to match."""
        ck = self.checkpoint("deepseek_v3")
        plan = self.compile(ck)
        tokens = self.tokens[:1, :4].copy()
        path = os.path.join(self.tmp, "small.npy")
        np.save(path, tokens)
        logits = self.run_forward(plan, path)
        self.assertEqual(logits.shape, (1, 4, 128))
        self.assertLessEqual(ref.rel_l2(logits, ref.forward(ck, tokens)), RTOL_L2)

    def test_input_bounds(self):
        plan = self.compile(self.checkpoint("llama"))
        big = os.path.join(self.tmp, "big.npy")
        np.save(big, np.zeros((BATCH, SEQ + 1), np.int32))
        p = run([tool("kiln-run"), plan, "--input", f"tokens={big}"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"[{BATCH}, {SEQ}]", p.stderr)
        self.assertIn("may be smaller", p.stderr)


class BadCheckpoints(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-hfbad-")
        self.ck = os.path.join(self.tmp, "ck")
        mk.make_checkpoint("deepseek_v3", self.ck)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def compile(self):
        out = os.path.join(self.tmp, "p.kplan")
        p = run([tool("kiln-compile"), self.ck, "-o", out, "--max-seq=4"], check=False)
        self.assertFalse(os.path.exists(out) and p.returncode != 0, "partial plan left behind")
        return p

    def edit_config(self, **changes):
        path = os.path.join(self.ck, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        for k, v in changes.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        with open(path, "w") as f:
            json.dump(cfg, f)

    def rewrite_tensor(self, name, arr=None):
        """Rewrites the checkpoint without `name` (arr None) or with a new value."""
        tensors = ref.read_safetensors_dir(self.ck)
        raw = {k: v.astype(np.float32) for k, v in tensors.items()}
        if arr is None:
            raw.pop(name)
        else:
            raw[name] = arr
        write_tensors(os.path.join(self.ck, "model.safetensors"), list(raw.items()))

    def test_unknown_model_type(self):
        self.edit_config(model_type="gpt2")
        p = self.compile()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("model_type", p.stderr)
        self.assertIn("gpt2", p.stderr)

    def test_missing_config_field(self):
        # An absent field takes DeepseekV3Config's default (kv_lora_rank
        # 512), which this checkpoint's tensors do not have: the compile
        # names the first tensor whose shape disagrees.
        self.edit_config(kv_lora_rank=None)
        p = self.compile()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", p.stderr)
        self.assertIn("shape", p.stderr)

    def test_missing_tensor(self):
        self.rewrite_tensor("model.layers.1.mlp.experts.3.up_proj.weight")
        p = self.compile()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("model.layers.1.mlp.experts.3.up_proj.weight", p.stderr)

    def test_wrong_shape(self):
        self.rewrite_tensor("model.layers.0.self_attn.kv_b_proj.weight", np.zeros((8, 8), np.float32))
        p = self.compile()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("model.layers.0.self_attn.kv_b_proj.weight", p.stderr)
        self.assertIn("shape", p.stderr)

    def test_wrong_dtype(self):
        tensors = ref.read_safetensors_dir(self.ck)
        raw = [(k, v.astype(np.float32)) for k, v in tensors.items()]
        raw = [(k, v.astype(np.int32) if k == "model.norm.weight" else v) for k, v in raw]
        write_tensors(os.path.join(self.ck, "model.safetensors"), raw)
        p = self.compile()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("model.norm.weight", p.stderr)
        self.assertIn("I32", p.stderr)


class Scale(unittest.TestCase):
    """The full DeepSeek-V3 graph compiles from its config alone."""

    def test_deepseek_v3_full_graph(self):
        tmp = tempfile.mkdtemp(prefix="kiln-scale-")
        try:
            src = os.path.join(SRC, "models", "configs", "deepseek-v3")
            counts = {}
            # Layers 3.. are MoE; the last one runs for the last position only.
            for layers in (5, 61):
                d = os.path.join(tmp, f"v3-{layers}")
                os.makedirs(d)
                with open(os.path.join(src, "config.json")) as f:
                    cfg = json.load(f)
                cfg["num_hidden_layers"] = layers
                with open(os.path.join(d, "config.json"), "w") as f:
                    json.dump(cfg, f)
                plan = os.path.join(tmp, f"v3-{layers}.kplan")
                t0 = time.time()
                run([tool("kiln-compile"), d, "--no-weights", "-o", plan, "--target=cpu"])
                elapsed = time.time() - t0
                data = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
                counts[layers] = len(data["kernels"])
                if layers == 61:
                    # Generous bound for a loaded 2-core machine; measured ~2 s.
                    self.assertLess(elapsed, 60)
                    names = [w["name"] for w in data["weights"]["weights"]]
                    self.assertIn("model.layers.60.mlp.experts.255.down_proj.weight", names)
                    p = run([tool("kiln-run"), plan, "--input", "tokens=/dev/null"], check=False)
                    self.assertNotEqual(p.returncode, 0)
            self.assertEqual(counts[5], counts[61])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
