"""The KV caches' dtype (kiln-compile --kv-cache-dtype, bf16 by default):
what a plan computes with a bf16 cache is exactly the float64 reference with
the cached keys and values (MLA: the normalized latent and the rotated rope
key) rounded to bf16; the cache takes half the bytes of an f32 one; decode
through it agrees with prefill; f32 on request. fp8 (MLA models): the
reference with the latent quantized as the FP8 latent cache holds it (e4m3
under one power-of-two scale per token, no subnormal codes) and the rope key
bf16, in the absorbed and the naive form, fused and not; 1 + 4 / rank +
rope / rank bytes per latent value instead of 2 (bf16); a GQA model is
refused.

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


class KVCache(TokensCase):
    PREFIX = "kiln-kvcache-"

    def checkpoint(self, family, variant, layers=None):
        d = os.path.join(self.tmp, f"{family}-{variant}-{layers}")
        if not os.path.exists(d):
            mk.make_checkpoint(family, d, variant=variant,
                               overrides={"num_hidden_layers": layers} if layers else None)
        return d

    def plan(self, ckpt, dtype, extra=()):
        plan = os.path.join(self.tmp, f"{os.path.basename(ckpt)}-{dtype}{''.join(extra)}.kplan")
        run([tool("kiln-compile"), ckpt, "-o", plan, f"--max-batch={self.BATCH}",
             f"--max-seq={self.SEQ}", "--logits=all",
             *([f"--kv-cache-dtype={dtype}"] if dtype else []), *extra])
        return plan

    def test_one_layer_is_the_reference_with_a_rounded_cache(self):
        """One layer: the values cached are the same f32 numbers in Kiln and
        (to 1e-7) in the reference, so rounding them agrees element by
        element and the logits agree to fp32 accuracy."""
        for family, variant in CASES:
            with self.subTest(family=family):
                ck = self.checkpoint(family, variant, layers=1)
                bf16 = self.run_forward(self.plan(ck, None))  # the default
                f32 = self.run_forward(self.plan(ck, "f32"))
                exact = ref.forward(ck, self.tokens)
                rounded = ref.forward(ck, self.tokens, kv_cache_dtype="bf16")
                self.assertLessEqual(ref.rel_l2(bf16, rounded), 1e-5)
                self.assertLessEqual(ref.rel_l2(f32, exact), 1e-5)
                # The tests can tell the two apart: bf16 rounding moves the
                # logits by far more than the tolerance.
                self.assertGreater(ref.rel_l2(bf16, exact), 2e-4)

    def test_layers_stay_within_bf16_rounding(self):
        """Over several layers, fp32-level differences flip the rounding of a
        few cached elements, which later layers amplify: the bound is looser
        but still well below the cache's own rounding effect."""
        for family, variant in CASES:
            with self.subTest(family=family):
                ck = self.checkpoint(family, variant)
                bf16 = self.run_forward(self.plan(ck, "bf16"))
                rounded = ref.forward(ck, self.tokens, kv_cache_dtype="bf16")
                exact = ref.forward(ck, self.tokens)
                self.assertLessEqual(ref.rel_l2(bf16, rounded), 1e-3)
                self.assertLess(ref.rel_l2(bf16, rounded), ref.rel_l2(bf16, exact) / 3)

    def test_bf16_cache_takes_half_the_bytes(self):
        for family, variant in CASES:
            with self.subTest(family=family):
                ck = self.checkpoint(family, variant)
                with open(os.path.join(ck, "config.json")) as f:
                    cfg = json.load(f)
                layers = cfg["num_hidden_layers"]
                if family.startswith("deepseek"):  # the latent and the rope key
                    per_token = layers * (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"])
                else:  # K and V of every KV head
                    per_token = layers * 2 * cfg["num_key_value_heads"] * cfg["head_dim"]
                state = {}
                for dtype, size, name in (("bf16", 2, "bfloat16"), ("f32", 4, "float32")):
                    plan = self.plan(ck, dtype)
                    info = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
                    state[dtype] = info["memory"]["state_bytes"]
                    # kiln-inspect reports the caches' dtype and bytes per token.
                    self.assertEqual(info["memory"]["cache_dtype"], name)
                    self.assertEqual(info["memory"]["cache_bytes_per_token"], per_token * size)
                    for c in info["memory"]["caches"]:
                        self.assertEqual(c["shape"][:2], [self.BATCH, self.SEQ], c)
                    text = run([tool("kiln-inspect"), plan]).stdout
                    self.assertIn(f"{name}, ", text)
                    self.assertIn(f"capacity {self.BATCH} x {self.SEQ} tokens", text)
                # Each cache buffer is 256-byte aligned (two per layer, plus
                # the MoE routing counters).
                self.assertLessEqual(abs(2 * state["bf16"] - state["f32"]), layers * 4 * 256 * 2,
                                     state)

    def test_decode_through_a_bf16_cache_matches_prefill(self):
        for family, variant in CASES:
            with self.subTest(family=family):
                plan = self.plan(self.checkpoint(family, variant), "bf16")
                prefill = self.run_forward(plan)
                out = os.path.join(self.tmp, f"decode-{family}.npy")
                run([tool("kiln-run"), plan, "--input", f"tokens={self.tokens_path}",
                     "--decode-each", out])
                self.assertLessEqual(ref.rel_l2(np.load(out), prefill), 1e-5)

    def test_fp8_latent_cache_is_the_reference_with_a_quantized_latent(self):
        """MLA over the FP8 latent cache against the float64 reference whose
        latent is quantized the same way (fp8_reference.latent_cache) and
        whose rope key is rounded to bf16: one layer and all of them, each
        MLA form, fused and not. The quantization moves the logits far more
        than the tolerance, and the plan agrees with its own decode."""
        for family, variant in CASES[:2]:
            for layers in (1, None):
                ck = self.checkpoint(family, variant, layers=layers)
                quantized = ref.forward(ck, self.tokens, kv_cache_dtype="fp8")
                bf16 = ref.forward(ck, self.tokens, kv_cache_dtype="bf16")
                for extra in (("--mla-form=absorbed",), ("--mla-form=naive",),
                              ("--mla-form=absorbed", "--no-fuse")):
                    with self.subTest(family=family, layers=layers, flags=extra):
                        plan = self.plan(ck, "fp8", extra)
                        got = self.run_forward(plan)
                        # The values quantized are the same f32 numbers in Kiln
                        # and (to ~1e-7) in the reference (seen: 2e-7 for one
                        # layer, 2e-6 for all); an e4m3 code whose value lay
                        # that close to a rounding boundary would flip and move
                        # the logits by up to ~1e-5 here, within the bound. The
                        # cache's own effect is 2e-2 per layer (0.4 over all).
                        err = ref.rel_l2(got, quantized)
                        self.assertLessEqual(err, 2e-5 if layers else 2e-4)
                        self.assertLess(err, ref.rel_l2(bf16, quantized) / 100)
                        out = plan + ".decode.npy"
                        run([tool("kiln-run"), plan, "--input", f"tokens={self.tokens_path}",
                             "--decode-each", out])
                        self.assertLessEqual(ref.rel_l2(np.load(out), got), 1e-5)

    def test_fp8_latent_cache_bytes(self):
        """Per token and layer: rank e4m3 bytes, one f32 scale and the rope
        key in bf16 (644 bytes at DeepSeek-V3's shape against 1152 in bf16);
        kiln-inspect names each cache's dtype."""
        ck = self.checkpoint("deepseek_v3", None)
        with open(os.path.join(ck, "config.json")) as f:
            cfg = json.load(f)
        layers = cfg["num_hidden_layers"]
        info = json.loads(run([tool("kiln-inspect"), self.plan(ck, "fp8"), "--json"]).stdout)
        per_layer = cfg["kv_lora_rank"] + 4 + 2 * cfg["qk_rope_head_dim"]
        self.assertEqual(info["memory"]["cache_bytes_per_token"], layers * per_layer)
        kinds = {(c["name"].rsplit(".", 1)[-1], c["dtype"]) for c in info["memory"]["caches"]}
        self.assertEqual(kinds, {("kv_latent_cache", "float8_e4m3"),
                                 ("kv_latent_scale_cache", "float32"),
                                 ("k_rope_cache", "bfloat16")})

    def refused(self, dtype):
        """kiln-compile of the llama checkpoint with --kv-cache-dtype=`dtype`,
        which must fail without writing a plan."""
        out = os.path.join(self.tmp, "x.kplan")
        p = run([tool("kiln-compile"), self.checkpoint("llama", None), "-o", out,
                 f"--kv-cache-dtype={dtype}"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertFalse(os.path.exists(out))
        return p

    def test_fp8_cache_needs_mla(self):
        p = self.refused("fp8")
        self.assertIn("--kv-cache-dtype=fp8", p.stderr)
        self.assertIn("GQA", p.stderr)

    def test_unknown_dtype_is_a_usage_error(self):
        p = self.refused("f8")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--kv-cache-dtype=f8", p.stderr)

if __name__ == "__main__":
    import unittest
    unittest.main()
