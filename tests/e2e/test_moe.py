"""The MoE lowering end to end: routing with the token permutation, the
grouped expert GEMMs over the contiguous layout and the combine, against a
float64 numpy MoE written from the equations (no code shared with Kiln).

The cases stress the layout: every token routed to the same two experts (a
segment of several blocks, experts with no tokens), a shared expert as an
extra expert, grouped sigmoid routing with a correction bias, one token
(decode), two MoE layers in one function (the routing's counter is shared)
and repeated runs of one session (the counter resets itself).

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilntest import KernelModel, run, tool  # noqa: E402


def silu(x):
    return x / (1.0 + np.exp(-x))


def moe_reference(x, router, wg, wu, wd, top_k, scoring, bias=None, n_group=1,
                  topk_group=1, norm=True, scaling=1.0, shared=0):
    """DeepSeek/Mixtral MoE in float64: x [T, D]; wg/wu [E+S, F, D];
    wd [E+S, D, F]; the last `shared` experts apply to every token."""
    x = x.astype(np.float64)
    e = router.shape[0]
    logits = x @ router.T.astype(np.float64)
    if scoring == "sigmoid":
        scores = 1.0 / (1.0 + np.exp(-logits))
    else:
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = z / z.sum(axis=1, keepdims=True)
    choice = scores + (bias if bias is not None else 0.0)
    y = np.zeros_like(x)
    for t in range(x.shape[0]):
        c = choice[t].copy()
        if n_group > 1:
            g = c.reshape(n_group, -1)
            gs = np.sort(g, axis=1)[:, -2:].sum(axis=1)
            keep = np.argsort(-gs, kind="stable")[:topk_group]
            mask = np.full(n_group, -np.inf)
            mask[keep] = 0.0
            c = (g + mask[:, None]).reshape(-1)
        ids = np.argsort(-c, kind="stable")[:top_k]
        w = scores[t, ids]
        if norm:
            w = w / w.sum()
        w = w * scaling
        experts = list(zip(ids, w)) + [(e + s, 1.0) for s in range(shared)]
        for ex, wt in experts:
            h = silu(wg[ex].astype(np.float64) @ x[t]) * (wu[ex].astype(np.float64) @ x[t])
            y[t] += wt * (wd[ex].astype(np.float64) @ h)
    return y


def moe_text(t, d, f, e, k, attrs, shared=0, layers=1, bias=False):
    """A kiln-dialect model of `layers` MoE layers (each adds its input)."""
    total = e + shared
    names = lambda kind: "[" + ", ".join(f'"e{i}.{kind}"' for i in range(total)) + "]"  # noqa: E731
    bias_decl = f'    %b = kiln.weight "bias" : tensor<{e}xf32>\n' if bias else ""
    bias_use = " bias(%b)" if bias else ""
    bias_ty = f", tensor<{e}xf32>" if bias else ""
    body = ""
    prev = "%x"
    for i in range(layers):
        body += (f"    %m{i} = kiln.moe {prev}, %r{bias_use}, %wg, %wu, %wd {{{attrs}, shared_experts = {shared} : i64}}"
                 f" : (tensor<{t}x{d}xf32>, tensor<{e}x{d}xf32>{bias_ty}, tensor<{total}x{f}x{d}xf32>,"
                 f" tensor<{total}x{f}x{d}xf32>, tensor<{total}x{d}x{f}xf32>) -> tensor<{t}x{d}xf32>\n")
        if i + 1 < layers:
            body += (f"    %h{i} = kiln.add %m{i}, {prev} : (tensor<{t}x{d}xf32>, tensor<{t}x{d}xf32>)"
                     f" -> tensor<{t}x{d}xf32>\n")
            prev = f"%h{i}"
    return f"""
