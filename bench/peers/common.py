"""Shared plumbing of the peer runners (bench/peers/run_*.py).

Every runner is started by run.py in a fresh process, for one engine variant
and one workload, and prints exactly one JSON object on its last stdout line.
Modes:
  --prepare          convert the checkpoint for this engine into --cache (once)
  --workload wN      warm up, time --runs runs, report stats and peak RSS
  --cold             load and answer W1 once (run.py times the whole process)
  --accuracy         W1 greedy ids and, where the engine exposes them, the
                     decoder logits teacher-forced on --ref-ids
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

T_PROCESS_START = time.perf_counter()

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_WORKLOADS = os.path.join(REPO, "bench", "workloads.json")
# The reference material lives beside the repository (../shared).
DEFAULT_MODEL = os.path.join(os.path.dirname(REPO), "shared", "models", "t5-efficient-tiny-nl2-synth")


def parse_args(variants, extra=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--cache", required=True, help="directory for converted models of this engine")
    ap.add_argument("--variant", choices=variants, default=variants[0])
    ap.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--warmup-ms", type=float, default=WARMUP_MS,
                    help="warm up for at least this long too (see time_runs)")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prepare", action="store_true")
    mode.add_argument("--workload", choices=["w1", "w2", "w3"])
    mode.add_argument("--cold", action="store_true")
    mode.add_argument("--accuracy", action="store_true")
    mode.add_argument("--versions", action="store_true")
    ap.add_argument("--ref-ids", default="", help="comma-separated HF fp32 W1 greedy ids (accuracy mode)")
    ap.add_argument("--logits-out", default="", help="accuracy mode: save teacher-forced logits [32, vocab] here (.npy)")
    if extra:
        extra(ap)
    return ap.parse_args()


def load_workloads(path):
    with open(path) as f:
        wl = json.load(f)
    return {
        "w1": {"ids": wl["w1"]["ids"], "new_tokens": int(wl["w1"]["new_tokens"])},
        "w2": {"ids": wl["w2"]["ids"], "new_tokens": int(wl["w2"]["new_tokens"])},
        "w3": {"ids": wl["w3"]["ids"]},
    }


def peak_rss_mb():
    """Peak RSS of this process in MiB: VmHWM of /proc/self/status, as t5edge
    bench reports it. getrusage(RUSAGE_SELF).ru_maxrss is the fallback only:
    on Linux it keeps the high-water mark of the image before execve, i.e. of
    the forked driver, so a small runner started by a big driver would report
    the driver's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return ru_maxrss_mb()


def ru_maxrss_mb():
    # Linux: ru_maxrss is in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# A runner warms up for --warmup runs and at least this long. Libraries a
# runner imports may leave threads busy for a while: numpy's OpenBLAS worker
# spins for ~0.1 s after it starts (seen on the Xeon: t5edge's Python encode,
# whose first call imports numpy, ran its next ~40 calls at 1.0 ms instead of
# 0.6 while that thread held a core), and five fast runs ended inside that.
WARMUP_MS = 300.0


def time_runs(fn, runs, warmup, warmup_ms=WARMUP_MS):
    t0 = time.perf_counter()
    done = 0
    while done < warmup or (time.perf_counter() - t0) * 1000.0 < warmup_ms:
        fn()
        done += 1
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1000.0)
    return ms


def workload_tokens(wl, name):
    """Tokens counted by tokens_per_s: generated tokens for W1/W2 (as t5edge
    bench counts them), encoder input tokens for W3."""
    if name == "w1":
        return wl["w1"]["new_tokens"]
    if name == "w2":
        return wl["w2"]["new_tokens"] * len(wl["w2"]["ids"])
    return len(wl["w3"]["ids"])


def stats(ms, tokens):
    med = statistics.median(ms)
    return {
        "median_ms": med,
        "p90_ms": percentile(ms, 0.9),
        "min_ms": min(ms),
        "tokens_per_run": tokens,
        "tokens_per_s": tokens / (med / 1000.0),
        "runs": len(ms),
    }


