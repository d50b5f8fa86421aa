#!/usr/bin/env python3
"""HF transformers' T5 encoder on CPU in bf16, for docs/XXL.md: load time,
encoder time per input length, peak RSS, and the states for comparison.

    python bench/xxl/hf_encode.py MODEL_DIR --lens 128 512 --threads 2 [--save OUT.npz]

Loads `T5EncoderModel.from_pretrained(MODEL_DIR, dtype=torch.bfloat16)` (the
decoder tensors of a full checkpoint are skipped), then encodes, at each length, the ids bench/workloads.json's w3 prompt cycles to (as `t5edge bench
--input-len N` encodes: the same ids), once to warm up and `--runs` times
timed (the median is reported).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
from transformers import T5EncoderModel

HERE = os.path.dirname(os.path.abspath(__file__))


def ids_of_len(n):
    """What `t5edge bench --input-len n` encodes (batch 1): the w3 ids
    without their </s>, cycled to n - 1, then </s> (vocab 32128 folds none)."""
    w = json.load(open(os.path.join(HERE, "..", "workloads.json")))
    src = w["w3"]["ids"]
    body, eos = src[:-1], src[-1]
    return [body[i % len(body)] for i in range(n - 1)] + [eos]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--lens", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--save", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model = T5EncoderModel.from_pretrained(a.model, dtype=torch.bfloat16).eval()
    load_s = time.perf_counter() - t0
    out = {"load_s": load_s, "rss_after_load_mb": peak_rss_mb(), "torch": torch.__version__,
           "transformers": __import__("transformers").__version__, "threads": a.threads, "runs": {}}
    saved = {}
    with torch.no_grad():
        for n in a.lens:
            ids = torch.tensor([ids_of_len(n)])
            model(input_ids=ids)  # warm-up
            times = []
            for _ in range(a.runs):
                t = time.perf_counter()
                h = model(input_ids=ids).last_hidden_state
                times.append(time.perf_counter() - t)
            out["runs"][n] = {"encode_s": sorted(times)[len(times) // 2], "peak_rss_mb": peak_rss_mb()}
            saved[f"len{n}"] = h[0].float().numpy()
            print(json.dumps({n: out["runs"][n]}), file=sys.stderr, flush=True)
    if a.save:
        np.savez(a.save, **saved)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