module {{
  func.func @forward(%x: tensor<{t}x{d}xf32> {{kiln.name = "x"}}) -> (tensor<{t}x{d}xf32> {{kiln.name = "y"}}) {{
    %r = kiln.weight "router" : tensor<{e}x{d}xf32>
{bias_decl}    %wg = kiln.weight_stack {names("gate")} : tensor<{total}x{f}x{d}xf32>
    %wu = kiln.weight_stack {names("up")} : tensor<{total}x{f}x{d}xf32>
    %wd = kiln.weight_stack {names("down")} : tensor<{total}x{d}x{f}xf32>
{body}    return %m{layers - 1} : tensor<{t}x{d}xf32>
  }}
}}
"""


class MoE(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-moe-")
        cls.rng = np.random.default_rng(11)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def weights(self, d, f, total):
        r = self.rng
        return ((r.standard_normal((total, f, d)) * d ** -0.5).astype(np.float32),
                (r.standard_normal((total, f, d)) * d ** -0.5).astype(np.float32),
                (r.standard_normal((total, d, f)) * f ** -0.5).astype(np.float32))

    def compile_run(self, name, text, tensors, x, repeat=1):
        model = KernelModel(self.tmp, name, text, tensors)
        (y,) = model({"x": x}, ["y"], repeat)
        return y, model.kernel_info()

    def check(self, name, t, d, f, e, k, attrs, ref_kwargs, x=None, router=None, shared=0,
              layers=1, bias=None, repeat=1, tol=2e-5):
        wg, wu, wd = self.weights(d, f, e + shared)
        if router is None:
            router = self.rng.standard_normal((e, d)).astype(np.float32)
        if x is None:
            x = self.rng.standard_normal((t, d)).astype(np.float32)
        tensors = [("router", router)]
        if bias is not None:
            tensors.append(("bias", bias.astype(np.float32)))
        for i in range(e + shared):
            tensors += [(f"e{i}.gate", wg[i]), (f"e{i}.up", wu[i]), (f"e{i}.down", wd[i])]
        text = moe_text(t, d, f, e, k, attrs, shared, layers, bias is not None)
        y, kernels = self.compile_run(name, text, tensors, x, repeat)
        h = x.astype(np.float64)
        for i in range(layers):
            m = moe_reference(h, router, wg, wu, wd, k, shared=shared, bias=bias, **ref_kwargs)
            h = m + h if i + 1 < layers else m
        err = np.linalg.norm(y - h) / np.linalg.norm(h)
        self.assertLess(err, tol, f"{name}: relative L2 {err:.2e}")
        return kernels

    def test_skewed_routing_spans_blocks(self):
        """Every token picks experts 0 and 1: their segments span several
        blocks, experts 2 and 3 get none."""
        t, d, f, e = 40, 32, 24, 4
        router = self.rng.standard_normal((e, d)).astype(np.float32) * 0.01
        router[0, 0], router[1, 0], router[2, 0], router[3, 0] = 8.0, 7.0, -8.0, -8.0
        x = self.rng.standard_normal((t, d)).astype(np.float32) * 0.1
        x[:, 0] = 2.0
        kernels = self.check("skewed", t, d, f, e, 2, 'top_k = 2 : i64, scoring = "softmax"',
                             {"scoring": "softmax"}, x=x, router=router)
        route = [k for k in kernels if k["name"].startswith("moe_route")]
        self.assertEqual(len(route), 1)
        # 80 slots over 4 experts: 20 per expert -> blocks of 32 rows.
        self.assertIn("block_m=32", route[0]["config"])

    def test_shared_expert_is_an_extra_expert(self):
        kernels = self.check("shared", 12, 32, 16, 6, 2, 'top_k = 2 : i64, scoring = "softmax"',
                             {"scoring": "softmax"}, shared=1)
        self.assertTrue(any(k["name"].startswith("moe_combine_d32_k2_s3") for k in kernels))

    def test_grouped_sigmoid_with_bias(self):
        e = 8
        bias = self.rng.standard_normal(e) * 0.1
        attrs = ('top_k = 2 : i64, scoring = "sigmoid", n_group = 4 : i64, topk_group = 2 : i64, '
                 'routed_scaling_factor = 2.5 : f32')
        self.check("grouped", 16, 32, 16, e, 2, attrs,
                   {"scoring": "sigmoid", "n_group": 4, "topk_group": 2, "scaling": 2.5}, bias=bias)

    def test_a_nan_token_leaves_the_others_intact(self):
        """A token whose scores are all NaN has no eligible group or expert
        (its ids are -1, counted as expert 0): the routing stays inside its
        workspace and every other token's output is exact."""
        t, d, f, e = 10, 32, 16, 8
        wg, wu, wd = self.weights(d, f, e)
        router = self.rng.standard_normal((e, d)).astype(np.float32)
        x = self.rng.standard_normal((t, d)).astype(np.float32)
        x[4] = np.nan
        attrs = 'top_k = 2 : i64, scoring = "sigmoid", n_group = 4 : i64, topk_group = 2 : i64'
        tensors = [("router", router)]
        for i in range(e):
            tensors += [(f"e{i}.gate", wg[i]), (f"e{i}.up", wu[i]), (f"e{i}.down", wd[i])]
        y, _ = self.compile_run("nan", moe_text(t, d, f, e, 2, attrs, 0, 1, False), tensors, x)
        keep = [i for i in range(t) if i != 4]
        want = moe_reference(x[keep].astype(np.float64), router, wg, wu, wd, 2, scoring="sigmoid",
                             n_group=4, topk_group=2)
        err = np.linalg.norm(y[keep] - want) / np.linalg.norm(want)
        self.assertLess(err, 2e-5, f"relative L2 {err:.2e}")

    def test_one_token(self):
        self.check("decode", 1, 32, 16, 8, 3, 'top_k = 3 : i64, scoring = "softmax", norm_topk_prob = false',
                   {"scoring": "softmax", "norm": False})

    def test_two_layers_and_repeated_runs(self):
        """The routing counter is shared by the layers and must be back at
        zero after every launch: the fifth run is still exact."""
        self.check("repeat", 24, 32, 16, 8, 2, 'top_k = 2 : i64, scoring = "softmax"',
                   {"scoring": "softmax"}, layers=2, repeat=5)


