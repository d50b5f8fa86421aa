#!/usr/bin/env python3
"""monoT5 reranking references from HF transformers for tests/scoring.rs.

Writes tests/fixtures/rerank_refs.json: for a `t5edge synth` checkpoint (the
test regenerates it and checks its sha256) and a few query/document pairs,
the monoT5 input ("Query: {q} Document: {d} Relevant:") as ids, and HF's
p(true): T5ForConditionalGeneration's logits at the first decoder position
(decoder input = [decoder_start_token_id]), softmax over the logits of
"▁true" and "▁false", taken p("▁true"), as pygaggle's MonoT5 does.

The ids come from the real T5 tokenizer (../shared/tokenizers/t5, HF's
T5TokenizerFast) when it is there, so the test can also check t5edge's own
tokenization of the template and the CLI on text; without it, deterministic
ids stand in and only the ids-level check runs.

Separate from make_refs.py so its fixture changes alone (make_refs.sh runs
both).

Usage: python tools/refs/make_rerank_refs.py T5EDGE_BINARY [--shared ../shared]
"""
import argparse
import hashlib
import json
import os
import subprocess
import tempfile

import numpy as np
import torch
import transformers
from transformers import T5ForConditionalGeneration, T5TokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "rerank_refs.json")

SYNTH_ARGS = ["--preset", "t5-efficient-tiny-nl2", "--seed", "11", "--norm-jitter", "0.2"]
TEMPLATE = "Query: {query} Document: {document} Relevant:"
TRUE_ID, FALSE_ID = 1176, 6136  # "▁true", "▁false" in the T5 vocabulary

LONG = " ".join(["The river carries sediment from the mountains to the sea, where it settles into wide deltas."] * 9)
QUERIES = [
    ("what carries sediment to the sea", [
        "Rivers carry sediment from mountains down to the sea.",
        "The stock market closed higher on Tuesday.",
        LONG,
    ]),
    ("how fast is a cheetah", [
        "A cheetah can run at about 100 kilometres per hour.",
        "Cheetahs are large cats.",
        "",
    ]),
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("t5edge")
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok_file = os.path.join(args.shared, "tokenizers", "t5", "tokenizer.json")
    tok = T5TokenizerFast(tokenizer_file=tok_file) if os.path.isfile(tok_file) else None
    if tok is not None:
        assert tok.convert_tokens_to_ids(["▁true", "▁false"]) == [TRUE_ID, FALSE_ID]
    rng = np.random.default_rng(2024)
    out = {
        "how": "HF transformers T5ForConditionalGeneration, fp32, eager attention, torch CPU, no_grad; "
        "one sequence per call; p_true = softmax(logits[0, 0, [true_id, false_id]])[0] with "
        "decoder_input_ids = [[decoder_start_token_id]].",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "synth_args": SYNTH_ARGS,
        "template": TEMPLATE,
        "true_id": TRUE_ID,
        "false_id": FALSE_ID,
        "tokenizer": "T5TokenizerFast(../shared/tokenizers/t5/tokenizer.json)" if tok else None,
        "queries": [],
    }
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([args.t5edge, "synth", *SYNTH_ARGS, "--out", d, "--force"], check=True)
        out["model_sha256"] = sha256(os.path.join(d, "model.safetensors"))
        model = T5ForConditionalGeneration.from_pretrained(d, attn_implementation="eager").eval()
        start = model.config.decoder_start_token_id
        for q, docs in QUERIES:
            entry = {"query": q, "documents": []}
            for doc in docs:
                text = TEMPLATE.replace("{query}", q).replace("{document}", doc)
                if tok is not None:
                    ids = tok(text).input_ids
                else:
                    ids = rng.integers(3, 32000, size=len(text) // 4).tolist() + [1]
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([ids]),
                                   decoder_input_ids=torch.tensor([[start]])).logits[0, 0]
                pair = torch.stack([logits[TRUE_ID], logits[FALSE_ID]])
                p_true = float(torch.softmax(pair, dim=0)[0])
                entry["documents"].append({"text": doc, "input_ids": ids, "p_true": p_true,
                                           "logit_true": float(logits[TRUE_ID]),
                                           "logit_false": float(logits[FALSE_ID])})
                print(f"{q[:20]!r} / {doc[:30]!r}: {len(ids)} tokens, p(true) {p_true:.6f}")
            out["queries"].append(entry)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
