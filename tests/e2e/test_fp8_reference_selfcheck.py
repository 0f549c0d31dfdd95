"""Self-checks of tests/e2e/fp8_reference.py (DeepSeek-V3 FP8 emulation) and of
make_tiny_checkpoint.py's --fp8 / fp8dims options (numpy only, a few seconds).

Run: cd tests/e2e && python3 -m unittest test_fp8_reference_selfcheck -v
"""

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

import fp8_reference as fp8  # noqa: E402
import hf_reference as ref  # noqa: E402
import make_tiny_checkpoint as mk  # noqa: E402

ALL_CODES = np.arange(256, dtype=np.uint8)
NAN_CODES = (0x7F, 0xFF)


def _finite_codes():
    return np.array([c for c in range(256) if c not in NAN_CODES], dtype=np.uint8)


def _positive_values():
    """Sorted values of codes 0x00..0x7E."""
    return fp8.e4m3_decode(np.arange(0x7F, dtype=np.uint8))


class E4M3(unittest.TestCase):
    def test_decode_known_values(self):
        d = fp8.e4m3_decode
        self.assertEqual(d(np.uint8(0x00)), 0.0)
        self.assertTrue(np.signbit(d(np.uint8(0x80))) and d(np.uint8(0x80)) == 0.0)
        self.assertEqual(d(np.uint8(0x38)), 1.0)           # e=7, m=0
        self.assertEqual(d(np.uint8(0x3A)), 1.25)
        self.assertEqual(d(np.uint8(0x7E)), 448.0)         # max finite
        self.assertEqual(d(np.uint8(0xFE)), -448.0)
        self.assertEqual(d(np.uint8(0x08)), 2.0 ** -6)     # min normal
        self.assertEqual(d(np.uint8(0x01)), 2.0 ** -9)     # min subnormal
        self.assertEqual(d(np.uint8(0x07)), 7 * 2.0 ** -9)
        self.assertEqual(d(np.uint8(0x78)), 256.0)         # e=15 is finite except m=7
        for c in NAN_CODES:
            self.assertTrue(np.isnan(d(np.uint8(c))))
        v = fp8.e4m3_decode(ALL_CODES)
        self.assertEqual(v.dtype, np.float64)
        self.assertEqual(int(np.isnan(v).sum()), 2)
        pos = _positive_values()
        self.assertTrue(np.all(np.diff(pos) > 0))          # monotone in the code
        np.testing.assert_array_equal(fp8.e4m3_decode(ALL_CODES[128:])[:127], -pos)

    def test_roundtrip_all_patterns(self):
        codes = _finite_codes()
        for dt in (np.float64, np.float32):
            vals = fp8.e4m3_decode(codes).astype(dt)
            np.testing.assert_array_equal(fp8.e4m3_encode(vals), codes)
            np.testing.assert_array_equal(mk.e4m3_encode(vals), codes)
        self.assertEqual(fp8.e4m3_encode(np.array([np.nan]))[0], 0x7F)

    def test_ties_and_saturation(self):
        e = fp8.e4m3_encode
        cases = [
            (1.0625, 0x38),            # halfway 1.0 / 1.125 -> even mantissa 1.0
            (1.1875, 0x3A),            # halfway 1.125 / 1.25 -> 1.25
            (1.0625 + 1e-9, 0x39),     # just above the tie
            (1.5 * 2.0 ** -9, 0x02),   # subnormal tie 1/2 -> 2
            (2.5 * 2.0 ** -9, 0x02),   # subnormal tie 2/3 -> 2
            (0.5 * 2.0 ** -9, 0x00),   # tie 0 / min subnormal -> 0
            (7.5 * 2.0 ** -9, 0x08),   # tie max subnormal / min normal -> min normal
            (15.5 * 2.0 ** -10, 0x08),  # 7.75 * 2^-9 -> nearest 8 * 2^-9
            (232.0, 0x76),             # halfway 224 (m=6) / 240 (m=7) -> 224
            (448.0, 0x7E),
            (449.0, 0x7E),
            (464.0, 0x7E),             # halfway 448 / (480): saturate
            (1e9, 0x7E),
            (np.inf, 0x7E),
            (-1e9, 0xFE),
            (-np.inf, 0xFE),
            (0.0, 0x00),
            (-0.0, 0x80),              # sign kept
            (-1e-10, 0x80),            # negative underflow keeps the sign
            (1e-300, 0x00),
        ]
        for x, want in cases:
            with self.subTest(x=x):
                self.assertEqual(int(e(np.array([x]))[0]), want)
                self.assertEqual(int(mk.e4m3_encode(np.array([x]))[0]), want)
        # Every midpoint of consecutive positive values rounds to the even code.
        pos = _positive_values()
        mids = (pos[1:] + pos[:-1]) / 2
        got = e(mids).astype(int)
        lo = np.arange(0x7E)
        np.testing.assert_array_equal(got, np.where(lo % 2 == 0, lo, lo + 1))
        np.testing.assert_array_equal(e(-mids).astype(int), got | 0x80)
        np.testing.assert_array_equal(mk.e4m3_encode(mids).astype(int), got)

    def test_nearest_on_random_values(self):
        rng = np.random.default_rng(0)
        x = (rng.standard_normal(100000) * np.exp(rng.uniform(-16, 7, 100000))).astype(np.float32)
        q = fp8.e4m3_encode(x)
        self.assertEqual(q.dtype, np.uint8)
        self.assertEqual(q.shape, x.shape)
        pos = _positive_values()
        a = np.minimum(np.abs(x.astype(np.float64)), 448.0)
        best = np.min(np.abs(a[:, None] - pos[None, :]), axis=1)
        got = np.abs(fp8.e4m3_decode(q))
        np.testing.assert_array_equal(np.abs(got - a), best)       # nearest
        np.testing.assert_array_equal(np.signbit(fp8.e4m3_decode(q)), np.signbit(x))
        # The generator's independent (table) encoder agrees bit for bit.
        np.testing.assert_array_equal(mk.e4m3_encode(x), q)
        # Multi-dimensional shapes are kept.
        self.assertEqual(fp8.e4m3_encode(x.reshape(10, 100, 100)).shape, (10, 100, 100))


