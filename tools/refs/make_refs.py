#!/usr/bin/env python3
"""Reference outputs of HF transformers on `t5edge synth` checkpoints.

The engine's core tests compare against these (tests/synth_refs.rs), so
`cargo test` checks numerics on a fresh machine without ../shared. Each case is
a synthetic checkpoint the engine regenerates deterministically at test time;
the manifest records its sha256 so a change in the generator is caught rather
than silently compared against stale references.

Usage (one line; installs torch + transformers into tools/refs/.venv):
    bash tools/refs/make_refs.sh
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import (MT5ForConditionalGeneration, T5EncoderModel, T5ForConditionalGeneration,
                          UMT5EncoderModel, UMT5ForConditionalGeneration)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "refs")

# name -> t5edge synth arguments. Together they cover: the embedded default
# (tied, relu, 32128 vocab); gated-gelu with an untied head, unequal depths and
# num_heads x d_kv != d_model; exact-erf gelu with few buckets and a short max
# distance, so long prompts hit the log-spaced buckets and their clamp.
CASES = {
    "tiny-nl2": ["--preset", "t5-efficient-tiny-nl2", "--seed", "0"],
    "gated-untied": [
        "--preset", "t5-efficient-tiny-el3-dl2", "--seed", "7", "--norm-jitter", "0.2",
        "--set", "feed_forward_proj=gated-gelu", "--set", "tie_word_embeddings=false",
        "--set", "vocab_size=1000", "--set", "num_heads=8", "--set", "d_kv=32",
    ],
    "gelu-odd": [
        "--preset", "t5-efficient-tiny-el1-dl3", "--seed", "3", "--norm-jitter", "0.3",
        "--set", "feed_forward_proj=gelu", "--set", "vocab_size=512", "--set", "d_model=64",
        "--set", "d_ff=96", "--set", "num_heads=2", "--set", "d_kv=48",
        "--set", "relative_attention_num_buckets=16", "--set", "relative_attention_max_distance=20",
    ],
    "t5-encoder-only": [
        "--preset", "t5-efficient-tiny-el2-dl2", "--seed", "11", "--norm-jitter", "0.2", "--encoder-only",
        "--set", "feed_forward_proj=gated-silu", "--set", "vocab_size=700", "--set", "d_model=64",
        "--set", "d_ff=160", "--set", "num_heads=4", "--set", "d_kv=16",
    ],
    "umt5": [
        "--preset", "t5-efficient-tiny-el2-dl3", "--seed", "5", "--norm-jitter", "0.2",
        "--set", "model_type=umt5", "--set", "feed_forward_proj=gated-gelu", "--set", "tie_word_embeddings=false",
        "--set", "vocab_size=800", "--set", "d_model=96", "--set", "d_ff=192", "--set", "num_heads=6",
        "--set", "d_kv=16", "--set", "relative_attention_num_buckets=16", "--set", "relative_attention_max_distance=40",
    ],
    "umt5-encoder-only": [
        "--preset", "t5-efficient-tiny-el3-dl1", "--seed", "6", "--norm-jitter", "0.2", "--encoder-only",
        "--set", "model_type=umt5", "--set", "feed_forward_proj=gated-gelu", "--set", "tie_word_embeddings=false",
        "--set", "vocab_size=600", "--set", "d_model=64", "--set", "d_ff=128", "--set", "num_heads=4",
        "--set", "d_kv=16",
    ],
    "mt5": [
        "--preset", "t5-efficient-tiny-nl2", "--seed", "8", "--norm-jitter", "0.2",
        "--set", "model_type=mt5", "--set", "feed_forward_proj=gated-gelu", "--set", "tie_word_embeddings=false",
        "--set", "vocab_size=1200", "--set", "d_model=64", "--set", "d_ff=128", "--set", "num_heads=4",
        "--set", "d_kv=16",
    ],
    # The gated case stored in bf16: HF loads it in float32 (the bf16 values
    # widened exactly), which is what t5edge computes from the mapped bf16.
    "gated-bf16": [
        "--preset", "t5-efficient-tiny-el3-dl2", "--seed", "7", "--norm-jitter", "0.2",
        "--set", "feed_forward_proj=gated-gelu", "--set", "tie_word_embeddings=false",
        "--set", "vocab_size=1000", "--set", "num_heads=8", "--set", "d_kv=32", "--dtype", "bf16",
    ],
}

# HF's class for a checkpoint: (model_type, encoder-only) -> class.
CLASSES = {
    ("t5", False): T5ForConditionalGeneration,
    ("t5", True): T5EncoderModel,
    ("mt5", False): MT5ForConditionalGeneration,
    ("umt5", False): UMT5ForConditionalGeneration,
    ("umt5", True): UMT5EncoderModel,
}

GREEDY_STEPS = 16
TOPK = 8


def prompts(vocab):
    rng = np.random.default_rng(1234)
    # Lengths 1 (just </s>), 9, and 150 (past max_distance 128).
    out = {"one": [1]}
    for name, n in [("nine", 9), ("long", 150)]:
        ids = rng.integers(3, min(vocab, 32000), size=n - 1).tolist()
        out[name] = ids + [1]
    return out


def decoder_input(vocab):
    rng = np.random.default_rng(99)
    return [0] + rng.integers(2, min(vocab, 32000), size=23).tolist()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    t5edge = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "t5edge")
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    manifest = {
        "how": "HF transformers (the case's class: T5ForConditionalGeneration, T5EncoderModel, MT5ForConditionalGeneration, "
        "UMT5ForConditionalGeneration, UMT5EncoderModel), fp32 (bf16 checkpoints widened to fp32 at load), eager attention, torch CPU, no_grad. "
        "Encoder-only cases have encoder states only. "
        "Greedy: generate(max_new_tokens=16, min_new_tokens=16, do_sample=False, num_beams=1, use_cache=False) (HF 4.57 cache indexing fails when the decoder is deeper than the encoder).",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "numpy": np.__version__},
        "cases": {},
    }
    for name, args in CASES.items():
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([t5edge, "synth", *args, "--out", d, "--force"], check=True)
            with open(os.path.join(d, "config.json")) as f:
                saved = json.load(f)
            encoder_only = "--encoder-only" in args
            cls = CLASSES[(saved["model_type"], encoder_only)]
            model = cls.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
            # Every tensor of the file is one the class has, and it has no other.
            from safetensors import safe_open
            with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
                names = set(f.keys())
            expected = set(model.state_dict().keys()) - {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
            if model.config.tie_word_embeddings:
                expected.discard("lm_head.weight")
            assert names == expected, (name, sorted(names ^ expected)[:8])
            cfg = model.config
            arrays = {}
            case = {"synth_args": args, "model_sha256": sha256(os.path.join(d, "model.safetensors")),
                    "hf_class": cls.__name__, "encoder_only": encoder_only, "prompts": {}}
            if not encoder_only:
                case["decoder_input_ids"] = decoder_input(cfg.vocab_size)
                dec = torch.tensor([case["decoder_input_ids"]])
            with torch.no_grad():
                for p, ids in prompts(cfg.vocab_size).items():
                    inp = torch.tensor([ids])
                    if encoder_only:
                        enc = model(input_ids=inp).last_hidden_state
                        arrays[f"{p}.encoder_hidden"] = enc[0].numpy().astype(np.float32)
                        case["prompts"][p] = {"input_ids": ids}
                        continue
                    enc = model.encoder(input_ids=inp).last_hidden_state
                    out = model(input_ids=inp, decoder_input_ids=dec)
                    logits = out.logits[0]
                    top = torch.topk(logits, TOPK, dim=-1)
                    gen = model.generate(inp, max_new_tokens=GREEDY_STEPS, min_new_tokens=GREEDY_STEPS,
                                         do_sample=False, num_beams=1, output_scores=True, use_cache=False,
                                         return_dict_in_generate=True)
                    seq = gen.sequences[0].tolist()
                    margins = []
                    for s in gen.scores:
                        v = torch.topk(s[0].float(), 2).values
                        margins.append(float(v[0] - v[1]))
                    arrays[f"{p}.encoder_hidden"] = enc[0].numpy().astype(np.float32)
                    arrays[f"{p}.tf_topk_ids"] = top.indices.numpy().astype(np.int64)
                    arrays[f"{p}.tf_topk_logits"] = top.values.numpy().astype(np.float32)
                    arrays[f"{p}.tf_logits_last"] = logits[-1].numpy().astype(np.float32)
                    case["prompts"][p] = {"input_ids": ids, "greedy_ids": seq, "greedy_min_margin": min(margins)}
            save_file(arrays, os.path.join(OUT, f"{name}.safetensors"))
            case["num_parameters"] = int(model.num_parameters())
            manifest["cases"][name] = case
            print(f"{name}: {case['num_parameters']} params, sha {case['model_sha256'][:12]}")
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
