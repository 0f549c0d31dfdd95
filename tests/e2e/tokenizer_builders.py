"""Tokenizers built with the Hugging Face `tokenizers` library (a test-only
dependency) in the shapes that model families ship in their tokenizer.json,
trained on a generated corpus: no hub download. Used by test_tokenizer.py and
tests/bench/tokenizer_bench.py.

Each builder returns the path of a saved tokenizer.json; the reference side
of a test loads that same file with tokenizers.Tokenizer.from_file.
"""
import json
import os
import random

from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors, trainers)
from tokenizers import AddedToken

# Split patterns as the checkpoints' tokenizer.json files have them.
DEEPSEEK_V3_SPLITS = [
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|"""
    r""" ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
]
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# DeepSeek-V2 / DeepSeek LLM: line breaks, letter and punctuation runs, `\s+$`
# (Oniguruma's `$` is an end of line), CJK runs, then single digits.
DEEPSEEK_V2_SPLITS = [r"[\r\n]", r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽ]+",
                      r"\s?[!-/:-~！-／：-～‘-‟　-。]+", r"\s+$", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"]

BOS_DS, EOS_DS, PAD_DS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
DS_SPECIALS = ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "<｜fim▁hole｜>",
               "<｜fim▁begin｜>", "<｜fim▁end｜>", "<｜tool▁calls▁begin｜>"]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>", "<|reserved_special_token_0|>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

WORDS = ("the of and to in is that for it with as was on be by this are from at or an have "
         "not they which one you were all we her she there been if more when will would who "
         "so no time people about could also model token layer expert attention kernel "
         "tensor weight runtime compile graph cache decode prefill latent router").split()
CODE = [
    "def forward(self, x):\n    return self.w2(F.silu(self.w1(x)) * self.w3(x))\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "if x != None and len(xs) >= 10:\n        print(f\"{x!r}: {xs[-1]:.3f}\")\n",
    "const auto& [k, v] = *it;  // C++17\n#include <vector>\nstd::vector<int> v{1, 2, 3};\n",
    "SELECT id, name FROM users WHERE age > 21 ORDER BY name;\n",
    "    \n\n   \t\t  x = {'a': [1, 2], \"b\": (3,)}\r\n",
]
UNICODE = ["日本語のテキストです。", "中文分词测试，人工智能。", "한국어 문장입니다.", "Ελληνικά κείμενα",
           "Русский текст, ёж", "مرحبا بالعالم", "שלום עולם", "हिन्दी पाठ", "ไทย ภาษา",
           "café naïve résumé", "e\u0301 a\u0308 n\u0303", "😀 👍🏽 👨‍👩‍👧 🇫🇷", "Ｆｕｌｌｗｉｄｔｈ １２３",
           "½ ² ٣ ௫ Ⅻ", "\u00a0nbsp\u3000ideographic\u2028line"]


def _made_up_word(rng):
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v",
              "st", "tr", "ch", "sh", "th", "pl", "gr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "y"]
    codas = ["", "", "n", "r", "s", "t", "ng", "ck", "ll", "nd"]
    return "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                   for _ in range(rng.randint(1, 4)))


def corpus_lines(seed, n):
    """A deterministic mix of English-like prose (real and made-up words),
    contractions, numbers, code, whitespace runs and several scripts."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.5:
            words = [rng.choice(WORDS) if rng.random() < 0.6 else _made_up_word(rng)
                     for _ in range(rng.randint(3, 20))]
            if rng.random() < 0.3:
                words.insert(rng.randrange(len(words)), rng.choice(["don't", "I'll", "we've",
                                                                     "it's", "THEY'RE", "she'd"]))
            if rng.random() < 0.3:
                words.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
            s = " ".join(words)
            lines.append(s[0].upper() + s[1:] + rng.choice([".", "!", "?", ",", ";", ""]))
        elif kind < 0.7:
            lines.append(rng.choice(CODE))
        elif kind < 0.9:
            lines.append(rng.choice(UNICODE) + " " + rng.choice(UNICODE))
        else:
            lines.append(f"{rng.randint(0, 99999)}.{rng.randint(0, 999)} "
                         f"{rng.randint(1900, 2030)}-{rng.randint(1, 12):02d}")
    return lines


def _train(tok, lines, vocab_size, specials=(), alphabet=None, limit_alphabet=None):
    kw = {}
    if alphabet is not None:
        kw["initial_alphabet"] = alphabet
    if limit_alphabet is not None:
        kw["limit_alphabet"] = limit_alphabet
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                  show_progress=False, **kw)
    tok.train_from_iterator(lines, trainer)


def _patch(path, fn):
    """Edits a saved tokenizer.json (fields the Python API does not set)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    fn(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)


def byte_level(out_dir, name, splits, vocab_size=3000, seed=1, lines=4000, bos=None,
               specials=(), added=(), normalizer=None, post="template", digits=False,
               ignore_merges=False, bytelevel_regex=False, prefix_space=False):
    """A byte-level BPE: Split patterns (Isolated), optional Digits, then
    ByteLevel, as DeepSeek, Llama 3 and Qwen 2 ship it."""
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    steps = [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in splits]
    if digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=prefix_space,
                                          use_regex=bytelevel_regex))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    trained_specials = [bos] if bos else []
    trained_specials += list(specials)
    _train(tok, corpus_lines(seed, lines), vocab_size, trained_specials,
           alphabet=pre_tokenizers.ByteLevel.alphabet())
    if added:
        tok.add_tokens(list(added))
    if post == "template" and bos:
        single = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tok.token_to_id(bos))])
        tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False),
                                                  single])
    elif post == "bytelevel":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    path = os.path.join(out_dir, f"{name}.json")
    tok.save(path)
    if ignore_merges:
        _patch(path, lambda d: d["model"].__setitem__("ignore_merges", True))
    return path


