#!/usr/bin/env python3
"""How cost grows: t5edge on synthetic T5-Efficient checkpoints of growing size,
input length and batch, with CTranslate2 int8 beside it where it runs.

    cargo build --release && python3 bench/scaling.py

Every point is one `t5edge bench --preset ... --json` process (the synthetic
checkpoints are written once into --models and reused; `--dtype int8` converts
at load). Writes docs/SCALING.md, docs/scaling.svg and the raw results,
bench/results/scaling/scaling.json. Standard library only: the chart is SVG
written by hand. The CTranslate2 rows need bench/peers' venv (--peers-python)
and the real T5 tokenizer files (--tokenizer-dir) for its converter.

  --quick         a handful of points, to check the plumbing
  --no-peers      t5edge only
  --repeat N      N processes per point (rounds over the grid), the median one shown
  --resume        keep the points already in the raw JSON, run the rest
  --render        only rewrite SCALING.md and the chart from the raw JSON
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time

# The peers harness's helpers (standard library only).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEERS = os.path.join(HERE, "peers")
WORKLOADS = os.path.join(HERE, "workloads.json")

SIZES = ["t5-efficient-tiny", "t5-efficient-small", "t5-efficient-base", "t5-efficient-large"]
LENGTHS = [16, 64, 256, 1024, 2048]
BATCHES = [1, 4, 16, 64]
NEW_TOKENS = 32
BATCH_INPUT_LEN = 64
# The peers every t5edge int8 point is measured against: runner script (the
# peers harness's, bench/peers), cache prefix, label.
PEERS_RUN = {"ct2": ("run_ct2.py", "ct2-", "CTranslate2 int8"),
             "ort": ("run_ort.py", "ort-", "ONNX Runtime int8")}
ENGINES = (("t5edge", "int8", "t5edge int8"), ("t5edge", "f32", "t5edge f32"),
           ("ct2", "int8", "CTranslate2 int8"), ("ort", "int8", "ONNX Runtime int8"))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def short(preset):
    return preset.replace("t5-efficient-", "")


# ---- the grid ------------------------------------------------------------

def runs_for(preset, tokens):
    """(runs, warmup): fewer repetitions where one run takes seconds, so the
    whole grid stays near 20 minutes on 2 cores."""
    big = {"t5-efficient-base": 2, "t5-efficient-large": 3}.get(preset, 0)
    if tokens >= 1024:
        big += 2
    elif tokens >= 256:
        big += 1
    return [(20, 3), (10, 2), (5, 1), (3, 1), (3, 1), (3, 1)][big]


def grid(quick):
    pts = []

    def add(sweep, preset, dtype, workload, batch=None, input_len=None, new_tokens=None, engine="t5edge"):
        size = (batch or 1) * (input_len or 128)
        runs, warmup = runs_for(preset, size)
        if quick:
            runs, warmup = 2, 0
        pts.append({"sweep": sweep, "engine": engine, "preset": preset, "dtype": dtype, "workload": workload,
                    "batch": batch, "input_len": input_len, "new_tokens": new_tokens, "runs": runs,
                    "warmup": warmup})

    sizes = SIZES[:2] if quick else SIZES
    lengths = [16, 256] if quick else LENGTHS
    batches = [1, 4] if quick else BATCHES
    for preset in sizes:
        for dtype in ("int8", "f32"):
            for w in ("w1", "w3"):
                add("size", preset, dtype, w)
    for preset, dtypes in (("t5-efficient-tiny", ("int8", "f32")), ("t5-efficient-base", ("int8", "f32"))):
        if quick and preset != "t5-efficient-tiny":
            continue
        for dtype in dtypes:
            for new in (0, NEW_TOKENS):
                for n in lengths:
                    add("length", preset, dtype, "w3" if new == 0 else "w1", 1, n, new)
    for dtype in ("int8", "f32"):
        for b in batches:
            add("batch", "t5-efficient-tiny", dtype, "w2", b, BATCH_INPUT_LEN, NEW_TOKENS)
    return pts


def key(p):
    return "|".join(str(p.get(k)) for k in ("sweep", "engine", "preset", "dtype", "workload", "batch",
                                             "input_len", "new_tokens"))


# ---- machine and build ---------------------------------------------------

def git(*args):
    try:
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def portable(text):
    """`text` without this machine's paths: the checkout's prefix dropped
    (the default binary lives there), the home directory (the model cache's
    default) as `~`."""
    text = text.replace(REPO + "/", "")
    home = os.path.expanduser("~")
    return text.replace(home + "/", "~/").replace('"%s"' % home, '"~"') if home not in ("", "/") else text


def dump(path, data):
    """The raw results, one point per line: small, and diffs stay readable."""
    with open(path, "w") as f:
        f.write(portable('{"meta": %s,\n "rows": [\n' % json.dumps(data["meta"])))
        f.write(portable(",\n".join("  " + json.dumps(r) for r in data["rows"])))
        f.write("\n]}\n")


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        if line.strip().startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON line in output")


def inside(path):
    """Whether `path` lies inside the checkout."""
    return os.path.abspath(path).startswith(REPO + "/")


def shown(x):
    """A command-line word as the results record it: a path inside the
    checkout relative to it; the t5edge binary from outside it (a copy, so
    that a rebuild mid-study cannot change it) as plain `t5edge`, since no
    machine's paths go into the repository."""
    if x.startswith(REPO + "/"):
        return os.path.relpath(x, REPO)
    if os.path.isabs(x) and os.path.basename(x) == "t5edge":
        return "t5edge"
    return x


