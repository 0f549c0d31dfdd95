"""Self-consistency checks of tests/e2e/hf_reference.py and
models/testing/make_tiny_checkpoint.py (numpy only, a few seconds)."""

import json
import os
import shutil
import struct
import sys
import tempfile
import unittest

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
for _p in (_HERE, os.path.join(_ROOT, "models", "testing")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import hf_reference as ref  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

# (family, variant)
CASES = [
    ("deepseek_v3", None),
    ("deepseek_v2", "group_limited_greedy"),
    ("deepseek_v2", "greedy"),
    ("llama", None),
    ("mixtral", None),
]


def _tokens(seed=1, batch=2, seq=6, vocab=128):
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, seq))


class HFReferenceSelfCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-hfref-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def _ckpt(self, family, variant, dtype="f32", shards=1, seed=0):
        d = os.path.join(self.tmp, "%s-%s-%s-%d-%d" % (family, variant, dtype, shards, seed))
        if not os.path.exists(os.path.join(d, "config.json")):
            mk.make_checkpoint(family, d, dtype=dtype, shards=shards, seed=seed, variant=variant)
        return d

    def test_families(self):
        toks = _tokens()
        for family, variant in CASES:
            with self.subTest(family=family, variant=variant):
                d = self._ckpt(family, variant)
                cfg = ref.read_config(d)
                self.assertEqual(cfg["model_type"], family)
                logits = ref.forward(d, toks)
                self.assertEqual(logits.shape, (2, 6, 128))
                self.assertEqual(logits.dtype, np.float64)
                self.assertTrue(np.all(np.isfinite(logits)))
                self.assertGreater(np.std(logits), 1e-3)

                # Sharded == unsharded, bit for bit.
                ds = self._ckpt(family, variant, shards=3)
                files = sorted(f for f in os.listdir(ds) if f.endswith(".safetensors"))
                self.assertEqual(files, ["model-%05d-of-00003.safetensors" % i for i in (1, 2, 3)])
                self.assertFalse(os.path.exists(os.path.join(ds, "model.safetensors")))
                np.testing.assert_array_equal(ref.forward(ds, toks), logits)

                # bf16 / f16 storage stays close to f32.
                for dt in ("bf16", "f16"):
                    lo = ref.forward(self._ckpt(family, variant, dtype=dt), toks)
                    self.assertLess(ref.rel_l2(lo, logits), 2e-2, dt)

                # Causality: logits at t depend only on tokens <= t.
                t = 2
                toks2 = toks.copy()
                toks2[:, t + 1:] = (toks2[:, t + 1:] + 17) % 128
                l2 = ref.forward(d, toks2)
                np.testing.assert_allclose(l2[:, :t + 1], logits[:, :t + 1], rtol=0, atol=1e-12)
                self.assertGreater(np.abs(l2[:, t + 1:] - logits[:, t + 1:]).max(), 1e-6)

                # Batch rows are independent.
                np.testing.assert_allclose(ref.forward(d, toks[1:2]), logits[1:2],
                                           rtol=0, atol=1e-12)

    def test_determinism_and_seed(self):
        a = os.path.join(self.tmp, "det-a")
        b = os.path.join(self.tmp, "det-b")
        mk.make_checkpoint("deepseek_v3", a, seed=5)
        mk.make_checkpoint("deepseek_v3", b, seed=5)
        with open(os.path.join(a, "model.safetensors"), "rb") as fa, \
                open(os.path.join(b, "model.safetensors"), "rb") as fb:
            self.assertEqual(fa.read(), fb.read())
        c = self._ckpt("deepseek_v3", None, seed=6)
        self.assertGreater(ref.rel_l2(ref.forward(c, _tokens()), ref.forward(a, _tokens())), 0.1)

    def test_v3_routing_matters(self):
        d = self._ckpt("deepseek_v3", None)
        toks = _tokens(seq=8)
        W = ref.read_safetensors_dir(d)
        cfg = ref.read_config(d)
        base = ref.forward(None, toks, weights=W, config=cfg)
        W2 = dict(W)
        for i in (1, 2):
            name = "model.layers.%d.mlp.gate.e_score_correction_bias" % i
            self.assertEqual(W[name].shape, (8,))
            W2[name] = W[name][::-1].copy()
        changed = ref.forward(None, toks, weights=W2, config=cfg)
        self.assertGreater(ref.rel_l2(changed, base), 1e-3)
        # The bias must not be a trivial no-op on selection: some token picks
        # a different expert set than with bias 0.
        x = np.random.default_rng(3).standard_normal((64, 64))
        p = "model.layers.1"
        idx_b, _ = ref.deepseek_gate(cfg, ref._Weights(W), p, x)
        Wz = dict(W)
        Wz[p + ".mlp.gate.e_score_correction_bias"] = np.zeros(8)
        idx_0, _ = ref.deepseek_gate(cfg, ref._Weights(Wz), p, x)
        self.assertTrue(np.any(np.sort(idx_b, -1) != np.sort(idx_0, -1)))

    def test_v3_mask_value_irrelevant_for_tiny_inputs(self):
        # Official V3 masks non-selected groups with -inf, transformers with
        # 0.0; on the tiny checkpoints and test-sized inputs they agree.
        d = self._ckpt("deepseek_v3", None)
        toks = np.random.default_rng(11).integers(0, 128, size=(4, 16))
        a = ref.forward(d, toks)
        old = ref.NOAUX_TC_MASK_VALUE
        try:
            ref.NOAUX_TC_MASK_VALUE = 0.0
            b = ref.forward(d, toks)
        finally:
            ref.NOAUX_TC_MASK_VALUE = old
        np.testing.assert_array_equal(a, b)

    def test_gate_rules(self):
        d3 = self._ckpt("deepseek_v3", None)
        W = ref._Weights(ref.read_safetensors_dir(d3))
        cfg = ref.read_config(d3)
        x = np.random.default_rng(4).standard_normal((32, 64))
        idx, w = ref.deepseek_gate(cfg, W, "model.layers.1", x)
        # noaux_tc + norm_topk_prob: weights sum to routed_scaling_factor.
        np.testing.assert_allclose(w.sum(-1), 2.5, rtol=1e-12)
        # Selected experts lie in at most topk_group groups.
        self.assertTrue(np.all([len(set(r // 2)) <= 2 for r in idx]))
        for variant, rsf in (("group_limited_greedy", 16.0), ("greedy", 1.0)):
            d2 = self._ckpt("deepseek_v2", variant)
            W2 = ref._Weights(ref.read_safetensors_dir(d2))
            cfg2 = ref.read_config(d2)
            idx2, w2 = ref.deepseek_gate(cfg2, W2, "model.layers.1", x)
            probs = ref.softmax(x @ W2["model.layers.1.mlp.gate.weight"].T)
            # V2 without norm_topk_prob: softmax prob * routed_scaling_factor.
            np.testing.assert_allclose(w2, np.take_along_axis(probs, idx2, -1) * rsf, rtol=1e-12)
            if variant == "greedy":
                top = np.sort(np.argsort(-probs, -1)[:, :2], -1)
                np.testing.assert_array_equal(np.sort(idx2, -1), top)

    def test_deepseek_rope_equals_interleaved_complex_rotation(self):
        # HF's de-interleave + rotate_half must give the same q.k as rotating
        # interleaved pairs (x[2i], x[2i+1]) as complex numbers.
        cfg = mk.make_config("deepseek_v3")
        S, d = 10, cfg["qk_rope_head_dim"]
        cos, sin = ref.deepseek_rope_cos_sin(cfg, np.arange(S))
        rng = np.random.default_rng(7)
        q = rng.standard_normal((1, 1, S, d))
        k = rng.standard_normal((1, 1, S, d))
        hf = np.einsum("bhsd,bhtd->st", ref.deepseek_apply_rope(q, cos, sin),
                       ref.deepseek_apply_rope(k, cos, sin))
        ang = cos[:, : d // 2] + 1j * sin[:, : d // 2]  # includes the yarn mscale
        qc = (q[0, 0, :, 0::2] + 1j * q[0, 0, :, 1::2]) * ang
        kc = (k[0, 0, :, 0::2] + 1j * k[0, 0, :, 1::2]) * ang
        cplx = (qc.real @ kc.real.T) + (qc.imag @ kc.imag.T)
        np.testing.assert_allclose(hf, cplx, rtol=1e-12, atol=1e-12)

    def test_yarn_numbers(self):
        cfg = mk.make_config("deepseek_v2")
        # factor 4, mscale_all_dim 0.707: scale = 24^-0.5 * (0.1*0.707*ln4 + 1)^2
        m = 0.1 * 0.707 * np.log(4.0) + 1.0
        self.assertAlmostEqual(ref.deepseek_softmax_scale(cfg), 24 ** -0.5 * m * m, places=14)
        # mscale == mscale_all_dim -> cos/sin are unscaled at position 0.
        cos, sin = ref.deepseek_rope_cos_sin(cfg, np.arange(3))
        np.testing.assert_allclose(cos[0], 1.0, rtol=0, atol=1e-15)
        # dim 8, base 1e4, orig 64: correction range (0, 2) -> first freq
        # unscaled, last interpolated by the factor.
        self.assertEqual(ref.yarn_find_correction_range(32, 1, 8, 10000, 64), (0, 2))
        inv = np.arctan2(sin[1, :4], cos[1, :4])
        ext = 10000.0 ** (-np.arange(0, 8, 2) / 8)
        np.testing.assert_allclose(inv[0], ext[0], rtol=1e-12)
        np.testing.assert_allclose(inv[3], ext[3] / 4.0, rtol=1e-12)

    def test_safetensors_format(self):
        d = self._ckpt("deepseek_v3", None, dtype="bf16", shards=3)
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            index = json.load(f)
        total = 0
        seen = set()
        for fn in sorted(set(index["weight_map"].values())):
            with open(os.path.join(d, fn), "rb") as f:
                blob = f.read()
            (n,) = struct.unpack("<Q", blob[:8])
            self.assertEqual(n % 8, 0)
            header = json.loads(blob[8:8 + n])
            self.assertEqual(header["__metadata__"], {"format": "pt"})
            end = 0
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                seen.add(name)
                self.assertEqual(index["weight_map"][name], fn)
                want = "F32" if name.endswith("e_score_correction_bias") else "BF16"
                self.assertEqual(info["dtype"], want, name)
                s, e = info["data_offsets"]
                self.assertEqual(s, end)
                end = e
                total += e - s
            self.assertEqual(len(blob), 8 + n + end)
        self.assertEqual(seen, set(index["weight_map"]))
        self.assertEqual(index["metadata"]["total_size"], total)
        cfg = ref.read_config(d)
        self.assertEqual(cfg["torch_dtype"], "bfloat16")
        self.assertEqual(cfg["architectures"], ["DeepseekV3ForCausalLM"])

    def test_bf16_rounding(self):
        x = np.array([1.0, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -8 + 2.0 ** -20,
                      -2.5, 0.0, 3.4e38], dtype=np.float32)
        bits = mk.f32_to_bf16_bits(x)
        # ties to even: 1+2^-8 -> 1.0 ; 1+3*2^-8 -> 1+2^-6 ; above tie rounds up
        np.testing.assert_array_equal(
            bits, np.array([0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC020, 0x0000, 0x7F80], np.uint16))


if __name__ == "__main__":
    unittest.main()
