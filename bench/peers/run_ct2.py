"""CTranslate2 peer: the checkpoint converted with ctranslate2's
TransformersConverter (weights stored in the variant's type), run by
ctranslate2.Translator on CPU with greedy search (beam_size=1).

Variants: float32, int8, int8_float32 (the compute_type; the model is
converted with the same quantization so load time does not include it)."""

import os

import common

args = common.parse_args(["float32", "int8", "int8_float32"])

import ctranslate2  # noqa: E402


def versions():
    return {"ctranslate2": ctranslate2.__version__}


def model_dir():
    return os.path.join(args.cache, "ct2-" + args.variant)


def prepare():
    out = model_dir()
    if os.path.exists(os.path.join(out, "model.bin")):
        return {"cached": True, "dir": out}
    from ctranslate2.converters import TransformersConverter

    tmp = out + ".tmp"
    TransformersConverter(args.model).convert(tmp, quantization=args.variant, force=True)
    os.replace(tmp, out)
    return {"cached": False, "dir": out}


def load(wl):
    import json

    d = model_dir()
    tr = ctranslate2.Translator(d, device="cpu", compute_type=args.variant,
                                intra_threads=args.threads, inter_threads=1)
    vocab_file = os.path.join(d, "shared_vocabulary.json")
    if os.path.exists(vocab_file):
        with open(vocab_file) as f:
            vocab = json.load(f)
    else:
        with open(os.path.join(d, "shared_vocabulary.txt")) as f:
            vocab = [line.rstrip("\n") for line in f]
    index = {t: i for i, t in enumerate(vocab)}
    toks = lambda ids: [vocab[i] for i in ids]  # noqa: E731
    return {"tr": tr, "vocab": vocab, "index": index,
            "w1": [toks(wl["w1"]["ids"])], "w2": [toks(r) for r in wl["w2"]["ids"]],
            "w3": [toks(wl["w3"]["ids"])]}


def translate(s, batch, n, **kw):
    res = s["tr"].translate_batch(batch, beam_size=1, max_decoding_length=n, min_decoding_length=n,
                                  max_input_length=0, **kw)
    return res


def w1(s, wl):
    r = translate(s, s["w1"], wl["w1"]["new_tokens"])
    return [s["index"][t] for t in r[0].hypotheses[0]]


def w2(s, wl):
    r = translate(s, s["w2"], wl["w2"]["new_tokens"], max_batch_size=len(s["w2"]))
    return [[s["index"][t] for t in x.hypotheses[0]] for x in r]


def w3(s, wl):
    # ctranslate2.Translator has no encoder-only call: this is the encoder plus
    # ONE decoder step (max_decoding_length=1), reported with that caveat.
    translate(s, s["w3"], 1)
    return None


def accuracy(s, wl, ref_ids):
    # Teacher-forced logits: force the reference ids as the target prefix and ask
    # for the per-step vocabulary scores.
    import numpy as np

    prefix = [[s["vocab"][i] for i in ref_ids[:-1]]]
    r = s["tr"].translate_batch(s["w1"], target_prefix=prefix, beam_size=1,
                                max_decoding_length=len(ref_ids), min_decoding_length=len(ref_ids),
                                return_logits_vocab=True, max_input_length=0)
    rows = [np.asarray(x) for x in r[0].logits[0]] if r[0].logits else None
    if not rows:
        return None
    return np.stack(rows).reshape(len(rows), -1)


common.run_main(args, load, versions, w1, w2, w3, accuracy=accuracy, prepare=prepare)
