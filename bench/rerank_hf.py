#!/usr/bin/env python3
"""HF transformers (torch, CPU, fp32) on the rerank workload of
examples/rerank_time.rs: PAIRS inputs of TOKENS deterministic ids, one
decoder step from the start token, p(true) from the "▁true"/"▁false" logits.
Same ids as the Rust example, so the two run the same work; docs/SCORING.md
has the side-by-side figures.

Usage: python bench/rerank_hf.py MODEL_DIR [PAIRS] [TOKENS] [RUNS] [BATCH]
(defaults 100 200 1 100; torch threads = 2, this machine's cores).
"""
import sys
import time

import torch
from transformers import T5ForConditionalGeneration


def main():
    d = sys.argv[1]
    given = [int(a) for a in sys.argv[2:6]]
    pairs, tokens, runs, batch = given + [100, 200, 1, 100][len(given):]
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model = T5ForConditionalGeneration.from_pretrained(d).eval()
    load = time.perf_counter() - t0
    v = min(model.config.vocab_size, 32000)
    ids = [[3 + (i * 7919 + p * 104729) % (v - 3) for i in range(tokens - 1)] + [1] for p in range(pairs)]
    t, f = (1176, 6136) if model.config.vocab_size > 6136 else (3, 4)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = []
        with torch.inference_mode():
            for s in range(0, pairs, batch):
                x = torch.tensor(ids[s:s + batch])
                dec = torch.full((x.shape[0], 1), model.config.decoder_start_token_id)
                logits = model(input_ids=x, decoder_input_ids=dec).logits[:, 0, [t, f]]
                out.extend(torch.softmax(logits, dim=-1)[:, 0].tolist())
        times.append(time.perf_counter() - t0)
        assert len(out) == pairs
    times.sort()
    med = times[len(times) // 2]
    print(f"{d} HF torch {torch.__version__} fp32: {pairs} pairs x {tokens} tokens (batches of {batch}): "
          f"median {med:.3f} s of {runs} (min {times[0]:.3f}), {pairs / med:.1f} pairs/s; load {load:.2f} s")


if __name__ == "__main__":
    main()