class Quantization(unittest.TestCase):
    def test_weight_blocks(self):
        rng = np.random.default_rng(1)
        w = (rng.standard_normal((300, 200)) * 0.05).astype(np.float32)
        w[130:140, 10:20] *= 50.0       # one block with a much larger range
        w[256:, 128:] = 0.0             # an all-zero (partial) block
        q, s = fp8.quantize_weight_blocks(w)
        self.assertEqual((q.dtype, q.shape), (np.uint8, (300, 200)))
        self.assertEqual((s.dtype, s.shape), (np.float32, (3, 2)))
        self.assertEqual(s[2, 1], 1.0)  # amax == 0 -> scale 1.0
        self.assertTrue(np.all((q[256:, 128:] & 0x7F) == 0))
        for i in range(3):
            for j in range(2):
                blk = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
                amax = np.float32(np.abs(blk).max())
                if amax:
                    self.assertEqual(s[i, j], amax / np.float32(448))
                    # The amax element maps to +-448 exactly.
                    k = np.unravel_index(np.argmax(np.abs(blk)), blk.shape)
                    self.assertEqual(q[i * 128 + k[0], j * 128 + k[1]] & 0x7F, 0x7E)
        deq = fp8.dequantize_weight_blocks(q, s)
        self.assertEqual(deq.dtype, np.float64)
        sfull = np.repeat(np.repeat(s, 128, 0), 128, 1)[:300, :200].astype(np.float64)
        normal = np.abs(w) >= sfull * 2.0 ** -6
        rel = np.abs(deq - w)[normal] / np.abs(w)[normal]
        self.assertLessEqual(rel.max(), 2.0 ** -4 * (1 + 1e-6))
        sub = ~normal
        self.assertTrue(np.all(np.abs(deq - w)[sub] <= sfull[sub] * 2.0 ** -10 * (1 + 1e-6)))
        # Blocks are independent: scaling one block changes only that block.
        w2 = w.copy()
        w2[:128, :128] *= 3.0
        q2, s2 = fp8.quantize_weight_blocks(w2)
        np.testing.assert_array_equal(q2[128:], q[128:])
        np.testing.assert_array_equal(q2[:, 128:], q[:, 128:])
        # The generator's self-contained quantizer is bit-identical.
        qg, sg = mk.fp8_quantize_weight(w)
        np.testing.assert_array_equal(qg, q)
        np.testing.assert_array_equal(sg, s)

    def test_activation_tiles(self):
        rng = np.random.default_rng(2)
        x = rng.standard_normal((2, 3, 300)) * np.exp(rng.uniform(-3, 3, (2, 3, 1)))
        x[0, 0, :] = 0.0                # floor: s = 1e-4 / 448
        x[1, 2, 256:] *= 1e3            # only the partial last tile is large
        q, s = fp8.quantize_activation(x)
        self.assertEqual((q.dtype, q.shape), (np.uint8, (2, 3, 300)))
        self.assertEqual((s.dtype, s.shape), (np.float32, (2, 3, 3)))
        x32 = x.astype(np.float32)
        for t, (a, b) in enumerate(((0, 128), (128, 256), (256, 300))):
            amax = np.abs(x32[..., a:b]).max(-1)
            want = (np.maximum(amax, np.float32(1e-4)) / np.float32(448)).astype(np.float32)
            np.testing.assert_array_equal(s[..., t], want)
            np.testing.assert_array_equal(
                q[..., a:b], fp8.e4m3_encode((x32[..., a:b] / want[..., None]).astype(np.float32)))
        self.assertTrue(np.all(s[0, 0] == np.float32(1e-4) / np.float32(448)))
        self.assertTrue(np.all((q[0, 0] & 0x7F) == 0))
        self.assertGreater(s[1, 2, 2], 100 * s[1, 2, 1])
        deq = fp8.e4m3_decode(q) * np.repeat(s, 128, -1)[..., :300]
        sfull = np.repeat(s, 128, -1)[..., :300].astype(np.float64)
        normal = np.abs(x32) >= sfull * 2.0 ** -6
        rel = np.abs(deq - x32)[normal] / np.abs(x32)[normal]
        self.assertLessEqual(rel.max(), 2.0 ** -4 * (1 + 1e-6))
        # K < 128 and a 1-D row.
        q1, s1 = fp8.quantize_activation(x[0, 1, :50])
        self.assertEqual((q1.shape, s1.shape), ((50,), (1,)))

    def test_gemm_matches_direct_formula(self):
        rng = np.random.default_rng(3)
        M, N, K = 5, 300, 260
        codes = _finite_codes()
        xq = rng.choice(codes, size=(M, K))
        wq = rng.choice(codes, size=(N, K))
        xs = rng.uniform(0.01, 2.0, (M, 3)).astype(np.float32)
        ws = rng.uniform(0.01, 2.0, (3, 3)).astype(np.float32)
        got = fp8.fp8_gemm(xq, xs, wq, ws)
        self.assertEqual((got.dtype, got.shape), (np.float64, (M, N)))
        dx, dw = fp8.e4m3_decode(xq), fp8.e4m3_decode(wq)
        want = np.zeros((M, N))
        for m in range(M):
            for n in range(N):
                acc = 0.0
                for kb in range(3):
                    ks = slice(kb * 128, min(K, kb * 128 + 128))
                    acc += float(np.dot(dx[m, ks], dw[n, ks])) * float(xs[m, kb]) * float(
                        ws[n // 128, kb])
                want[m, n] = acc
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
        # Leading dims are kept; equals the dequantized float64 product.
        got3 = fp8.fp8_gemm(xq.reshape(1, M, K), xs.reshape(1, M, 3), wq, ws)
        np.testing.assert_array_equal(got3[0], got)
        xd = dx * np.repeat(xs, 128, -1)[:, :K]
        np.testing.assert_allclose(got, xd @ fp8.dequantize_weight_blocks(wq, ws).T,
                                   rtol=1e-10, atol=1e-8)


class Checkpoints(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-fp8ref-")
        cls.f32 = os.path.join(cls.tmp, "f32")
        cls.q = os.path.join(cls.tmp, "fp8")
        mk.make_checkpoint("deepseek_v3", cls.f32, variant="fp8dims")
        mk.make_checkpoint("deepseek_v3", cls.q, variant="fp8dims", fp8=True)
        # Token set without an fp8-vs-float64 routing difference (see report).
        cls.toks = np.random.default_rng(2).integers(0, 256, size=(2, 8))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def _header(self, d):
        with open(os.path.join(d, "model.safetensors"), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            return json.loads(f.read(n))

    def test_checkpoint_layout(self):
        cfg = ref.read_config(self.q)
        self.assertEqual(cfg["quantization_config"], {
            "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
            "weight_block_size": [128, 128]})
        self.assertNotIn("quantization_config", ref.read_config(self.f32))
        self.assertEqual((cfg["hidden_size"], cfg["intermediate_size"], cfg["q_lora_rank"],
                          cfg["kv_lora_rank"], cfg["num_hidden_layers"], cfg["vocab_size"]),
                         (192, 320, 144, 128, 2, 256))
        h = self._header(self.q)
        hf32 = self._header(self.f32)
        n_fp8 = 0
        for name, info in hf32.items():
            if name == "__metadata__":
                continue
            if fp8.is_quantized_weight(name):
                n_fp8 += 1
                self.assertEqual(h[name]["dtype"], "F8_E4M3", name)
                self.assertEqual(h[name]["shape"], info["shape"])
                s = h[name + "_scale_inv"]
                self.assertEqual(s["dtype"], "F32")
                self.assertEqual(s["shape"], [-(-d // 128) for d in info["shape"]])
                a, b = h[name]["data_offsets"]
                self.assertEqual(b - a, info["shape"][0] * info["shape"][1])
            else:
                self.assertEqual(h[name]["dtype"], info["dtype"], name)
                self.assertNotIn(name + "_scale_inv", h)
        # 2 layers: 5 attention projections each, 1 dense MLP, 8 experts + 1 shared.
        self.assertEqual(n_fp8, 2 * 5 + 3 + 9 * 3)
        for name in ("model.embed_tokens.weight", "lm_head.weight",
                     "model.layers.1.mlp.gate.weight",
                     "model.layers.1.mlp.gate.e_score_correction_bias"):
            self.assertFalse(fp8.is_quantized_weight(name))
        # Partial edge blocks are present: q_a_proj [144, 192] -> 2x2 scales.
        self.assertEqual(h["model.layers.0.self_attn.q_a_proj.weight_scale_inv"]["shape"], [2, 2])
        # The float version still runs through the float64 reference.
        lo = ref.forward(self.f32, self.toks)
        self.assertEqual(lo.shape, (2, 8, 256))
        self.assertTrue(np.all(np.isfinite(lo)))
        # Bad combinations are refused.
        with self.assertRaises(ValueError):
            mk.make_config("llama", fp8=True)
        with self.assertRaises(ValueError):
            mk.make_config("deepseek_v3", variant="nope")

    def test_fp8_checkpoint_equals_compile_time_quantization(self):
        a = fp8.forward_fp8(self.q, self.toks)
        b = fp8.forward_fp8_from_bf16(self.f32, self.toks)
        np.testing.assert_array_equal(a, b)
        # bf16 + sharded: the FP8 file quantizes the bf16-rounded values.
        d16 = os.path.join(self.tmp, "bf16")
        q16 = os.path.join(self.tmp, "bf16-fp8")
        mk.make_checkpoint("deepseek_v3", d16, dtype="bf16")
        self.assertEqual(mk.main(["deepseek_v3", q16, "--dtype", "bf16", "--fp8",
                                  "--shards", "3"]), 0)
        t = np.random.default_rng(5).integers(0, 128, size=(2, 6))
        np.testing.assert_array_equal(fp8.forward_fp8(q16, t), fp8.forward_fp8_from_bf16(d16, t))

    def test_forward_close_to_float64_reference(self):
        lo = fp8.forward_fp8(self.q, self.toks)
        self.assertEqual((lo.dtype, lo.shape), (np.float64, (2, 8, 256)))
        self.assertTrue(np.all(np.isfinite(lo)))
        r = ref.forward(self.f32, self.toks)
        err = ref.rel_l2(lo, r)
        print("\n[fp8] forward_fp8 vs hf_reference.forward (fp8dims, seq 8): rel L2 %.3e" % err)
        self.assertGreater(err, 1e-3)   # the quantization really happens
        self.assertLess(err, 0.3)
        # Causality and batch independence hold for the emulation too.
        t2 = self.toks.copy()
        t2[:, 5:] = (t2[:, 5:] + 17) % 256
        np.testing.assert_allclose(fp8.forward_fp8(self.q, t2)[:, :5], lo[:, :5], rtol=0, atol=0)
        np.testing.assert_array_equal(fp8.forward_fp8(self.q, self.toks[1:2]), lo[1:2])

    def test_perturbation_sensitivity(self):
        base = fp8.forward_fp8(self.q, self.toks)
        np.testing.assert_array_equal(fp8.forward_fp8(self.q, self.toks, perturb=0.0), base)
        p1 = fp8.forward_fp8(self.q, self.toks, perturb=1e-7, seed=0)
        np.testing.assert_array_equal(fp8.forward_fp8(self.q, self.toks, perturb=1e-7, seed=0), p1)
        d = ref.rel_l2(p1, base)
        print("\n[fp8] perturb=1e-7 vs perturb=0: rel L2 %.3e, max abs %.3e"
              % (d, np.abs(p1 - base).max()))
        self.assertGreater(d, 0.0)
        # A near-tie code flip can move a routing decision (seen: ~4e-3), so
        # the bound is loose; without flips it is ~1e-7.
        self.assertLess(d, 3e-2)


if __name__ == "__main__":
    unittest.main()