class DeepSeek(unittest.TestCase):
    def test_deepseek_dumps_reparse_and_rerun(self):
        """Every stage dumped for a tiny DeepSeek-V3 (grouped experts, the
        routing counter state, both MLA forms, the fused cache write) parses
        with kiln-opt, and the kernel pipeline re-run on the graph dump gives
        the kernel dump's launches."""
        import make_tiny_checkpoint as mk
        tmp = tempfile.mkdtemp(prefix="kiln-moe-dumps-")
        try:
            ck = os.path.join(tmp, "ck")
            mk.make_checkpoint("deepseek_v3", ck)
            dump = os.path.join(tmp, "ir")
            run([tool("kiln-compile"), ck, "-o", os.path.join(tmp, "p.kplan"), "--dump-ir-dir", dump])
            files = sorted(f for f in os.listdir(dump) if f.endswith(".mlir"))
            self.assertTrue(any("kernel" in f for f in files), files)
            for f in files:
                run([tool("kiln-opt"), os.path.join(dump, f), "-o", os.devnull])
            graph = [f for f in files if "graph" in f][0]
            kernel = open(os.path.join(dump, [f for f in files if "kernel" in f][0])).read()
            rerun = run([tool("kiln-opt"), os.path.join(dump, graph), "--kiln-kernel-pipeline"]).stdout
            for op in ["moe_route", "moe_up", "moe_down", "moe_combine", "mla_naive", "latent_cache_write"]:
                self.assertIn(f"kiln_kernel.{op} ", kernel, op)
                self.assertEqual(rerun.count(f"kiln_kernel.{op} "), kernel.count(f"kiln_kernel.{op} "), op)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


    def test_forms_and_blocks_agree(self):
        """The absorbed and naive MLA forms (--mla-form) and another expert
        block (--moe-block-m) give the logits of the default plan: same
        equations, other summation orders."""
        import make_tiny_checkpoint as mk
        tmp = tempfile.mkdtemp(prefix="kiln-moe-forms-")
        try:
            ck = os.path.join(tmp, "ck")
            mk.make_checkpoint("deepseek_v3", ck)
            tokens = os.path.join(tmp, "tokens.npy")
            np.save(tokens, np.random.default_rng(3).integers(0, 128, size=(2, 16)).astype(np.int32))

            def logits(name, *flags):
                plan = os.path.join(tmp, name + ".kplan")
                run([tool("kiln-compile"), ck, "-o", plan, "--max-batch=2", "--max-seq=16", *flags])
                names = [k["name"] for k in json.loads(run([tool("kiln-inspect"), plan, "--json"]).stdout)["kernels"]]
                out = os.path.join(tmp, name + ".npy")
                run([tool("kiln-run"), plan, "--input", f"tokens={tokens}", "--output", f"logits={out}"])
                return np.load(out), names

            base, names = logits("auto")
            self.assertTrue(any(n.startswith("mla_naive") for n in names))  # prefill: naive
            for name, flags, kind in [("absorbed", ["--mla-form=absorbed"], "mla_s16"),
                                      ("naive", ["--mla-form=naive"], "mla_naive_s1_"),
                                      ("bm64", ["--moe-block-m=64"], "moe_up_d64_f32_bm64")]:
                with self.subTest(name=name):
                    other, names = logits(name, *flags)
                    self.assertTrue(any(n.startswith(kind) for n in names), (kind, names))
                    err = np.linalg.norm(other - base) / np.linalg.norm(base)
                    self.assertLess(err, 1e-6, f"{name}: relative L2 {err:.2e}")
            p = run([tool("kiln-compile"), ck, "-o", os.path.join(tmp, "x.kplan"), "--mla-form=fast"], check=False)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("--mla-form", p.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