def shown_args(argv):
    """The study's own arguments as recorded: `--t5edge PATH` left out when
    PATH is outside the checkout (see `shown`)."""
    out, skip = [], False
    for i, x in enumerate(argv):
        if skip:
            skip = False
            continue
        if x == "--t5edge" and i + 1 < len(argv) and not inside(argv[i + 1]):
            skip = True
            continue
        if x.startswith("--t5edge=") and not inside(x.split("=", 1)[1]):
            continue
        out.append(x)
    return out


def run(cmd, env, timeout=1800):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-4:]
        raise RuntimeError("exit %d: %s" % (p.returncode, " | ".join(tail)))
    return last_json(p.stdout)


# ---- the runs --------------------------------------------------------------

class Study:
    def __init__(self, a):
        self.a = a
        self.env = dict(os.environ, T5EDGE_CACHE=a.models, OMP_NUM_THREADS=str(a.threads),
                        MKL_NUM_THREADS=str(a.threads), TRANSFORMERS_VERBOSITY="error")
        with open(WORKLOADS) as f:
            self.wl = json.load(f)
        self.params = {}

    def synth_dir(self, preset):
        return os.path.join(self.a.models, "synth-%s-seed0" % preset)

    def parameters(self, preset):
        if preset not in self.params:
            j = run([self.a.t5edge, "inspect", "--preset", preset, "--json"], self.env)
            self.params[preset] = j["parameters"]
        return self.params[preset]

    def t5edge_cmd(self, p):
        cmd = [self.a.t5edge, "bench", "--preset", p["preset"], "--dtype", p["dtype"], "--workload", p["workload"]]
        for flag, k in (("--batch", "batch"), ("--input-len", "input_len"), ("--new-tokens", "new_tokens")):
            if p[k] is not None:
                cmd += [flag, str(p[k])]
        return cmd + ["--threads", str(self.a.threads), "--runs", str(p["runs"]), "--warmup", str(p["warmup"]),
                      "--json"]

    def batch_ids(self, batch, n):
        """The ids `t5edge bench --batch B --input-len N` makes (src/cli/bench.rs):
        the w3 ids without `</s>`, cycled from 7 x row, cut to N-1, then `</s>`."""
        w3 = self.wl["w3"]["ids"]
        body, eos = w3[:-1], w3[-1]
        rows = []
        for b in range(batch):
            rows.append([body[(7 * b + i) % len(body)] for i in range(n - 1)] + [eos])
        return rows

    def hf_dir(self, preset):
        """A directory CTranslate2's converter accepts: the synthetic weights and
        config beside the real T5 tokenizer files (the synthetic tokenizer does
        not cover the 32128-id vocabulary)."""
        d = os.path.join(self.a.models, "hf-" + preset)
        os.makedirs(d, exist_ok=True)
        links = [(os.path.join(self.synth_dir(preset), f), f) for f in ("config.json", "model.safetensors")]
        links += [(os.path.join(self.a.tokenizer_dir, f), f) for f in
                  ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json")]
        for src, name in links:
            dst = os.path.join(d, name)
            if not os.path.lexists(dst):
                os.symlink(src, dst)
        return d

    def peer_cmd(self, p, mode):
        """A peer's runner on the point's work: the size sweep runs the fixed
        W1/W3, the length sweep W1 (+32 tokens) or W3 (encoder) on the
        point's ids, the batch sweep W2 on the batch's rows."""
        preset = p["preset"]
        script, prefix, _ = PEERS_RUN[p["engine"]]
        cmd = [self.a.peers_python, os.path.join(PEERS, script), "--model", self.hf_dir(preset),
               "--cache", os.path.join(self.a.models, prefix + preset), "--variant", "int8",
               "--threads", str(self.a.threads)]
        if mode == "prepare":
            return cmd + ["--prepare"]
        wl = {"w1": self.wl["w1"], "w2": self.wl["w2"], "w3": self.wl["w3"]}
        wl_path = WORKLOADS
        if p["sweep"] == "batch":
            wl["w2"] = {"ids": self.batch_ids(p["batch"], p["input_len"]), "new_tokens": p["new_tokens"]}
            wl_path = os.path.join(self.a.models, "workloads-batch%s.json" % p["batch"])
        elif p["sweep"] == "length":
            row = self.batch_ids(1, p["input_len"])[0]
            if p["workload"] == "w3":
                wl["w3"] = {"ids": row}
            else:
                wl["w1"] = {"ids": row, "new_tokens": p["new_tokens"]}
            wl_path = os.path.join(self.a.models, "workloads-len%s-%s.json" % (p["input_len"], p["workload"]))
        if wl_path != WORKLOADS:
            with open(wl_path, "w") as f:
                json.dump(wl, f)
        return cmd + ["--workloads", wl_path, "--runs", str(p["runs"]), "--warmup", str(p["warmup"]),
                      "--workload", p["workload"]]

    def one(self, p):
        row = dict(p)
        row["loadavg"] = common.loadavg()
        t0 = time.time()
        if p["engine"] == "t5edge":
            cmd = self.t5edge_cmd(p)
        else:
            run(self.peer_cmd(p, "prepare"), self.env, timeout=3600)
            cmd = self.peer_cmd(p, "run")
        row["command"] = " ".join(shlex.quote(shown(x)) for x in cmd)
        try:
            j = run(cmd, self.env)
            row.update({k: j.get(k) for k in ("median_ms", "p90_ms", "min_ms", "tokens_per_s", "tokens_per_run",
                                              "load_ms", "peak_rss_mb", "input_len", "input_tokens", "batch",
                                              "new_tokens")
                        if j.get(k) is not None})
            if p["engine"] != "t5edge":
                row["batch"] = row.get("batch") or p["batch"] or 1
                if p["sweep"] == "length":
                    row["input_len"] = p["input_len"]
                row["input_len"] = row["input_len"] or (len(self.wl[p["workload"]]["ids"])
                                                        if p["workload"] != "w2" else None)
                row["new_tokens"] = row["new_tokens"] if row["new_tokens"] is not None else (
                    NEW_TOKENS if p["workload"] != "w3" else 0)
        except Exception as e:  # noqa: BLE001 - one failed point must not lose the rest
            row["error"] = str(e)[:500]
        row["wall_s"] = time.time() - t0
        row["parameters"] = self.parameters(p["preset"])
        return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--t5edge", default=os.path.join(REPO, "target", "release", "t5edge"))
    ap.add_argument("--models", default=os.path.expanduser("~/.cache/t5edge"),
                    help="cache of synthetic checkpoints and CTranslate2 conversions (T5EDGE_CACHE)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peers-python", default=os.path.join(PEERS, ".venv", "bin", "python"))
    ap.add_argument("--tokenizer-dir", default=os.path.join(os.path.dirname(REPO), "shared", "models", "t5-efficient-tiny-nl2-synth"),
                    help="real T5 tokenizer files for CTranslate2's converter")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--peers", default="ct2,ort", help="comma list of ct2, ort")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="processes per point, in rounds over the whole grid so a burst of load hits one round, "
                         "not every run of one point; the tables show the median process")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--notes", default=DEFAULTS["notes"],
                    help="hand-written observations included in SCALING.md when the file exists")
    ap.add_argument("--raw", default=DEFAULTS["raw"])
    ap.add_argument("--doc", default=DEFAULTS["doc"])
    ap.add_argument("--chart", default=DEFAULTS["chart"])
    a = ap.parse_args()
    if a.render:
        with open(a.raw) as f:
            return write_doc(a, json.load(f))
    a.t5edge = os.path.abspath(a.t5edge)
    a.models = os.path.abspath(a.models)
    if not os.access(a.t5edge, os.X_OK):
        raise SystemExit("no t5edge binary at %s (cargo build --release, or pass --t5edge PATH)" % a.t5edge)
    os.makedirs(a.models, exist_ok=True)
    os.makedirs(os.path.dirname(a.raw), exist_ok=True)
    study = Study(a)
    pts = grid(a.quick)
    peers = not a.no_peers and os.access(a.peers_python, os.X_OK) and os.path.isdir(a.tokenizer_dir)
    if not a.no_peers and not peers:
        log("peers skipped: no %s or no %s" % (a.peers_python, a.tokenizer_dir))
    if peers:
        # Every t5edge int8 point gets each peer beside it.
        for p in list(pts):
            if p["dtype"] == "int8":
                for eng in a.peers.split(","):
                    pts.append(dict(p, engine=eng))
    done = {}
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": common.cpu_model(), "nproc": os.cpu_count(), "kernel": platform.release(),
            "loadavg_start": common.loadavg(), "threads": a.threads, "commit": git("rev-parse", "--short=12", "HEAD"),
            # Only what the binary is built from: docs and results change during a study.
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "src", "kernels",
                              "Cargo.toml", "Cargo.lock")),
            "t5edge": shown(a.t5edge) if inside(a.t5edge) else "a copy of the release binary outside the checkout",
            "models": a.models, "peers": peers, "repeat": a.repeat,
            "command": " ".join(shlex.quote(x) for x in ["python3", os.path.relpath(os.path.abspath(sys.argv[0]), REPO)]
                                + shown_args(sys.argv[1:]))}
    if a.resume and os.path.exists(a.raw):
        with open(a.raw) as f:
            old = json.load(f)
        done = {(key(r), r.get("rep", 0)): r for r in old["rows"] if "error" not in r}
        meta["loadavg_start"] = old["meta"].get("loadavg_start", meta["loadavg_start"])
        meta["date"] = old["meta"].get("date", meta["date"])
    if peers:
        for eng, key_, field in (("ct2", "ct2_version", "ctranslate2"), ("ort", "ort_version", "onnxruntime")):
            try:
                meta[key_] = run([a.peers_python, os.path.join(PEERS, PEERS_RUN[eng][0]), "--cache", a.models,
                                  "--versions"], study.env).get(field)
            except Exception as e:  # noqa: BLE001
                log(field, "version:", e)
    rows = []
    t_start = time.time()
    todo = [(rep, p) for rep in range(a.repeat) for p in pts]
    for i, (rep, p) in enumerate(todo):
        if (key(p), rep) in done:
            rows.append(done[(key(p), rep)])
            continue
        r = study.one(p)
        r["rep"] = rep
        rows.append(r)
        log("[%d/%d %4.0fs] %-6s %-7s %-6s %-5s %-4s b=%s n=%s t=%s  %s" % (
            i + 1, len(todo), time.time() - t_start, r["sweep"], r["engine"], short(r["preset"]), r["dtype"],
            r["workload"], r.get("batch"), r.get("input_len"), r.get("new_tokens"),
            r.get("error") or "%.1f ms, %.0f tok/s" % (r["median_ms"], r["tokens_per_s"])))
        meta["loadavg_end"] = common.loadavg()
        dump(a.raw, {"meta": meta, "rows": rows})
    meta["loadavg_end"] = common.loadavg()
    meta["total_s"] = round(time.time() - t_start)
    data = {"meta": meta, "rows": rows}
    dump(a.raw, data)
    write_doc(a, data)


