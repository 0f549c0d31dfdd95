"""Kiln's tokenizer against Hugging Face `tokenizers` (the test-only reference,
installed by scripts/setup.sh), through kiln-tokenize.

The tokenizers are built here with the library in the shapes that DeepSeek-V3,
DeepSeek-V2, Llama 3, Qwen 2, GPT-2, Llama 2 / Mixtral (legacy), Mistral
(Metaspace) ship in tokenizer.json (tokenizer_builders.py), trained on a
generated corpus, saved, and loaded by both sides from the same file. Compared
exactly: the ids of encode (with and without special tokens) on varied text,
decode (with and without skipping special tokens) of those ids and of random
ids, streaming decode step by step against tokenizers.decoders.DecodeStream,
the vocabulary (size and every id's token), a 1 MB text, and the errors for
what Kiln does not support.

Run by ctest with KILN_BIN and KILN_SOURCE_DIR set.
"""
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import unittest

from kilntest import tool  # noqa: E402
import tokenizer_builders as tb  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

FIXED_TEXTS = [
    "", " ", "  ", "\n", "Hello, world!", "hello world", "Hello World HELLO",
    "  leading and trailing  ", "multiple     spaces\tand\ttabs\n\nnew\r\nlines\r\n",
    "\n\n\n   \n\t\t\n", "don't I'll we've it's THEY'RE she'd 's 'S", "x'sy 'll'",
    "12345 3.14159 1,000,000 0x1F 2024-06-01 007", "1234567890123", "٣٤٥ ௫ ½ ²",
    *tb.UNICODE, *tb.CODE,
    "a\u0301\u0302\u0303 e\u0308\u0301 \u1100\u1161\u11a8 \ufb01 Å Å",
    "\u180e\u0085\u2028\u2029\u00a0\u3000\u200b\u200d\ufeff x",
    "emoji 👨‍👩‍👧‍👦 🏳️‍🌈 🩵 🫨 new: \U0001fadc \U00031350 \U0002ebf0",
    "مرحبا بالعالم hello שלום 123",
    # added / special tokens inside text, adjacent, partial
    "a<｜User｜>b<｜Assistant｜> c <｜begin▁of▁sentence｜>x<｜end▁of▁sentence｜>",
    "<｜User｜><｜User｜><｜Use <think>\nreasoning</think>\n\n<|placeholder|>!",
    "<s>hello</s> <s> world<unk></s></s>", "<s>", "</s>x",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    " <mask> x <mask>[R]   y  word words aword word. ab abc <|endoftext|>",
    "line one\nline two   \nline three\t\n",
    "say hello world and <ctrl> hello  world,hello world<ctrl>", "hello world",
]