def emit(obj):
    sys.stdout.flush()
    print(json.dumps(obj), flush=True)


def parse_ids(s):
    return [int(x) for x in s.split(",") if x.strip()]


def first_diff_agreement(ids, ref):
    n = 0
    for a, b in zip(ids, ref):
        if a != b:
            break
        n += 1
    return n


def max_rel_logit_err(rows, ref_rows, cols=None):
    """max over decoder positions of max_v |l[v] - ref[v]| / max_v |ref[v]|.
    rows/ref_rows: [positions, vocab]; cols: optional per-position vocabulary
    ids that rows hold (top-k engines), compared against ref at those ids."""
    import numpy as np

    worst = 0.0
    for i, (a, r) in enumerate(zip(rows, ref_rows)):
        a = np.asarray(a, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        scale = max(float(np.max(np.abs(r))), 1e-30)
        if cols is not None:
            r = r[np.asarray(cols[i], dtype=np.int64)]
        else:
            n = min(a.shape[-1], r.shape[-1])
            a, r = a[:n], r[:n]
        ok = np.isfinite(a) & (np.abs(a) < 1e30)  # CT2 reports the masked EOS as -FLT_MAX
        worst = max(worst, float(np.max(np.abs(a - r)[ok])) / scale)
    return worst


def run_main(args, load, engine_versions, w1, w2, w3, accuracy=None, prepare=None):
    """Drive one runner mode. load() -> state (timed as load_ms); w1/w2/w3(state)
    run one workload once and return the generated ids (or None)."""
    wl = load_workloads(args.workloads)
    if args.versions:
        emit(engine_versions())
        return
    if args.prepare:
        t0 = time.perf_counter()
        info = prepare() if prepare else {}
        emit({"prepare_ms": (time.perf_counter() - t0) * 1000.0, **(info or {})})
        return
    t0 = time.perf_counter()
    state = load(wl)
    load_ms = (time.perf_counter() - t0) * 1000.0
    if args.cold:
        ids = w1(state, wl)
        emit({"load_ms": load_ms, "in_process_ms": (time.perf_counter() - T_PROCESS_START) * 1000.0,
              "n_ids": len(ids) if ids is not None else None})
        return
    if args.accuracy:
        ids = w1(state, wl)
        out = {"ids": [int(i) for i in ids]}
        if accuracy is not None and args.ref_ids and args.logits_out:
            logits = accuracy(state, wl, parse_ids(args.ref_ids))
            if logits is not None:
                import numpy as np

                np.save(args.logits_out, np.asarray(logits, dtype=np.float32))
                out["logits"] = args.logits_out
        emit(out)
        return
    fn = {"w1": w1, "w2": w2, "w3": w3}[args.workload]
    ms = time_runs(lambda: fn(state, wl), args.runs, args.warmup, args.warmup_ms)
    out = stats(ms, workload_tokens(wl, args.workload))
    out.update({"load_ms": load_ms, "peak_rss_mb": peak_rss_mb(), "ru_maxrss_mb": ru_maxrss_mb(),
                "workload": args.workload,
                "warmup": args.warmup, "warmup_ms": args.warmup_ms, "threads": args.threads})
    # sanity: the generation workloads must really produce new_tokens per row
    last = fn(state, wl)
    if args.workload == "w1" and last is not None:
        out["new_tokens_checked"] = len(last)
    elif args.workload == "w2" and last is not None:
        out["new_tokens_checked"] = min(len(r) for r in last)
    emit(out)


def logit_scale_fit(rows, ref_rows):
    """Least-squares k with k*rows ~ ref_rows (full rows, finite entries)."""
    import numpy as np

    a = np.asarray(rows, dtype=np.float64)
    r = np.asarray(ref_rows, dtype=np.float64)[: a.shape[0], : a.shape[1]]
    ok = np.isfinite(a) & (np.abs(a) < 1e30)
    return float(np.sum(a[ok] * r[ok]) / np.sum(a[ok] * a[ok]))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"