# ---- the report ------------------------------------------------------------

def fmt_ms(x):
    if x is None:
        return "-"
    return "%.0f" % x if x >= 100 else "%.1f" % x if x >= 10 else "%.2f" % x


def fmt_n(x):
    if x is None:
        return "-"
    return "{:,.0f}".format(x) if x >= 100 else "%.1f" % x


def ratio(x):
    return "%.0f" % x if x >= 10 else "%.1f" % x


def find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()) and "error" not in r:
            return r
    return None


def summarize(raw):
    """One row per point: the process whose median is the median of the
    processes' medians, with their spread."""
    groups = {}
    for r in raw:
        if "error" not in r:
            groups.setdefault(key(r), []).append(r)
    out = []
    for rs in groups.values():
        rs = sorted(rs, key=lambda r: r["median_ms"])
        mid = dict(rs[(len(rs) - 1) // 2])
        mid["procs"] = len(rs)
        mid["spread"] = (rs[-1]["median_ms"] - rs[0]["median_ms"]) / mid["median_ms"] if len(rs) > 1 else None
        out.append(mid)
    done = set(groups)
    out += [r for r in raw if "error" in r and key(r) not in done]
    return out


# Where a study writes unless told otherwise (the AMD EPYC's; the Xeon's go
# to bench/results/xeon and docs/SCALING-XEON.md).
DEFAULTS = {
    "notes": os.path.join(HERE, "results", "scaling", "notes.md"),
    "raw": os.path.join(HERE, "results", "scaling", "scaling.json"),
    "doc": os.path.join(REPO, "docs", "SCALING.md"),
    "chart": os.path.join(REPO, "docs", "scaling.svg"),
}


def write_doc(a, data):
    meta, rows = data["meta"], summarize(data["rows"])
    L = []
    L.append("# How cost grows: model size, input length, batch")
    L.append("")
    L.append("`t5edge bench` on synthetic T5-Efficient checkpoints (`t5edge synth` shapes, random weights, "
             "seed 0; the real 32128-id vocabulary size), from tiny (16M parameters) to large (738M), "
             "encoder inputs of 16 to 2048 ids and batches of 1 to 64, with CTranslate2 int8 and ONNX Runtime "
             "int8 beside every int8 point. Written by `bench/scaling.py` (raw results: "
             "`%s`, every point's command line included)." % os.path.relpath(a.raw, REPO))
    L.append("")
    procs = max([r.get("procs") or 1 for r in rows] or [1])
    spreads = sorted(r["spread"] for r in rows if r.get("spread") is not None)
    noise = ""
    if spreads:
        noise = (" Across the %d processes of a point, the medians differ by %.0f %% of the shown one at the "
                 "median point and by up to %.0f %% at the worst one."
                 % (procs, 100 * spreads[len(spreads) // 2], 100 * spreads[-1]))
    L.append("**Read these for the shape of the growth, not as records.** The machine is a shared 2-core "
             "VM that other engineers share (load average "
             "below). Each point ran in %s, in rounds over the whole grid; the table shows the process whose "
             "median is the median, and each process ran few timed runs for the big points (runs and warmup "
             "per point in the raw JSON).%s"
             % ("one process" if procs == 1 else "%d processes" % procs, noise))
    L.append("")
    if os.path.exists(a.notes):
        with open(a.notes) as f:
            L.append(f.read().strip())
        L.append("")
    L.append("| | |")
    L.append("|---|---|")
    for k, label in (("date", "date"), ("cpu", "CPU"), ("nproc", "cores"), ("kernel", "kernel"),
                     ("threads", "threads"), ("loadavg_start", "load average at start (1/5/15 min)"),
                     ("loadavg_end", "load average at end"), ("commit", "commit"), ("ct2_version", "ctranslate2"),
                     ("ort_version", "onnxruntime"),
                     ("total_s", "wall time of the study (s)"), ("command", "command")):
        v = meta.get(k)
        if v is None:
            continue
        if k == "commit" and meta.get("dirty"):
            v = "%s (with uncommitted changes)" % v
        if k == "command":
            v = "`%s`" % v
        L.append("| %s | %s |" % (label, v))
    L.append("")
    L.append("Workloads: **W1** = batch 1, the 26 ids of the W1 prompt, exactly 32 greedy tokens "
             "(tokens/s counts generated tokens); **W3** = the encoder alone on the 128 W3 ids (tokens/s counts "
             "input tokens). Longer inputs and batches come from `t5edge bench --input-len N --batch B "
             "--new-tokens T`: the W3 text's ids cycled to N (rows of a batch start 7 ids apart). "
             "int8 = `--dtype int8` (weights converted at load), f32 = full precision. CTranslate2 = "
             "`ct2-transformers-converter`-equivalent `TransformersConverter(...).convert(quantization=\"int8\")`, "
             "`compute_type=\"int8\"`, 2 intra threads, run by `bench/peers/run_ct2.py`; its W3 is the encoder "
             "plus one decoder step (it has no encoder-only call). ONNX Runtime = the optimum-onnx export with "
             "past, `quantize_dynamic` (QInt8 weights, dynamic uint8 activations), 2 intra-op threads, a numpy "
             "greedy loop over the KV cache, run by `bench/peers/run_ort.py`.")
    L.append("")

    # size
    L.append("## Model size")
    L.append("")
    L.append("| model | parameters | engine | W1 median ms | W1 tokens/s | W3 median ms | W3 tokens/s | "
             "peak RSS MB (W1) | load ms (W1) |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for preset in SIZES:
        for eng, dtype, label in ENGINES:
            w1 = find(rows, sweep="size", engine=eng, preset=preset, dtype=dtype, workload="w1")
            w3 = find(rows, sweep="size", engine=eng, preset=preset, dtype=dtype, workload="w3")
            if not w1 and not w3:
                continue
            par = (w1 or w3)["parameters"]
            L.append("| %s | %.0fM | %s | %s | %s | %s%s | %s | %s | %s |" % (
                short(preset), par / 1e6, label, fmt_ms(w1 and w1["median_ms"]),
                fmt_n(w1 and w1["tokens_per_s"]), fmt_ms(w3 and w3["median_ms"]),
                "¹" if eng == "ct2" and w3 else "", fmt_n(w3 and w3["tokens_per_s"]),
                fmt_n(w1 and w1.get("peak_rss_mb")), fmt_n(w1 and w1.get("load_ms"))))
    L.append("")
    L.append("¹ CTranslate2 W3 includes one decoder step.")
    L.append("")
    growth = []
    for eng, dtype, label in ENGINES:
        for w in ("w1", "w3"):
            lo = find(rows, sweep="size", engine=eng, preset=SIZES[0], dtype=dtype, workload=w)
            hi = find(rows, sweep="size", engine=eng, preset=SIZES[-1], dtype=dtype, workload=w)
            if lo and hi:
                growth.append("%s %s x%s" % (label, w.upper(), ratio(hi["median_ms"] / lo["median_ms"])))
    if growth:
        p0 = find(rows, preset=SIZES[0])
        p1 = find(rows, preset=SIZES[-1])
        L.append("tiny -> large is x%.0f parameters; latency grows %s." % (
            p1["parameters"] / p0["parameters"], ", ".join(growth)))
        L.append("")

    # length
    L.append("## Input length")
    L.append("")
    L.append("Batch 1; median ms (tokens/s below: input tokens for the encoder, generated tokens for "
             "generation).")
    L.append("")
    lengths = sorted({r["input_len"] for r in rows if r["sweep"] == "length" and r.get("input_len")})
    L.append("| model | engine | what | " + " | ".join("%d ids" % n for n in lengths) + " |")
    L.append("|---|---|---|" + "---:|" * len(lengths))
    for preset in SIZES:
        for new, what in ((0, "encoder"), (NEW_TOKENS, "encoder + 32 tokens")):
            for eng, dtype, label in ENGINES:
                cells = [find(rows, sweep="length", engine=eng, preset=preset, dtype=dtype, new_tokens=new,
                              input_len=n) for n in lengths]
                if not any(cells):
                    continue
                L.append("| %s | %s | %s ms | %s |" % (short(preset), label, what,
                                                        " | ".join(fmt_ms(c and c["median_ms"]) for c in cells)))
    L.append("")
    for preset in SIZES:
        for dtype in ("int8", "f32"):
            for new, what in ((0, "encoder"), (NEW_TOKENS, "encoder + 32 tokens")):
                lo = find(rows, sweep="length", engine="t5edge", preset=preset, dtype=dtype, new_tokens=new,
                          input_len=lengths[0] if lengths else None)
                hi = find(rows, sweep="length", engine="t5edge", preset=preset, dtype=dtype, new_tokens=new,
                          input_len=lengths[-1] if lengths else None)
                if lo and hi:
                    L.append("- %s %s %s: %d -> %d ids (x%d) costs x%s" % (
                        short(preset), dtype, what, lengths[0], lengths[-1], lengths[-1] // lengths[0],
                        ratio(hi["median_ms"] / lo["median_ms"])))
    L.append("")

    # batch
    L.append("## Batch")
    L.append("")
    L.append("tiny; every sequence %d ids, exactly %d greedy tokens each; tokens/s counts generated tokens "
             "of the whole batch." % (BATCH_INPUT_LEN, NEW_TOKENS))
    L.append("")
    batches = sorted({r["batch"] for r in rows if r["sweep"] == "batch" and r.get("batch")})
    L.append("| engine | " + " | ".join("batch %d" % b for b in batches) + " |")
    L.append("|---|" + "---:|" * len(batches))
    for eng, dtype, label in ENGINES:
        cells = [find(rows, sweep="batch", engine=eng, dtype=dtype, batch=b) for b in batches]
        if not any(cells):
            continue
        L.append("| %s median ms | %s |" % (label, " | ".join(fmt_ms(c and c["median_ms"]) for c in cells)))
        L.append("| %s tokens/s | %s |" % (label, " | ".join(fmt_n(c and c["tokens_per_s"]) for c in cells)))
    L.append("")
    L.extend(against_peers(rows))
    L.append("![latency against model size, latency against input length, throughput against batch](%s)"
             % os.path.relpath(a.chart, os.path.dirname(a.doc)))
    L.append("")

    errs = [r for r in rows if "error" in r]
    L.append("## Reproduce")
    L.append("")
    L.append("```sh")
    L.append("cargo build --release")
    L.append(meta.get("command", "python3 bench/scaling.py"))
    # The same outputs as the run: its own --raw, --doc, --chart, --notes.
    paths = "".join(" --%s %s" % (k, os.path.relpath(getattr(a, k), REPO)) for k in ("raw", "doc", "chart", "notes")
                    if os.path.abspath(getattr(a, k)) != os.path.abspath(DEFAULTS[k]))
    L.append("python3 bench/scaling.py --render%s   # rewrite this page and the chart from the raw JSON" % paths)
    L.append("```")
    L.append("")
    L.append("One point by hand, e.g. base int8 on a 1024-id input with 32 new tokens:")
    L.append("")
    L.append("```sh")
    L.append("t5edge bench --preset t5-efficient-base --dtype int8 --input-len 1024 --new-tokens 32 "
             "--runs 3 --warmup 1 --json")
    L.append("```")
    L.append("")
    L.append("`--preset` writes the synthetic checkpoint into the cache (`$T5EDGE_CACHE`, else "
             "`~/.cache/t5edge`) the first time; large takes ~3 GB there and about a minute to write.")
    if errs:
        L.append("")
        L.append("## Points that failed")
        L.append("")
        for r in errs:
            L.append("- `%s`: %s" % (r["command"], r["error"]))
    with open(a.doc, "w") as f:
        f.write("\n".join(L) + "\n")
    with open(a.chart, "w") as f:
        f.write(chart(rows))
    log("wrote", a.doc, a.chart)


def against_peers(rows):
    """Every point with t5edge int8 and a peer beside it: the peer's median
    over t5edge's (above 1: t5edge is faster), the slowest point per sweep,
    and every point where t5edge int8 is behind."""
    L = ["## t5edge int8 against the peers, point by point", "",
         "Ratio = peer median ms / t5edge int8 median ms at the same point (above 1: t5edge int8 is faster).", ""]
    behind, worst = [], {}
    for r in rows:
        if r["engine"] == "t5edge" or "error" in r:
            continue
        kw = {k: r.get(k) for k in ("sweep", "preset", "workload", "batch", "input_len", "new_tokens")}
        if r["sweep"] == "size":
            kw.pop("batch"), kw.pop("input_len"), kw.pop("new_tokens")
        t = find(rows, engine="t5edge", dtype="int8", **kw)
        if not t:
            continue
        q = r["median_ms"] / t["median_ms"]
        name = PEERS_RUN[r["engine"]][2]
        where = "%s %s %s" % (short(r["preset"]), r["workload"].upper(),
                              "batch %s" % r["batch"] if r["sweep"] == "batch" else
                              "%s ids%s" % (r["input_len"], " +%s" % r["new_tokens"] if r.get("new_tokens") else "")
                              if r["sweep"] == "length" else "")
        k = (r["sweep"], name)
        if k not in worst or q < worst[k][0]:
            worst[k] = (q, where)
        if q < 1:
            behind.append((q, name, r["sweep"], where))
    if not worst:
        return []
    L.append("| sweep | peer | lowest ratio | at |")
    L.append("|---|---|---:|---|")
    for (sweep, name), (q, where) in sorted(worst.items()):
        L.append("| %s | %s | %.2f | %s |" % (sweep, name, q, where))
    L.append("")
    if behind:
        L.append("Points where t5edge int8 is behind (%d):" % len(behind))
        L.append("")
        for q, name, sweep, where in sorted(behind):
            L.append("- %s, %s sweep, %s: %.2f" % (name, sweep, where, q))
    else:
        L.append("t5edge int8 is ahead of every peer at every point.")
    L.append("")
    return L


# ---- the chart (hand-written SVG, log-log panels) ---------------------------

COLORS = {"t5edge int8": "#1f77b4", "t5edge f32": "#ff7f0e", "CTranslate2 int8": "#2ca02c",
          "ONNX Runtime int8": "#d62728",
          "base int8": "#9467bd", "base f32": "#8c564b"}


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def panel(x0, y0, w, h, title, xlabel, ylabel, series, xticks):
    """series: [(label, color, dashed, [(x, y), ...])]; log x and log y."""
    import math
    pts = [p for _, _, _, s in series for p in s if p[0] > 0 and p[1] > 0]
    out = ['<text x="%.1f" y="%.1f" font-size="13" font-weight="bold" text-anchor="middle">%s</text>'
           % (x0 + w / 2, y0 - 10, esc(title))]
    if not pts:
        return out
    lx0, lx1 = math.log10(min(p[0] for p in pts)), math.log10(max(p[0] for p in pts))
    ly0 = math.floor(math.log10(min(p[1] for p in pts)))
    ly1 = math.ceil(math.log10(max(p[1] for p in pts)))
    if lx1 - lx0 < 1e-9:
        lx0, lx1 = lx0 - 0.5, lx1 + 0.5
    if ly1 == ly0:
        ly1 += 1
    padx = (lx1 - lx0) * 0.06
    lx0, lx1 = lx0 - padx, lx1 + padx
    X = lambda v: x0 + (math.log10(v) - lx0) / (lx1 - lx0) * w  # noqa: E731
    Y = lambda v: y0 + h - (math.log10(v) - ly0) / (ly1 - ly0) * h  # noqa: E731
    out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>' % (x0, y0, w, h))
    for e in range(ly0, ly1 + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if v > 10 ** ly1:
                continue
            y = Y(v)
            out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (x0, y, x0 + w, y))
            lab = ("%g" % v) if v < 1e4 else "%gk" % (v / 1000)
            out.append('<text x="%d" y="%.1f" font-size="10" text-anchor="end">%s</text>' % (x0 - 4, y + 3, lab))
    for v, lab in xticks:
        x = X(v)
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (x, y0, x, y0 + h))
        out.append('<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%s</text>' % (x, y0 + h + 14,
                                                                                             esc(lab)))
    out.append('<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s</text>' % (x0 + w / 2, y0 + h + 30,
                                                                                         esc(xlabel)))
    out.append('<text x="%d" y="%.1f" font-size="11" text-anchor="middle" transform="rotate(-90 %d %.1f)">%s'
               '</text>' % (x0 - 42, y0 + h / 2, x0 - 42, y0 + h / 2, esc(ylabel)))
    ly = y0 + 14
    for label, color, dashed, s in series:
        s = [p for p in s if p[0] > 0 and p[1] > 0]
        if not s:
            continue
        d = " ".join("%.1f,%.1f" % (X(x), Y(y)) for x, y in s)
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        out.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>' % (d, color, dash))
        for x, y in s:
            out.append('<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>' % (X(x), Y(y), color))
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>' % (
            x0 + 8, ly - 4, x0 + 26, ly - 4, color, dash))
        out.append('<text x="%d" y="%d" font-size="10">%s</text>' % (x0 + 30, ly, esc(label)))
        ly += 13
    return out


def chart(rows):
    engines = ENGINES
    size_series = []
    for w, dashed in (("w1", False), ("w3", True)):
        for eng, dtype, label in engines:
            s = [(r["parameters"], r["median_ms"]) for p in SIZES
                 for r in [find(rows, sweep="size", engine=eng, dtype=dtype, preset=p, workload=w)] if r]
            size_series.append(("%s %s" % (label, w.upper()), COLORS[label], dashed, s))
    params = sorted({(r["parameters"], short(r["preset"])) for r in rows if r["sweep"] == "size"})
    len_series = []
    for preset in SIZES:
        for dtype in ("int8", "f32"):
            color = COLORS.get("%s %s" % (short(preset), dtype)) or COLORS["t5edge %s" % dtype]
            for new, dashed, what in ((NEW_TOKENS, False, "+32 tokens"), (0, True, "encoder")):
                s = sorted((r["input_len"], r["median_ms"]) for r in rows
                           if r["sweep"] == "length" and r["engine"] == "t5edge" and r["preset"] == preset
                           and r["dtype"] == dtype
                           and r.get("new_tokens") == new and "error" not in r)
                if s:
                    len_series.append(("%s %s %s" % (short(preset), dtype, what), color, dashed, s))
    lens = sorted({r["input_len"] for r in rows if r["sweep"] == "length" and r.get("input_len")})
    batch_series = []
    for eng, dtype, label in engines:
        s = sorted((r["batch"], r["tokens_per_s"]) for r in rows
                   if r["sweep"] == "batch" and r["engine"] == eng and r["dtype"] == dtype and "error" not in r)
        batch_series.append((label, COLORS[label], False, s))
    bs = sorted({r["batch"] for r in rows if r["sweep"] == "batch" and r.get("batch")})
    W, H = 1260, 420
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif">' % (W, H, W, H), '<rect width="100%" height="100%" fill="white"/>']
    out += panel(70, 40, 330, 320, "Latency vs model size (batch 1)", "parameters (tiny, small, base, large)",
                 "median ms (log)", size_series, [(p, "%s %.0fM" % (n, p / 1e6)) for p, n in params])
    out += panel(490, 40, 330, 320, "Latency vs input length (batch 1)", "input ids (log)", "median ms (log)",
                 len_series, [(n, str(n)) for n in lens])
    out += panel(910, 40, 330, 320, "Throughput vs batch (tiny, 64 ids, +32 tokens)", "batch (log)",
                 "generated tokens/s (log)", batch_series, [(b, str(b)) for b in bs])
    out.append('<text x="%d" y="%d" font-size="10" fill="#555">W1: 26 ids + 32 greedy tokens (solid); W3: encoder '
               'on 128 ids (dashed; CTranslate2: + 1 decoder step). Shared 2-core VM under load: growth shape, '
               'not records.</text>' % (70, H - 12))
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
