#!/usr/bin/env python3
"""Decoding references from HF transformers (CPU, fp32) for t5edge's tests.

Writes tests/fixtures/decode_refs.json with, per checkpoint and prompt:
  - beam search (several configs): the returned sequences (decoder start token
    stripped, cut after the first EOS) and HF's `sequences_scores`;
  - greedy with logits processors (repetition_penalty, no_repeat_ngram_size);
  - "forced" sampling that does not depend on the RNG: do_sample with top_k=1
    (must equal greedy);
and, model-free, HF's logits processors/warpers applied to fixed score rows.

Checkpoints: the two in ../shared/models (when present) and the synthetic one
the Rust tests regenerate:
  t5edge synth --preset t5-efficient-tiny-nl2 --seed 1 --norm-jitter 0.2 \
      --set feed_forward_proj=gated-gelu --set tie_word_embeddings=false \
      --set vocab_size=1000 --out DIR

Usage: python tools/refs/make_beam_refs.py --synth DIR [--shared ../shared] [--out tests/fixtures/decode_refs.json]
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers
from transformers import T5ForConditionalGeneration
from transformers.generation.logits_process import (
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

SYNTH_PROMPTS = [
    [37, 12, 1],
    [5, 900, 17, 42, 8, 250, 3, 1],
    [1],
    [99, 98, 97, 96, 95, 94, 93, 92, 91, 90, 89, 88, 87, 86, 85, 84, 83, 82, 81, 80, 1],
]

BEAM_CONFIGS = [
    {"name": "beam4", "num_beams": 4, "max_new_tokens": 16, "num_return_sequences": 4},
    {
        "name": "beam4_lp_ngram",
        "num_beams": 4,
        "max_new_tokens": 16,
        "num_return_sequences": 2,
        "length_penalty": 0.6,
        "no_repeat_ngram_size": 2,
    },
    {
        "name": "beam3_never_rep",
        "num_beams": 3,
        "max_new_tokens": 12,
        "num_return_sequences": 3,
        "length_penalty": 2.0,
        "early_stopping": "never",
        "repetition_penalty": 1.5,
    },
    {
        "name": "beam5_early_minnew",
        "num_beams": 5,
        "max_new_tokens": 12,
        "num_return_sequences": 2,
        "early_stopping": True,
        "min_new_tokens": 4,
    },
]

GREEDY_CONFIGS = [
    {"name": "greedy_rep_ngram", "max_new_tokens": 16, "repetition_penalty": 1.8, "no_repeat_ngram_size": 3},
    {"name": "sample_topk1", "max_new_tokens": 16, "do_sample": True, "top_k": 1, "temperature": 0.7},
    {"name": "sample_topp_tiny", "max_new_tokens": 16, "do_sample": True, "top_p": 1e-6, "top_k": 0},
]


def cut(seq, eos):
    seq = [int(t) for t in seq[1:]]  # drop the decoder start token
    if eos in seq:
        seq = seq[: seq.index(eos) + 1]
    return seq


# Configs that finish on a frequent token: the models rarely pick the real EOS
# within a few steps, so each model's most frequent beam4 token stands in as
# `eos_token_id` to exercise finishing, length penalty and early stopping.
EOS_CONFIGS = [
    {"name": "beam4_eos", "num_beams": 4, "max_new_tokens": 16, "num_return_sequences": 4},
    {"name": "beam4_eos_early", "num_beams": 4, "max_new_tokens": 16, "num_return_sequences": 3, "early_stopping": True, "length_penalty": 1.5},
    {"name": "beam4_eos_never", "num_beams": 4, "max_new_tokens": 16, "num_return_sequences": 3, "early_stopping": "never", "length_penalty": 0.5},
    {"name": "beam2_eos_neg_lp", "num_beams": 2, "max_new_tokens": 16, "num_return_sequences": 2, "length_penalty": -1.0},
]


def run_model(model_dir, prompts):
    model = T5ForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    out = {"prompts": prompts, "beam": {}, "greedy": {}}
    configs = list(BEAM_CONFIGS)
    for cfg in configs:
        kw = {k: v for k, v in cfg.items() if k != "name"}
        eos = kw.get("eos_token_id", model.config.eos_token_id)
        rows = []
        for ids in prompts:
            with torch.no_grad():
                g = model.generate(
                    torch.tensor([ids]),
                    do_sample=False,
                    output_scores=True,
                    return_dict_in_generate=True,
                    **kw,
                )
            rows.append(
                {
                    "sequences": [cut(s.tolist(), eos) for s in g.sequences],
                    "scores": [float(x) for x in g.sequences_scores],
                }
            )
        out["beam"][cfg["name"]] = {"options": kw, "results": rows}
        if cfg["name"] == "beam4":
            counts = {}
            for r in rows:
                for seq in r["sequences"]:
                    for t in seq:
                        counts[t] = counts.get(t, 0) + 1
            stand_in = max(sorted(counts), key=lambda t: counts[t])
            configs += [dict(c, eos_token_id=stand_in) for c in EOS_CONFIGS]
    eos = model.config.eos_token_id
    for cfg in GREEDY_CONFIGS:
        kw = {k: v for k, v in cfg.items() if k != "name"}
        kw.setdefault("do_sample", False)
        rows = []
        for ids in prompts:
            torch.manual_seed(0)
            with torch.no_grad():
                g = model.generate(torch.tensor([ids]), num_beams=1, **kw)
            rows.append(cut(g[0].tolist(), eos))
        out["greedy"][cfg["name"]] = {"options": kw, "results": rows}
    return out


def warper_refs():
    rng = np.random.default_rng(7)
    rows = [np.round(rng.normal(0, 3, 32), 3).tolist() for _ in range(3)]
    rows.append(np.round(np.concatenate([rng.normal(0, 0.5, 28), [4.0, 4.0, 3.5, -2.0]]), 3).tolist())
    cases = []
    configs = [
        {"temperature": 0.7},
        {"top_k": 5},
        {"top_k": 2},
        {"top_p": 0.9},
        {"top_p": 0.5},
        {"temperature": 1.3, "top_k": 10, "top_p": 0.8},
        {"temperature": 0.5, "top_p": 0.95},
    ]
    for row in rows:
        for c in configs:
            s = torch.tensor([row], dtype=torch.float32)
            ids = torch.tensor([[0]])
            if "temperature" in c:
                s = TemperatureLogitsWarper(c["temperature"])(ids, s)
            if "top_k" in c:
                s = TopKLogitsWarper(top_k=c["top_k"], min_tokens_to_keep=1)(ids, s)
            if "top_p" in c:
                s = TopPLogitsWarper(top_p=c["top_p"], min_tokens_to_keep=1)(ids, s)
            v = s[0].tolist()
            cases.append({"scores": row, "options": c, "warped": [None if x == float("-inf") else round(x, 6) for x in v]})
    procs = []
    for row in rows[:2]:
        for seq, c in [
            ([0, 5, 6, 5, 9, 5, 6], {"no_repeat_ngram_size": 3}),
            ([0, 5, 6, 5, 9, 5], {"no_repeat_ngram_size": 2}),
            ([0, 1, 2, 3, 2, 30], {"repetition_penalty": 1.7}),
            ([0, 3, 3, 31], {"repetition_penalty": 0.6}),
        ]:
            s = torch.tensor([row], dtype=torch.float32)
            ids = torch.tensor([seq])
            if "no_repeat_ngram_size" in c:
                s = NoRepeatNGramLogitsProcessor(c["no_repeat_ngram_size"])(ids, s)
            if "repetition_penalty" in c:
                s = RepetitionPenaltyLogitsProcessor(c["repetition_penalty"])(ids, s)
            v = s[0].tolist()
            procs.append({"scores": row, "seq": seq, "options": c, "processed": [None if x == float("-inf") else round(x, 6) for x in v]})
    return {"warpers": cases, "processors": procs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--synth", required=True)
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "decode_refs.json"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    refs = {
        "how": "HF transformers T5ForConditionalGeneration.generate, fp32, CPU, eager attention; "
        "sequences without the decoder start token, cut after the first EOS; scores = sequences_scores",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "models": {},
    }
    refs["models"]["synth"] = run_model(a.synth, SYNTH_PROMPTS)
    refs["models"]["synth"]["synth_cmd"] = (
        "t5edge synth --preset t5-efficient-tiny-nl2 --seed 1 --norm-jitter 0.2 --set feed_forward_proj=gated-gelu "
        "--set tie_word_embeddings=false --set vocab_size=1000"
    )
    for name in ["t5-efficient-tiny-nl2-synth", "t5-v1_1-gated-synth"]:
        gdir = os.path.join(a.shared, "goldens", name)
        mdir = os.path.join(a.shared, "models", name)
        if not os.path.isdir(mdir):
            print(f"skip {name}: {mdir} not found")
            continue
        man = json.load(open(os.path.join(gdir, "manifest.json")))
        keep = ["hello", "short", "span", "long"]
        names = [p["name"] for p in man["prompts"] if p["name"] in keep]
        prompts = [p["input_ids"] for p in man["prompts"] if p["name"] in keep]
        r = run_model(mdir, prompts)
        r["prompt_names"] = names
        refs["models"][name] = r
    refs.update(warper_refs())
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(refs, f, separators=(",", ":"))
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes)")


if __name__ == "__main__":
    main()