def random_texts(seed, n):
    """Random strings over many Unicode categories, with special tokens."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E)] * 6 + [(0x9, 0xD), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x4FF),
                                     (0x590, 0x6FF), (0x900, 0x97F), (0x2000, 0x206F),
                                     (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
                                     (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x10000, 0x3FFFF)]
    specials = ["<s>", "</s>", "<｜User｜>", "<｜begin▁of▁sentence｜>", "<|im_end|>", "<mask>",
                "[R]", "word", "'s", "'LL", "  ", "\n\n", "\r\n", "\t", "▁", "1234567"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 40)):
            r = rng.random()
            if r < 0.15:
                parts.append(rng.choice(specials))
            elif r < 0.3:
                parts.append(rng.choice(tb.WORDS))
            else:
                lo, hi = rng.choice(ranges)
                c = rng.randint(lo, hi)
                if not 0xD800 <= c <= 0xDFFF:
                    parts.append(chr(c))
        out.append("".join(parts))
    return out


class TokenizerVsHuggingFace(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-tokenizer-")
        cls.paths = tb.all_tokenizers(cls.tmp)
        cls.refs = {name: Tokenizer.from_file(p) for name, p in cls.paths.items()}
        cls.texts = FIXED_TEXTS + random_texts(7, 40)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def kiln(self, path, args, stdin=b"", check=True):
        p = subprocess.run([tool("kiln-tokenize"), path, *args], input=stdin, capture_output=True)
        if check and p.returncode != 0:
            raise AssertionError(f"kiln-tokenize {path} {' '.join(args)} failed "
                                 f"({p.returncode}): {p.stderr.decode()}")
        return p

    def encode(self, path, text, special):
        out = self.kiln(path, ["--encode"] + ([] if special else ["--no-special"]),
                        text.encode()).stdout
        return [int(t) for t in out.split()]

    def decode(self, path, ids, skip, stream=False):
        args = ["--decode"] + (["--skip-special"] if skip else []) + (["--stream"] if stream else [])
        p = self.kiln(path, args, " ".join(map(str, ids)).encode(), check=not stream)
        if stream:
            chunks = [bytes.fromhex(line).decode("utf-8")
                      for line in p.stdout.decode().split("\n")[:-1]]
            return chunks + (["<error>"] if p.returncode else [])
        return p.stdout.decode("utf-8")

    def check_all(self, what, cases):
        """cases: (name, input, expected, actual); reports the first mismatches."""
        bad = [c for c in cases if c[2] != c[3]]
        if bad:
            self.fail(f"{what}: {len(bad)} of {len(cases)} differ, e.g.\n" + "\n".join(
                f"  {n}: {inp!r}\n    tokenizers: {exp!r}\n    kiln:       {act!r}"
                for n, inp, exp, act in bad[:5]))
        return len(cases)

    def test_encode(self):
        cases = []
        for name, path in self.paths.items():
            ref = self.refs[name]
            for text in self.texts:
                for special in (True, False):
                    cases.append((f"{name} add_special_tokens={special}", text,
                                  ref.encode(text, add_special_tokens=special).ids,
                                  self.encode(path, text, special)))
        n = self.check_all("encode", cases)
        print(f"encode: {n} cases equal across {len(self.paths)} tokenizers")

    def id_lists(self, ref, texts, seed, randoms):
        """The ids of `texts`, then `randoms` random id sequences (any token,
        so byte tokens cut characters and special tokens land anywhere)."""
        rng = random.Random(seed)
        size = ref.get_vocab_size(with_added_tokens=True)
        return [ref.encode(t).ids for t in texts] + [
            [rng.randrange(size) for _ in range(rng.randint(1, 24))] for _ in range(randoms)]

    def test_decode(self):
        cases = []
        for name, path in self.paths.items():
            ref = self.refs[name]
            for ids in self.id_lists(ref, self.texts, 11, 30) + [[]]:
                for skip in (False, True):
                    cases.append((f"{name} skip_special_tokens={skip}", ids,
                                  ref.decode(ids, skip_special_tokens=skip),
                                  self.decode(path, ids, skip)))
        n = self.check_all("decode", cases)
        print(f"decode: {n} cases equal")

    def test_stream_decode(self):
        cases = []
        for name, path in self.paths.items():
            ref = self.refs[name]
            for ids in self.id_lists(ref, self.texts[::2], 12, 15):
                for skip in (False, True):
                    stream = decoders.DecodeStream(skip_special_tokens=skip)
                    expected = []
                    try:
                        for i in ids:
                            expected.append(stream.step(ref, i) or "")
                    except Exception as e:  # noqa: BLE001 - the library's own stream error
                        # Random ids can make a text that does not extend the
                        # previous one (a byte-fallback run cut by another
                        # token): both refuse it at the same step.
                        self.assertIn("Invalid prefix", str(e))
                        expected.append("<error>")
                    cases.append((f"{name} skip_special_tokens={skip}", ids, expected,
                                  self.decode(path, ids, skip, stream=True)))
        n = self.check_all("stream decode", cases)
        print(f"stream decode: {n} id sequences equal step by step")

    def test_vocab(self):
        for name, path in self.paths.items():
            ref = self.refs[name]
            lines = self.kiln(path, ["--vocab"]).stdout.decode().split("\n")
            self.assertEqual(int(lines[0]), ref.get_vocab_size(with_added_tokens=True), name)
            kiln = {int(i): bytes.fromhex(h).decode() for i, h in
                    (line.split("\t") for line in lines[1:] if line)}
            size = ref.get_vocab_size(with_added_tokens=True)
            expected = {i: ref.id_to_token(i) for i in range(size + 8)
                        if ref.id_to_token(i) is not None}
            self.assertEqual(kiln, expected, name)

    def test_large_text(self):
        """1 MB of mixed text: the same ids, and in reasonable time."""
        lines, size = [], 0
        for line in tb.corpus_lines(99, 100000):
            lines.append(line)
            size += len(line.encode()) + 1
            if size >= 1 << 20:
                break
        text = "\n".join(lines)
        path = self.paths["deepseek_v3"]
        start = time.perf_counter()
        expected = self.refs["deepseek_v3"].encode(text).ids
        hf_s = time.perf_counter() - start
        start = time.perf_counter()
        ids = self.encode(path, text, True)
        kiln_s = time.perf_counter() - start
        print(f"1 MB: {len(ids)} ids; kiln-tokenize (load + encode + print) {kiln_s:.2f} s, "
              f"tokenizers encode {hf_s:.2f} s")
        self.assertEqual(ids, expected)
        # A loose bound that catches quadratic behaviour, not a benchmark
        # (tests/bench/tokenizer_bench.py measures).
        self.assertLess(kiln_s, 20.0)
        self.assertEqual(self.decode(path, ids, False), self.refs["deepseek_v3"].decode(
            ids, skip_special_tokens=False))

    def test_unsupported_is_an_error(self):
        """What Kiln does not implement is refused, naming the JSON path."""
        base = self.paths["deepseek_v3"]
        with open(base, encoding="utf-8") as f:
            original = json.load(f)

        def variant(name, edit):
            data = json.loads(json.dumps(original))
            edit(data)
            path = os.path.join(self.tmp, f"bad_{name}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False)
            return path

        wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
        wp_path = os.path.join(self.tmp, "bad_wordpiece.json")
        wordpiece.save(wp_path)
        unigram = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0))
        ug_path = os.path.join(self.tmp, "bad_unigram.json")
        unigram.save(ug_path)

        def set_component(key, hf_object):
            holder = Tokenizer(models.BPE())
            setattr(holder, key, hf_object)
            value = json.loads(holder.to_str())[key]
            return lambda d: d.__setitem__(key, value)

        truncated = Tokenizer.from_file(base)
        truncated.enable_truncation(16)
        tr_path = os.path.join(self.tmp, "bad_truncation.json")
        truncated.save(tr_path)

        cases = [
            (wp_path, "model.type: unsupported model type 'WordPiece'"),
            (ug_path, "model.type: unsupported model type 'Unigram'"),
            (variant("whitespace", set_component("pre_tokenizer", pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(), pre_tokenizers.Whitespace()]))),
             "pre_tokenizer.pretokenizers[1].type: unsupported pre-tokenizer type 'Whitespace'"),
            (variant("lowercase", set_component("normalizer", normalizers.Lowercase())),
             "normalizer.type: unsupported normalizer type 'Lowercase'"),
            (variant("wp_decoder", set_component("decoder", decoders.WordPiece())),
             "decoder.type: unsupported decoder type 'WordPiece'"),
            (variant("dropout", lambda d: d["model"].__setitem__("dropout", 0.1)),
             "model.dropout"),
            (tr_path, "truncation: "),
        ]
        for path, message in cases:
            p = self.kiln(path, ["--encode"], b"x", check=False)
            self.assertEqual(p.returncode, 1, path)
            self.assertIn(message, p.stderr.decode(), path)


if __name__ == "__main__":
    unittest.main()
