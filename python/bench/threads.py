"""Four Python threads sharing one t5edge.T5 against one thread doing the
same work serially: the W2 prompts of bench/workloads.json, each a batch-1
greedy generate of exactly 32 tokens (W1's shape), checked to give the serial
results. Run from the repository:

    python python/bench/threads.py [--model DIR] [--rounds 3]

The model is loaded twice per round: with the process-wide pool (threads=None:
2 threads on this machine) and with threads=1 (each call on its caller's
thread alone). Prints one line per configuration and a JSON summary."""

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import t5edge

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(os.path.dirname(REPO), "shared", "models",
                                                    "t5-efficient-tiny-nl2-synth"))
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=32)
    a = ap.parse_args()
    with open(os.path.join(REPO, "bench", "workloads.json")) as f:
        prompts = json.load(f)["w2"]["ids"]
    n = a.new_tokens
    out = {"model": os.path.relpath(a.model, REPO), "jobs": len(prompts), "workers": a.workers,
           "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    for threads in (None, 1):
        m = t5edge.T5(a.model, dtype=a.dtype, threads=threads)

        def job(p, m=m):
            return m.generate(p, max_new_tokens=n, min_new_tokens=n, return_ids=True).ids

        job(prompts[0])  # warm up
        serial_s, par_s, serial_cpu, par_cpu = [], [], [], []
        for _ in range(a.rounds):
            c0, t0 = time.process_time(), time.perf_counter()
            serial = [job(p) for p in prompts]
            serial_s.append(time.perf_counter() - t0)
            serial_cpu.append((time.process_time() - c0) / serial_s[-1])
            with ThreadPoolExecutor(a.workers) as ex:
                c0, t0 = time.process_time(), time.perf_counter()
                par = list(ex.map(job, prompts))
                par_s.append(time.perf_counter() - t0)
                par_cpu.append((time.process_time() - c0) / par_s[-1])
            assert par == serial, "threads changed the results"
        s, p = statistics.median(serial_s), statistics.median(par_s)
        key = "threads=%s" % threads
        # CPU seconds per wall second: how many cores the process kept busy
        # (spin-pool workers polling count too).
        out[key] = {"pool_threads": m.threads, "serial_s": serial_s, "threaded_s": par_s,
                    "speedup": s / p, "serial_cores": serial_cpu, "threaded_cores": par_cpu}
        print("%-13s serial %.3f s (%.2f cores busy), %d Python threads %.3f s (%.2f cores busy): %.2fx "
              "(median of %d rounds; results identical)"
              % (key, s, statistics.median(serial_cpu), a.workers, p, statistics.median(par_cpu), s / p, a.rounds))
    out["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
