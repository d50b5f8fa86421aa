#!/usr/bin/env python3
"""Load test of `t5edge serve` on loopback, against the offline benchmark in
the same run (docs/SERVE.md has the figures and how to read them).

1. Offline reference: `t5edge bench --workload w1` and `--workload w2`.
2. The command line's answer for every request used below (W1's prompt and
   W2's 16 prompts, 32 greedy tokens each, EOS suppressed as bench does).
3. A server (`t5edge serve --port 0`), then for each concurrency level a
   bounded number of requests from that many client threads: requests/s,
   tokens/s, p50/p90/p99 latency; every answer compared with the CLI's.
4. A soak at the highest level for --soak seconds with the server's RSS
   sampled every second, with faults injected meanwhile: clients that
   disconnect mid-stream, malformed JSON, oversized bodies and a burst
   beyond the queue; each must get its documented status.

Everything stays on 127.0.0.1 and stops by itself. Standard library only.

    python3 bench/serve_load.py [--t5edge target/release/t5edge] [--model DIR]
        [--levels 1,4,16,64] [--soak 60] [--out bench/results/serve.json]
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NEW_TOKENS = 32


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[i]


def model_args(a):
    return ["--model", a.model] if a.model else []


def offline(a, w):
    out = subprocess.run(
        [a.t5edge, "bench", "--workload", w, "--json", "--runs", str(a.runs), "--warmup", "3"]
        + model_args(a),
        capture_output=True, text=True, check=True,
    ).stdout
    d = json.loads(out)
    # No machine paths in recorded results: the checkpoint by name.
    d["model"] = os.path.basename(str(d.get("model") or ""))
    return d


def cli_ids(a, ids):
    out = subprocess.run(
        [a.t5edge, "generate", "--json", "--max-new-tokens", str(NEW_TOKENS),
         "--min-new-tokens", str(NEW_TOKENS), "--input-ids", ",".join(map(str, ids))]
        + model_args(a),
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out)["ids"]


def body(ids):
    return json.dumps({"input_ids": ids, "max_new_tokens": NEW_TOKENS,
                       "min_new_tokens": NEW_TOKENS})


def start_server(a, extra):
    p = subprocess.Popen(
        [a.t5edge, "serve", "--port", "0"] + model_args(a) + extra,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = p.stdout.readline().strip()
    host, port = line.rsplit("//", 1)[1].split(":")
    return p, host, int(port)


def post(conn, path, payload, headers=None):
    conn.request("POST", path, payload, headers or {"content-type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_level(host, port, reqs, want, conc, n):
    """n requests from conc threads, round-robin over reqs; latencies and
    mismatches."""
    lat, bad, statuses = [], [], {}
    lock = threading.Lock()
    counter = iter(range(n))

    def worker():
        conn = http.client.HTTPConnection(host, port, timeout=300)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            k = i % len(reqs)
            t = time.perf_counter()
            s, b = post(conn, "/v1/generate", body(reqs[k]))
            dt = time.perf_counter() - t
            with lock:
                statuses[s] = statuses.get(s, 0) + 1
                if s == 200:
                    lat.append(dt)
                    if json.loads(b)["ids"] != want[k]:
                        bad.append(k)
        conn.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(conc)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "concurrency": conc, "requests": n, "wall_s": wall,
        "requests_per_s": len(lat) / wall,
        "tokens_per_s": len(lat) * NEW_TOKENS / wall,
        "p50_ms": pct(lat, 50) * 1e3, "p90_ms": pct(lat, 90) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
        "statuses": statuses, "mismatches": len(bad),
    }


def faults(host, port, stop, log):
    """Until stop: a disconnecting streamer, malformed JSON, an oversized body."""
    big = json.dumps({"text": "a " * 700_000})
    while not stop.is_set():
        # A client that reads one event and goes away.
        s = socket.create_connection((host, port))
        b = body([37, 12, 1]).replace("}", ', "stream": true}').encode()
        s.sendall(b"POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  + f"content-length: {len(b)}\r\n\r\n".encode() + b)
        s.recv(200)
        s.close()
        log["disconnect"] = log.get("disconnect", 0) + 1
        conn = http.client.HTTPConnection(host, port, timeout=60)
        st, _ = post(conn, "/v1/generate", '{"text": "a",, }')
        log[f"malformed->{st}"] = log.get(f"malformed->{st}", 0) + 1
        try:
            st, _ = post(conn, "/v1/generate", big)
        except (ConnectionError, http.client.HTTPException):
            st = "reset"
        log[f"oversized->{st}"] = log.get(f"oversized->{st}", 0) + 1
        conn.close()
        time.sleep(0.2)


def burst(host, port, n):
    """n simultaneous requests against a small queue: 200s and 429s only."""
    out = {}
    lock = threading.Lock()

    def one():
        conn = http.client.HTTPConnection(host, port, timeout=300)
        st, _ = post(conn, "/v1/generate", body([37, 12, 1]))
        with lock:
            out[st] = out.get(st, 0) + 1
        conn.close()

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--t5edge", default=os.path.join(HERE, "..", "target", "release", "t5edge"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--soak", type=float, default=60)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    w = json.load(open(os.path.join(HERE, "workloads.json")))
    w1, w2 = w["w1"]["ids"], w["w2"]["ids"]

    res = {"load_before": os.getloadavg()}
    res["offline_w1"] = offline(a, "w1")
    res["offline_w2"] = offline(a, "w2")
    print(f"offline w1 median {res['offline_w1']['median_ms']:.2f} ms; "
          f"w2 {res['offline_w2']['tokens_per_s']:.1f} tokens/s", flush=True)
    want1 = [cli_ids(a, w1)]
    want2 = [cli_ids(a, ids) for ids in w2]

    srv, host, port = start_server(a, ["--max-batch", str(a.max_batch), "--max-queue", "1024"])
    try:
        levels = [int(x) for x in a.levels.split(",")]
        res["w1_c1"] = run_level(host, port, [w1], want1, 1, 2 * a.runs)
        print("w1 c1", res["w1_c1"], flush=True)
        res["w2"] = []
        for c in levels:
            r = run_level(host, port, w2, want2, c, max(32, 4 * c))
            res["w2"].append(r)
            print("w2", r, flush=True)

        # Soak with faults at the highest level.
        stop = threading.Event()
        rss, flog = [], {}
        soak_res = {}

        def sample():
            while not stop.is_set():
                rss.append(rss_mb(srv.pid))
                time.sleep(1)

        def load():
            top = levels[-1]
            t_end = time.time() + a.soak
            agg = {"requests": 0, "mismatches": 0, "statuses": {}}
            while time.time() < t_end:
                r = run_level(host, port, w2, want2, top, 2 * top)
                agg["requests"] += r["requests"]
                agg["mismatches"] += r["mismatches"]
                for k, v in r["statuses"].items():
                    agg["statuses"][k] = agg["statuses"].get(k, 0) + v
            soak_res.update(agg)

        th = [threading.Thread(target=sample), threading.Thread(target=faults, args=(host, port, stop, flog))]
        for t in th:
            t.start()
        load()
        stop.set()
        for t in th:
            t.join()
        soak_res["rss_mb_first"], soak_res["rss_mb_max"], soak_res["rss_mb_last"] = rss[0], max(rss), rss[-1]
        soak_res["rss_mb_samples"] = rss
        soak_res["faults"] = flog
        res["soak"] = soak_res
        print("soak", {k: v for k, v in soak_res.items() if k != "rss_mb_samples"}, flush=True)
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/health")
        res["health_after"] = conn.getresponse().status
    finally:
        srv.terminate()
        srv.wait(timeout=60)

    # A burst beyond a small queue.
    srv, host, port = start_server(a, ["--max-batch", "16", "--max-queue", "16"])
    try:
        res["burst_200_over_queue_16"] = burst(host, port, 200)
        print("burst", res["burst_200_over_queue_16"], flush=True)
    finally:
        srv.terminate()
        srv.wait(timeout=60)

    c16 = next((r for r in res["w2"] if r["concurrency"] == 16), None)
    if c16:
        res["c16_vs_offline_w2"] = c16["tokens_per_s"] / res["offline_w2"]["tokens_per_s"]
    res["c1_w1_p50_minus_bench_ms"] = res["w1_c1"]["p50_ms"] - res["offline_w1"]["median_ms"]
    res["load_after"] = os.getloadavg()
    print(json.dumps({k: res[k] for k in ("c16_vs_offline_w2", "c1_w1_p50_minus_bench_ms", "load_before", "load_after") if k in res}))
    if a.out:
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, a.out)


if __name__ == "__main__":
    sys.exit(main())
