#!/usr/bin/env python3
"""mT5- and umT5-style tokenizers, and ByT5's, with HF's ids for them
(tests/tokenizer_kinds.rs).

The real google/mt5-* and google/umt5-* tokenizers are not ours to ship, so
this trains two small SentencePiece Unigram models the way theirs were made
(mT5: no byte fallback, no sentinel tokens in the tokenizer, `extra_ids=0`;
umT5: byte fallback, sentinels) on a deterministic multilingual corpus (Latin
with diacritics, Cyrillic, Greek, CJK), converts each with HF's own
`T5TokenizerFast.from_pretrained(dir with spiece.model, from_slow=True)`
into the `tokenizer.json` a checkpoint ships, and records HF's ids and decoded text for a few texts. Identity
normalization keeps the files small (an nmt_nfkc charsmap alone is 320 KB);
the Precompiled normalizer is covered by T5's own tokenizer tests.

Usage: bash tools/refs/make_refs.sh (runs this too), or
    tools/refs/.venv/bin/python tools/refs/make_tokenizer_refs.py
"""
import json
import os
import tempfile

import numpy as np
import sentencepiece as spm
from transformers import ByT5Tokenizer, T5Tokenizer, T5TokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "fixtures", "tokenizers")

# name -> (byte_fallback, extra_ids): as mT5's and umT5's tokenizers have them.
KINDS = {"mt5-style": (False, 0), "umt5-style": (True, 8)}
VOCAB = 500

TEXTS = [
    "hello world",
    "Grüße aus Köln, señor!",
    "привет мир",
    "αβγ δεζ",
    "的一是 不了人",
    "emoji 😀 and ½ ﬁ",
    "  spaced   out  ",
    "mixed: abc где 中 ä",
    "<extra_id_0> x <extra_id_1>y",
]


# ByT5 ships no tokenizer.json: its tokenizer is HF's ByT5Tokenizer itself.
BYT5_TEXTS = TEXTS + [
    "a </s> b", "a</s>b", "x<pad>y", "\t<unk>\n z", "</s></s>", "end </s>", "<extra_id_124>", "<extra_id_125>",
    "<extra_id_007>", "<extra_id_>", "<extra_id_3", "  lead and trail  ", "",
]
# Ids to decode: bytes that are not valid UTF-8, sentinels, specials, ids past the vocabulary.
BYT5_DECODE = [[0xC3 + 3, 0x28 + 3, 104], [107, 108, 1, 0, 300, 2, 383], [0xF0 + 3, 0x9F + 3, 104 + 3], [400, 3]]


def byt5_refs():
    t = ByT5Tokenizer()
    cases = [{"text": x, "ids": t(x).input_ids, "decoded": t.decode(t(x).input_ids, skip_special_tokens=True)}
             for x in BYT5_TEXTS]
    decodes = []
    for ids in BYT5_DECODE:
        try:
            text = t.decode(ids, skip_special_tokens=True)
        except Exception:  # ids past the vocabulary: HF raises, t5edge skips them
            continue
        decodes.append({"ids": ids, "decoded": text})
    return {"tokenizer_len": len(t), "extra_ids": 125, "cases": cases, "decodes": decodes}


def corpus(path):
    rng = np.random.default_rng(0)
    alph = ["abcdefghijklmnopqrstuvwxyzéèàüöäßñç", "абвгдеёжзийклмнопрстуфхцчшщыьэюя",
            "αβγδεζηθικλμνξοπρστυφχψω", "的一是不了人我在有他这为之大来以个中上们"]
    words = []
    for k, a in enumerate(alph):
        for _ in range(400):
            n = int(rng.integers(1, 4 if k == 3 else 8))
            words.append("".join(a[int(i)] for i in rng.integers(0, len(a), size=n)))
    lines = [" ".join(words[int(i)] for i in rng.integers(0, len(words), size=12)) for _ in range(3000)]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    os.makedirs(OUT, exist_ok=True)
    refs = {"how": "HF transformers T5TokenizerFast.from_pretrained(from_slow=True) over a SentencePiece Unigram model trained here "
                   "(tools/refs/make_tokenizer_refs.py); ids = fast(text).input_ids, text = fast.decode(ids, "
                   "skip_special_tokens=True); slow_ids = T5Tokenizer (sentencepiece) for comparison.",
            "versions": {"transformers": __import__("transformers").__version__,
                         "tokenizers": __import__("tokenizers").__version__,
                         "sentencepiece": spm.__version__},
            "kinds": {}}
    with tempfile.TemporaryDirectory() as d:
        corpus(os.path.join(d, "corpus.txt"))
        for name, (byte_fallback, extra) in KINDS.items():
            prefix = os.path.join(d, name)
            spm.SentencePieceTrainer.train(
                input=os.path.join(d, "corpus.txt"), model_prefix=prefix, vocab_size=VOCAB,
                model_type="unigram", normalization_rule_name="identity", byte_fallback=byte_fallback,
                num_threads=1, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
                minloglevel=2)
            # As a hub directory holding only spiece.model is loaded: the
            # slow tokenizer, and the fast one HF converts from it.
            hub = os.path.join(d, name + "-spm")
            os.makedirs(hub)
            os.rename(prefix + ".model", os.path.join(hub, "spiece.model"))
            slow = T5Tokenizer.from_pretrained(hub, extra_ids=extra)
            fast = T5TokenizerFast.from_pretrained(hub, extra_ids=extra, from_slow=True)
            save = os.path.join(d, name + "-hf")
            fast.save_pretrained(save)
            with open(os.path.join(save, "tokenizer.json")) as f:
                tj = json.load(f)
            with open(os.path.join(OUT, f"{name}.json"), "w") as f:
                json.dump(tj, f, ensure_ascii=False, separators=(",", ":"))
            cases = []
            for t in TEXTS:
                ids = fast(t).input_ids
                cases.append({"text": t, "ids": ids, "decoded": fast.decode(ids, skip_special_tokens=True),
                              "slow_ids": slow(t).input_ids})
            refs["kinds"][name] = {"byte_fallback_in_spm": byte_fallback, "extra_ids": extra,
                                   "tokenizer_len": len(fast), "cases": cases}
            same = sum(c["ids"] == c["slow_ids"] for c in cases)
            print(f"{name}: {len(fast)} ids, fast == slow on {same}/{len(cases)} texts")
    refs["byt5"] = byt5_refs()
    print(f"byt5: {len(refs['byt5']['cases'])} texts, {len(refs['byt5']['decodes'])} decodes")
    with open(os.path.join(OUT, "refs.json"), "w") as f:
        json.dump(refs, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
