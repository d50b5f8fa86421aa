"""The binding's per-call cost: the same small generate through Python and
through `t5edge bench`, side by side, on a micro checkpoint where the model's
own work is tens of microseconds, so the difference of the medians is the
binding (argument conversion, the options overlay, releasing and retaking the
GIL, the result objects). Run from the repository after `cargo build --release`:

    python python/bench/overhead.py [--rounds 3] [--runs 3000]

Rounds alternate the two; prints each round and the median difference."""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import t5edge

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE = ["d_model=16", "d_ff=16", "num_heads=1", "d_kv=16", "num_layers=1", "num_decoder_layers=1"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--t5edge", default=os.path.join(REPO, "target", "release", "t5edge"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--input-len", type=int, default=26)
    ap.add_argument("--new-tokens", type=int, default=4)
    a = ap.parse_args()
    with open(os.path.join(REPO, "bench", "workloads.json")) as f:
        w3 = json.load(f)["w3"]["ids"]
    ids = (w3 * (a.input_len // len(w3) + 1))[: a.input_len]  # `bench --input-len`'s ids
    n = a.new_tokens
    with tempfile.TemporaryDirectory() as d:
        t5edge.synth(d, seed=1, set=SHAPE, norm_jitter=0.2, force=True)
        m = t5edge.T5(d, threads=1)
        rows = []
        for r in range(a.rounds):
            out = subprocess.run([a.t5edge, "bench", "--model", d, "--threads", "1", "--input-len", str(a.input_len),
                                  "--new-tokens", str(n), "--batch", "1", "--runs", str(a.runs), "--warmup", "200",
                                  "--json"], capture_output=True, text=True, check=True).stdout
            cli_ms = json.loads(out.strip().splitlines()[-1])["median_ms"]
            for _ in range(200):
                m.generate(ids, max_new_tokens=n, min_new_tokens=n, return_ids=True)
            ts = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                m.generate(ids, max_new_tokens=n, min_new_tokens=n, return_ids=True)
                ts.append(time.perf_counter() - t0)
            py_ms = statistics.median(ts) * 1e3
            rows.append((cli_ms, py_ms))
            print("round %d: t5edge bench %.1f us, Python %.1f us, difference %.1f us"
                  % (r + 1, cli_ms * 1e3, py_ms * 1e3, (py_ms - cli_ms) * 1e3))
        diff = statistics.median([(p - c) * 1e3 for c, p in rows])
        print("per-call binding cost: %.1f us (median of %d rounds; load average %s)"
              % (diff, a.rounds, " ".join(open("/proc/loadavg").read().split()[:3])))


if __name__ == "__main__":
    main()
