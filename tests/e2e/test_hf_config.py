"""Config import and validation (docs/config.md).

* Both config.json forms -- legacy (top-level rope_theta / rope_scaling) and
  transformers 5's save_pretrained (rope_parameters, class defaults left
  out, DeepSeek-V3's scoring_func / topk_method absent) -- compile to plans
  whose logits match the float64 reference (hf_reference.py).
* The features a config switches on (attention and MLP biases, DeepSeek-V3's
  rope_interleave false, Llama rope scaling) match the reference, and each
  demonstrably changes the model (the reference without it differs).
* Values Kiln does not implement are errors naming the field and its value.
* Bad values (zero, negative, 2^62, 10^9 layers, broken divisibilities,
  models past Kiln's limits) are errors before anything big is built: each
  compile fails in well under a second.

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
from kilntest import TokensCase, run, tool  # noqa: E402
import hf_reference as ref  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

RTOL_L2 = 1e-4  # fp32 compute against float64, as in test_hf.py
BATCH, SEQ = 2, 6
# A feature that changes the model changes the reference logits by far more.
CHANGED = 1e-3
FAIL_FAST_S = 1.0


class Tmp(TokensCase):
    BATCH, SEQ, PREFIX = BATCH, SEQ, "kiln-hfcfg-"
    COMPILE_FLAGS = ("--kv-cache-dtype=f32",)
    count = 0

    def fresh(self, name):
        type(self).count += 1
        return os.path.join(self.tmp, "%s-%d" % (name, self.count))

    def checkpoint(self, family, variant=None, style="legacy", overrides=None):
        d = self.fresh(family)
        mk.make_checkpoint(family, d, variant=variant, style=style, overrides=overrides)
        return d

    def check_against_reference(self, ckpt, what):
        logits = self.run_forward(self.compile(ckpt))
        err = ref.rel_l2(logits, ref.forward(ckpt, self.tokens))
        self.assertLessEqual(err, RTOL_L2, f"{what}: rel L2 {err:.2e}")
        return logits


class ConfigForms(Tmp):
    CASES = [("deepseek_v3", None), ("deepseek_v2", "group_limited_greedy"),
             ("deepseek_v2", "greedy"), ("llama", None), ("mixtral", None)]

    def test_legacy_and_transformers5_forms_match_reference(self):
        for family, variant in self.CASES:
            with self.subTest(family=family, variant=variant):
                legacy = self.checkpoint(family, variant, "legacy")
                tf5 = self.checkpoint(family, variant, "tf5")
                cfg = ref.read_config(tf5)
                # The transformers-5 file is what the issue reports.
                self.assertIn("rope_parameters", cfg)
                self.assertNotIn("rope_theta", cfg)
                self.assertNotIn("rope_scaling", cfg)
                self.assertIn("dtype", cfg)
                if family == "deepseek_v3":
                    self.assertNotIn("scoring_func", cfg)
                    self.assertNotIn("topk_method", cfg)
                    self.assertNotIn("routed_scaling_factor", cfg)  # = the class default
                    self.assertEqual(cfg["rope_parameters"]["rope_type"], "yarn")
                a = self.check_against_reference(legacy, f"{family}/{variant} legacy")
                b = self.check_against_reference(tf5, f"{family}/{variant} tf5")
                self.assertLessEqual(ref.rel_l2(b, a), 1e-6)

    def test_deepseek_v3_defaults_are_the_model(self):
        """What the transformers-5 V3 file leaves out changes the model: with
        the old fallbacks (softmax greedy routing, theta 10000 without YaRN,
        no routed scaling) the reference differs."""
        tf5 = self.checkpoint("deepseek_v3", style="tf5")
        cfg = ref.read_config(tf5)
        W = ref.read_safetensors_dir(tf5)
        good = ref.forward(None, self.tokens, weights=W, config=cfg)
        for wrong in ({"scoring_func": "softmax", "topk_method": "greedy"},
                      {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
                      {"routed_scaling_factor": 1.0}):
            with self.subTest(wrong=wrong):
                bad = ref.forward(None, self.tokens, weights=W, config=dict(cfg, **wrong))
                self.assertGreater(ref.rel_l2(bad, good), CHANGED)

    def test_class_defaults_give_the_full_model(self):
        """A DeepSeek-V3 config.json with only its model_type is
        DeepseekV3Config(): 61 layers, 256 experts from layer 3 on."""
        d = self.fresh("v3-defaults")
        os.makedirs(d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"model_type": "deepseek_v3"}, f)
        plan = d + ".kplan"
        run([tool("kiln-compile"), d, "--no-weights", "-o", plan, "--target=cpu"])
        data = json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)
        names = {w["name"] for w in data["weights"]["weights"]}
        self.assertIn("model.layers.60.mlp.experts.255.down_proj.weight", names)
        self.assertIn("model.layers.3.mlp.gate.e_score_correction_bias", names)
        self.assertIn("model.layers.2.mlp.down_proj.weight", names)
        self.assertNotIn("model.layers.2.mlp.gate.weight", names)
        self.assertIn("model.layers.0.self_attn.q_a_proj.weight", names)


class Features(Tmp):
    """Each case: (family, variant, config overrides, style). The reference
    implements each feature from the model's equations; `off` are the
    overrides that turn it off again, for the check that it matters."""
    CASES = [
        ("llama attention+mlp bias", "llama", None,
         {"attention_bias": True, "mlp_bias": True}, {"attention_bias": False, "mlp_bias": False}),
        ("deepseek_v3 attention bias", "deepseek_v3", None,
         {"attention_bias": True}, {"attention_bias": False}),
        ("deepseek_v2 attention+mlp bias, q_lora", "deepseek_v2", None,
         {"attention_bias": True, "mlp_bias": True, "q_lora_rank": 24},
         {"attention_bias": False, "mlp_bias": False}),
        ("deepseek_v2 attention+mlp bias, no q_lora", "deepseek_v2", "greedy",
         {"attention_bias": True, "mlp_bias": True}, {"attention_bias": False, "mlp_bias": False}),
        ("deepseek_v3 rope_interleave false", "deepseek_v3", None,
         {"rope_interleave": False}, {"rope_interleave": True}),
        ("llama linear rope", "llama", None,
         {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, {"rope_scaling": None}),
        ("llama yarn rope", "llama", None,
         {"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                           "original_max_position_embeddings": 64}}, {"rope_scaling": None}),
    ]

    def test_features_match_reference_and_matter(self):
        for what, family, variant, on, off in self.CASES:
            for style in ("legacy", "tf5"):
                with self.subTest(what=what, style=style):
                    ck = self.checkpoint(family, variant, style, overrides=on)
                    self.check_against_reference(ck, f"{what} ({style})")
                    cfg = ref.read_config(ck)
                    W = ref.read_safetensors_dir(ck)
                    with_it = ref.forward(None, self.tokens, weights=W, config=cfg)
                    cfg_off = dict(cfg, **off)
                    if "rope_scaling" in off:  # the tf5 file has the rope here
                        cfg_off["rope_parameters"] = None
                    without = ref.forward(None, self.tokens, weights=W, config=cfg_off)
                    self.assertGreater(ref.rel_l2(with_it, without), CHANGED, what)

    def test_no_effect_values_are_accepted(self):
        """dynamic NTK rope equals the default below max_position_embeddings;
        a sliding window no shorter than --max-seq masks nothing."""
        for what, family, on in (
                ("dynamic rope", "llama", {"rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}),
                ("sliding_window = --max-seq", "mixtral", {"sliding_window": SEQ}),
                ("sliding_window > --max-seq", "mixtral", {"sliding_window": 4096})):
            with self.subTest(what=what):
                ck = self.checkpoint(family, overrides=on)
                plain = self.checkpoint(family)
                a = self.check_against_reference(ck, what)
                self.assertLessEqual(ref.rel_l2(a, self.run_forward(self.compile(plain))), 1e-6)

    def test_decode_matches_prefill(self):
        """The KV-cache paths (GQA with biased k/v; MLA's absorbed decode
        with the non-interleaved rope in the latent cache write)."""
        for family, on in (("llama", {"attention_bias": True, "mlp_bias": True}),
                           ("deepseek_v3", {"rope_interleave": False, "attention_bias": True})):
            with self.subTest(family=family):
                plan = self.compile(self.checkpoint(family, overrides=on))
                out = plan + ".decode.npy"
                run([tool("kiln-run"), plan, "--input", f"tokens={self.tokens_path}",
                     "--decode-each", out])
                err = ref.rel_l2(np.load(out), self.run_forward(plan))
                self.assertLessEqual(err, 1e-5, f"{family}: decode vs prefill {err:.2e}")

    def test_fp8_with_attention_bias(self):
        """Biases stay unquantized next to FP8 projections: the FP8 plan is
        much closer to the full-precision plan with biases than an FP8 plan
        that ignores them (the tiny weights make FP8's own error ~0.1)."""
        ck = self.checkpoint("deepseek_v3", overrides={"attention_bias": True})
        plain = self.run_forward(self.compile(ck))
        fp8 = self.run_forward(self.compile(ck, ["--quantize=fp8-block"]))
        path = os.path.join(ck, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        with open(path, "w") as f:
            json.dump(dict(cfg, attention_bias=False), f)
        ignored = self.run_forward(self.compile(ck, ["--quantize=fp8-block"]))
        self.assertLess(ref.rel_l2(fp8, plain), 0.5 * ref.rel_l2(ignored, plain))


def config_dir(tmp, family, changes, variant=None):
    """A checkpoint directory with only config.json: the tiny config of
    `family` with `changes` (None deletes a field)."""
    cfg = mk.make_config(family, variant=variant)
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    d = tempfile.mkdtemp(dir=tmp)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d


class Errors(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-hfcfg-err-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def expect_error(self, family, changes, needles, variant=None, seq=SEQ):
        d = config_dir(self.tmp, family, changes, variant)
        out = os.path.join(self.tmp, "p.kplan")
        t0 = time.monotonic()
        p = run([tool("kiln-compile"), d, "--no-weights", "--target=cpu", "-o", out,
                 f"--max-seq={seq}"], check=False)
        elapsed = time.monotonic() - t0
        self.assertNotEqual(p.returncode, 0, f"{changes} compiled")
        self.assertFalse(os.path.exists(out), "plan left behind")
        for n in needles:
            self.assertIn(n, p.stderr, f"{changes}: {p.stderr}")
        self.assertLess(elapsed, FAIL_FAST_S, f"{changes}: failed after {elapsed:.2f} s")
        return p.stderr

    def test_unimplemented_values_name_the_field(self):
        cases = [
            ("llama", {"hidden_act": "gelu"}, ["hidden_act", "'gelu'", "not implemented"]),
            ("mixtral", {"hidden_act": "gelu_pytorch_tanh"}, ["hidden_act", "gelu_pytorch_tanh"]),
            ("deepseek_v3", {"hidden_act": "relu"}, ["hidden_act", "relu"]),
            ("llama", {"hidden_act": "frobnicate"}, ["hidden_act", "not a known activation"]),
            ("mixtral", {"sliding_window": 4}, ["sliding_window", "= 4", "--max-seq 6"]),
            ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 64}},
             ["rope_scaling.rope_type", "llama3", "not implemented"]),
            ("llama", {"rope_theta": None, "rope_parameters": {"rope_type": "longrope",
                                                               "rope_theta": 1e4}},
             ["rope_parameters.rope_type", "longrope"]),
            ("llama", {"rope_scaling": {"type": "ntk-by-parts", "factor": 2.0}},
             ["rope_scaling.rope_type", "ntk-by-parts", "not a known rope type"]),
            ("deepseek_v3", {"rope_scaling": dict(mk.make_config("deepseek_v3")["rope_scaling"],
                                                  type="su")}, ["rope_type", "'su'"]),
            ("llama", {"partial_rotary_factor": 0.5}, ["partial_rotary_factor", "0.5"]),
            ("deepseek_v3", {"scoring_func": "sqrtsoftplus"}, ["scoring_func", "sqrtsoftplus"]),
            ("deepseek_v3", {"topk_method": "random"}, ["topk_method", "random"]),
            ("deepseek_v3", {"moe_layer_freq": 2}, ["moe_layer_freq", "= 2"]),
            ("deepseek_v2", {"norm_topk_prob": True}, ["norm_topk_prob", "deepseek_v2"]),
            ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0},
                       "rope_parameters": {"rope_type": "linear", "factor": 4.0}},
             ["rope_scaling", "rope_parameters", "disagree", "factor"]),
            ("llama", {"rope_scaling": None,
                       "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}},
             ["rope_theta", "disagrees", "500000"]),
            ("llama", {"rope_scaling": {"rope_type": "linear"}}, ["rope_scaling.factor", "missing"]),
            ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 0.5}},
             ["rope_scaling.factor", ">= 1"]),
        ]
        for family, changes, needles in cases:
            with self.subTest(family=family, changes=changes):
                self.expect_error(family, changes, needles)

    def test_bad_values_fail_fast(self):
        big = 2 ** 62
        cases = [
            # zero
            ("deepseek_v3", {"v_head_dim": 0}, ["v_head_dim", "positive", "got 0"]),
            ("deepseek_v3", {"n_routed_experts": 0}, ["n_routed_experts", "positive"]),
            ("deepseek_v3", {"kv_lora_rank": 0}, ["kv_lora_rank"]),
            ("llama", {"head_dim": 0}, ["head_dim"]),
            ("llama", {"num_attention_heads": 0}, ["num_attention_heads"]),
            ("mixtral", {"num_local_experts": 0}, ["num_local_experts"]),
            ("deepseek_v3", {"routed_scaling_factor": 0}, ["routed_scaling_factor"]),
            ("llama", {"rms_norm_eps": 0}, ["rms_norm_eps"]),
            ("llama", {"rope_theta": 0}, ["rope_theta", "> 1"]),
            # negative
            ("deepseek_v3", {"n_routed_experts": -1}, ["n_routed_experts", "got -1"]),
            ("deepseek_v3", {"num_experts_per_tok": -2}, ["num_experts_per_tok"]),
            ("llama", {"vocab_size": -128}, ["vocab_size"]),
            ("deepseek_v3", {"first_k_dense_replace": -1}, ["first_k_dense_replace"]),
            ("deepseek_v3", {"n_shared_experts": -1}, ["n_shared_experts"]),
            ("mixtral", {"sliding_window": -1}, ["sliding_window", "positive"]),
            # 2^62 and other sizes past the limits
            ("deepseek_v3", {"hidden_size": big}, ["hidden_size", str(big), "limit"]),
            ("llama", {"intermediate_size": big}, ["intermediate_size", "limit"]),
            ("deepseek_v3", {"vocab_size": 2 ** 64}, ["vocab_size", "must be an integer"]),
            ("llama", {"max_position_embeddings": big}, ["max_position_embeddings"]),
            ("deepseek_v3", {"num_hidden_layers": 10 ** 9}, ["num_hidden_layers", "1000000000"]),
            ("llama", {"num_hidden_layers": 10 ** 6}, ["num_hidden_layers", "limit"]),
            ("deepseek_v3", {"n_routed_experts": 10 ** 12}, ["n_routed_experts", "limit"]),
            ("mixtral", {"num_local_experts": 10 ** 6}, ["num_local_experts", "limit"]),
            # each size fine, their products not
            ("llama", {"vocab_size": 2 ** 24, "hidden_size": 2 ** 24},
             ["model too large", "model.embed_tokens.weight"]),
            ("llama", {"hidden_size": 2 ** 16, "intermediate_size": 2 ** 20,
                       "num_attention_heads": 1024, "head_dim": None, "num_hidden_layers": 32},
             ["model too large", "parameters", "2^41"]),
            ("deepseek_v3", {"num_hidden_layers": 1024, "n_routed_experts": 4096,
                             "n_group": 8, "num_experts_per_tok": 8},
             ["model too large", "expert instances"]),
            # wrong types
            ("llama", {"num_hidden_layers": 3.5}, ["num_hidden_layers", "integer", "3.5"]),
            ("llama", {"vocab_size": "128"}, ["vocab_size", "integer"]),
            ("llama", {"attention_bias": "yes"}, ["attention_bias", "true or false"]),
            ("deepseek_v3", {"rope_scaling": [1, 2]}, ["rope_scaling", "object"]),
            # the architecture's divisibilities and orderings
            ("llama", {"num_key_value_heads": 3}, ["num_key_value_heads", "divide"]),
            ("llama", {"head_dim": None, "hidden_size": 66}, ["hidden_size", "multiple"]),
            ("llama", {"head_dim": 15}, ["head_dim", "even"]),
            ("deepseek_v3", {"qk_rope_head_dim": 7}, ["qk_rope_head_dim", "even"]),
            ("deepseek_v3", {"n_group": 3}, ["n_group", "divide"]),
            ("deepseek_v3", {"topk_group": 5}, ["topk_group", "n_group"]),
            ("deepseek_v3", {"num_experts_per_tok": 9}, ["num_experts_per_tok", "exceeds"]),
            ("deepseek_v3", {"num_experts_per_tok": 5}, ["num_experts_per_tok", "topk_group"]),
            ("deepseek_v3", {"n_group": 8, "topk_group": 2}, ["n_group", "2 experts"]),
            ("mixtral", {"num_experts_per_tok": 9}, ["num_experts_per_tok", "num_local_experts"]),
            ("deepseek_v3", {"num_key_value_heads": 2}, ["num_key_value_heads", "MLA"]),
            # a class with no default
            ("deepseek_v2", {"n_group": None}, ["n_group", "DeepseekV2Config has no default"]),
        ]
        for family, changes, needles in cases:
            with self.subTest(family=family, changes=changes):
                self.expect_error(family, changes, needles)

    def test_max_seq_bounds(self):
        self.expect_error("llama", {}, ["--max-seq 300", "max_position_embeddings 256"], seq=300)
        # max_position_embeddings absent: LlamaConfig's 2048.
        self.expect_error("llama", {"max_position_embeddings": None},
                          ["max_position_embeddings 2048"], seq=4096)


if __name__ == "__main__":
    unittest.main(verbosity=2)