def deepseek_v3(out_dir, **kw):
    return byte_level(out_dir, "deepseek_v3", DEEPSEEK_V3_SPLITS, bos=BOS_DS,
                      specials=[EOS_DS, PAD_DS],
                      added=[AddedToken(t, special=True, normalized=False) for t in DS_SPECIALS]
                      + [AddedToken("<|placeholder|>", special=False, normalized=True)], **kw)


def llama3(out_dir):
    return byte_level(out_dir, "llama3", [LLAMA3_SPLIT], seed=2, bos=LLAMA3_SPECIALS[0],
                      specials=LLAMA3_SPECIALS[1:], ignore_merges=True)


def qwen2(out_dir):
    return byte_level(out_dir, "qwen2", [QWEN2_SPLIT], seed=3, specials=QWEN_SPECIALS,
                      normalizer=normalizers.NFC(), post="bytelevel")


def deepseek_v2(out_dir):
    return byte_level(out_dir, "deepseek_v2", DEEPSEEK_V2_SPLITS, seed=4, bos=BOS_DS,
                      specials=[EOS_DS], digits=True)


def gpt2_style(out_dir):
    """ByteLevel with its own GPT-2 pattern and a prefix space; added tokens
    with lstrip / rstrip / single_word (RoBERTa's <mask> strips left)."""
    return byte_level(out_dir, "gpt2_style", [], seed=5, bytelevel_regex=True,
                      prefix_space=True, specials=["<|endoftext|>"], post=None,
                      added=[AddedToken("<mask>", special=True, lstrip=True),
                             AddedToken("[R]", special=True, rstrip=True),
                             AddedToken("word", single_word=True, normalized=False),
                             AddedToken("ab", single_word=False, normalized=False)])


def sentencepiece_bpe(out_dir, name, style="legacy", byte_fallback=True, vocab_size=1500, seed=6):
    """A SentencePiece-style BPE as Llama 2 / Mistral / Mixtral tokenizer.json
    files have it: "▁" for spaces, <unk> <s> </s>, <0x00>..<0xFF> (byte
    fallback) at ids 3..258, fuse_unk, and the decoder chain Replace +
    ByteFallback + Fuse + Strip (or Metaspace).

    style: "legacy" (normalizer Prepend + Replace, no pre-tokenizer: Llama 2,
    Mixtral), "metaspace" (pre-tokenizer Metaspace prepend_scheme "first",
    split false: Mistral, newer Llama 2 conversions) or "metaspace_split"
    (Metaspace "always" with split, and the Metaspace decoder)."""
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                                   normalizers.Replace(" ", "▁")])
    lines = [ln for ln in corpus_lines(seed, 2500) if len(ln) < 200]
    # A small alphabet: rarer characters go through byte fallback (or <unk>).
    _train(trainer_tok, lines, vocab_size, ["<unk>", "<s>", "</s>"], limit_alphabet=120)
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    if byte_fallback:
        for b in range(256):
            vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if t not in vocab:
            vocab[t] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=byte_fallback))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ["<unk>", "<s>", "</s>"]])
    chain = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                               decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    if style == "legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
        tok.decoder = chain
    elif style == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                     split=False)
        tok.decoder = chain
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                     split=True)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    # Added tokens matched in the normalized text ("▁hello▁world" with the
    # legacy normalizer), after the normalizer is set.
    tok.add_tokens([AddedToken("hello world", normalized=True),
                    AddedToken("<ctrl>", special=True, normalized=True)])
    path = os.path.join(out_dir, f"{name}.json")
    tok.save(path)
    return path


def all_tokenizers(out_dir):
    """name -> tokenizer.json path, one of each supported shape."""
    return {
        "deepseek_v3": deepseek_v3(out_dir),
        "llama3": llama3(out_dir),
        "qwen2": qwen2(out_dir),
        "deepseek_v2": deepseek_v2(out_dir),
        "gpt2_style": gpt2_style(out_dir),
        "llama2": sentencepiece_bpe(out_dir, "llama2", "legacy"),
        "llama2_unk": sentencepiece_bpe(out_dir, "llama2_unk", "legacy", byte_fallback=False),
        "mistral": sentencepiece_bpe(out_dir, "mistral", "metaspace"),
        "metaspace_split": sentencepiece_bpe(out_dir, "metaspace_split", "metaspace_split"),
    }


def reference(path):
    return Tokenizer.from_file(path)
