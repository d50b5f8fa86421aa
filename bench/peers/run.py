#!/usr/bin/env python3
"""t5edge against its peers, side by side, on the fixed workloads of
bench/workloads.json. Every engine variant runs each workload in a process of
its own (a runner script per engine; t5edge's own `bench` subcommand), so
load time, peak RSS and cold start belong to that engine alone.

    bash bench/peers/setup.sh && bench/peers/.venv/bin/python bench/peers/run.py

writes bench/results/results.json, results.md and chart.svg (+ chart.png).
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import signal
import subprocess
import sys
import tempfile
import time

import common

HERE = common.HERE
REPO = common.REPO
PY = sys.executable

# (key, engine, variant, runner or None for t5edge, label)
VARIANTS = [
    ("t5edge-int8", "t5edge", "int8", None, "t5edge int8 (quantized dir)"),
    ("t5edge-int8-all", "t5edge", "int8-all", None, "t5edge int8 --int8-ffn-out (all layers int8, as the peers)"),
    ("t5edge-int8-load", "t5edge", "int8-load", None, "t5edge int8 (converted at load)"),
    ("t5edge-int8-exact", "t5edge", "int8-exact", None, "t5edge int8 --exact"),
    ("t5edge-f32", "t5edge", "f32", None, "t5edge f32"),
    ("t5edge-py-int8", "t5edge-py", "int8", "run_t5edge_py.py", "t5edge int8 via Python (quantized dir)"),
    ("t5edge-py-f32", "t5edge-py", "f32", "run_t5edge_py.py", "t5edge f32 via Python"),
    ("hf-fp32", "hf", "fp32", "run_hf.py", "HF transformers fp32 (eager)"),
    ("ct2-float32", "ct2", "float32", "run_ct2.py", "CTranslate2 float32"),
    ("ct2-int8", "ct2", "int8", "run_ct2.py", "CTranslate2 int8"),
    ("ct2-int8_float32", "ct2", "int8_float32", "run_ct2.py", "CTranslate2 int8_float32"),
    ("ort-fp32", "ort", "fp32", "run_ort.py", "ONNX Runtime fp32"),
    ("ort-int8", "ort", "int8", "run_ort.py", "ONNX Runtime int8 (dynamic)"),
    ("llamacpp-f32", "llamacpp", "f32", "run_llamacpp.py", "llama.cpp f32 (GGUF)"),
    ("llamacpp-q8_0", "llamacpp", "q8_0", "run_llamacpp.py", "llama.cpp q8_0 (GGUF)"),
]
ENGINES = ["t5edge", "t5edge-py", "hf", "ct2", "ort", "llamacpp"]
WORKLOADS = ["w1", "w2", "w3"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON line in output")


def run(cmd, env, timeout):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    wall = (time.perf_counter() - t0) * 1000.0
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-6:]
        if p.returncode == -signal.SIGILL:
            tail.insert(0, "SIGILL: built for instructions this CPU or VM refuses "
                        "(rebuild: bench/peers/setup.sh without LLAMACPP_NATIVE=1)")
        raise RuntimeError("exit %d: %s" % (p.returncode, " | ".join(tail)))
    return last_json(p.stdout), wall


class Harness:
    def __init__(self, a):
        self.a = a
        self.env = dict(os.environ)
        # the engines' own thread settings are the ones under test; keep stray
        # OpenMP/MKL pools from oversubscribing the cores
        self.env["OMP_NUM_THREADS"] = str(a.threads)
        self.env["MKL_NUM_THREADS"] = str(a.threads)
        self.env["TOKENIZERS_PARALLELISM"] = "false"
        self.env.setdefault("TRANSFORMERS_VERBOSITY", "error")
        self.wl = common.load_workloads(a.workloads)
        self.errors = {}

    # ---- command lines -------------------------------------------------
    def t5edge_model(self, variant):
        return {"int8": self.quant_dir, "int8-all": self.quant_dir_all}.get(variant, self.a.model)

    def t5edge_flags(self, variant):
        return {"f32": ["--dtype", "f32"], "int8": ["--dtype", "int8"], "int8-all": [], "int8-load": ["--dtype", "int8"],
                "int8-exact": ["--dtype", "int8", "--exact"]}[variant]

    def runner_cmd(self, runner, variant, *mode):
        return [PY, os.path.join(HERE, runner), "--model", self.a.model, "--cache", self.a.cache,
                "--variant", variant, "--workloads", self.a.workloads, "--threads", str(self.a.threads),
                "--runs", str(self.a.runs), "--warmup", str(self.a.warmup), *mode]

    def bench_cmd(self, v, w):
        key, engine, variant, runner, _ = v
        if engine == "t5edge":
            return [self.a.t5edge, "bench", "--workload", w, *self.t5edge_flags(variant), "--threads",
                    str(self.a.threads), "--runs", str(self.a.runs), "--warmup", str(self.a.warmup), "--json",
                    "--model", self.t5edge_model(variant)]
        return self.runner_cmd(runner, variant, "--workload", w)

    def t5edge_generate(self, variant, text=False):
        cmd = [self.a.t5edge, "generate", "--model", self.t5edge_model(variant), *self.t5edge_flags(variant),
               "--max-new-tokens", str(self.wl["w1"]["new_tokens"]),
               "--min-new-tokens", str(self.wl["w1"]["new_tokens"]), "--threads", str(self.a.threads)]
        if text:
            with open(self.a.workloads) as f:
                return cmd + [json.load(f)["w1"]["text"]]
        return cmd + ["--input-ids", ",".join(map(str, self.wl["w1"]["ids"]))]

    # ---- phases --------------------------------------------------------
    def prepare(self, variants):
        prep = {}
        if any(v[1] == "t5edge" for v in variants):
            self.quant_dir = os.path.join(self.a.cache, "t5edge-int8")
            t0 = time.perf_counter()
            p = subprocess.run([self.a.t5edge, "quantize", "--model", self.a.model, "--dtype", "int8", "--out",
                                self.quant_dir, "--force", "--threads", str(self.a.threads)],
                               capture_output=True, text=True, env=self.env)
            if p.returncode != 0:
                raise SystemExit("t5edge quantize failed: " + p.stderr[-2000:])
            prep["t5edge-int8"] = {"prepare_ms": (time.perf_counter() - t0) * 1000.0,
                                   "summary": (p.stdout + p.stderr).strip().splitlines()[-2:]}
            self.quant_dir_all = os.path.join(self.a.cache, "t5edge-int8-all")
            p = subprocess.run([self.a.t5edge, "quantize", "--model", self.a.model, "--dtype", "int8",
                                "--int8-ffn-out", "--out", self.quant_dir_all, "--force", "--threads",
                                str(self.a.threads)], capture_output=True, text=True, env=self.env)
            if p.returncode != 0:
                raise SystemExit("t5edge quantize --int8-ffn-out failed: " + p.stderr[-2000:])
        for v in variants:
            if v[3] is None:
                continue
            log("prepare", v[0])
            try:
                prep[v[0]], _ = run(self.runner_cmd(v[3], v[2], "--prepare"), self.env, 3600)
            except Exception as e:  # noqa: BLE001
                self.errors.setdefault(v[0], []).append("prepare: %s" % e)
                log("  FAILED", e)
        return prep

    def versions(self, variants):
        out = {}
        p = subprocess.run([self.a.t5edge, "--version"], capture_output=True, text=True)
        out["t5edge"] = p.stdout.strip()
        # which source the binary was built from: the git checkout it sits in
        bdir = os.path.dirname(self.a.t5edge)
        top = subprocess.run(["git", "-C", bdir, "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True).stdout.strip()
        if top:
            rev = subprocess.run(["git", "-C", top, "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", top, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True).stdout.strip()
            out["t5edge"] += " (commit %s%s, binary %s)" % (rev, " + uncommitted changes" if dirty else "",
                                                            shown(self.a.t5edge))
        else:
            out["t5edge"] += " (binary %s)" % shown(self.a.t5edge)
        if self.a.t5edge_note:
            out["t5edge"] += " [%s]" % self.a.t5edge_note
        seen = set()
        for v in variants:
            if v[3] is None or v[1] in seen or v[0] in self.errors:
                continue
            seen.add(v[1])
            try:
                r, _ = run(self.runner_cmd(v[3], v[2], "--versions"), self.env, 600)
                out.update(r)
            except Exception as e:  # noqa: BLE001
                out[v[1]] = "unavailable (%s)" % e
        out["python"] = platform.python_version()
        return out

    def bench(self, variants, workloads):
        res = {v[0]: {w: [] for w in workloads} for v in variants}
        for rep in range(self.a.repeat):
            for v in variants:
                if any(e.startswith("prepare") for e in self.errors.get(v[0], [])):
                    continue
                for w in workloads:
                    log("bench rep %d/%d %s %s" % (rep + 1, self.a.repeat, v[0], w))
                    try:
                        r, wall = run(self.bench_cmd(v, w), self.env, 3600)
                        r["process_ms"] = wall
                        res[v[0]][w].append(r)
                    except Exception as e:  # noqa: BLE001
                        self.errors.setdefault(v[0], []).append("%s: %s" % (w, e))
                        log("  FAILED", e)
        return res

    def cold(self, variants):
        out = {}
        text_ok = os.path.exists(os.path.join(self.a.model, "tokenizer.json"))
        for v in variants:
            if any(e.startswith("prepare") for e in self.errors.get(v[0], [])):
                continue
            log("cold", v[0])
            ent = {}
            try:
                if v[1] == "t5edge":
                    cmds = {"ids": self.t5edge_generate(v[2])}
                    if text_ok:
                        cmds["text"] = self.t5edge_generate(v[2], text=True)
                else:
                    cmds = {"ids": self.runner_cmd(v[3], v[2], "--cold")}
                for kind, cmd in cmds.items():
                    walls = []
                    for _ in range(self.a.cold_runs):
                        t0 = time.perf_counter()
                        p = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=600)
                        walls.append((time.perf_counter() - t0) * 1000.0)
                        if p.returncode != 0:
                            raise RuntimeError("exit %d: %s" % (p.returncode, p.stderr.strip()[-500:]))
                    ent[kind] = {"median_ms": statistics.median(walls), "all_ms": walls}
            except Exception as e:  # noqa: BLE001
                self.errors.setdefault(v[0], []).append("cold: %s" % e)
                log("  FAILED", e)
            out[v[0]] = ent
        return out

    def accuracy(self, variants):
        import numpy as np

        out = {}
        tmp = tempfile.mkdtemp(prefix="peers-acc-")
        ref_npy = os.path.join(tmp, "hf.npy")
        ref, _ = run(self.runner_cmd("run_hf.py", "fp32", "--accuracy", "--ref-ids", "0", "--logits-out",
                                     os.path.join(tmp, "dummy.npy")), self.env, 600)
        ref_ids = ref["ids"]
        ref_arg = ",".join(map(str, ref_ids))
        ref, _ = run(self.runner_cmd("run_hf.py", "fp32", "--accuracy", "--ref-ids", ref_arg, "--logits-out",
                                     ref_npy), self.env, 600)
        ref_logits = np.load(ref_npy)
        w1 = ",".join(map(str, self.wl["w1"]["ids"]))
        for v in variants:
            if any(e.startswith("prepare") for e in self.errors.get(v[0], [])):
                continue
            log("accuracy", v[0])
            try:
                cols = None
                if v[1] == "t5edge" and v[2] == "int8-exact":
                    # `t5edge forward` has no --exact: its logits would be another variant's
                    g, _ = run(self.t5edge_generate(v[2]) + ["--json"], self.env, 600)
                    ids, logits = g["ids"], None
                elif v[1] == "t5edge":
                    g, _ = run(self.t5edge_generate(v[2]) + ["--json"], self.env, 600)
                    ids = g["ids"]
                    dec = ",".join(map(str, [0] + ref_ids[:-1]))
                    f, _ = run([self.a.t5edge, "forward", "--model", self.t5edge_model(v[2]),
                                *self.t5edge_flags(v[2]), "--threads", str(self.a.threads), "--input-ids", w1,
                                "--decoder-ids", dec, "--top-k", str(ref_logits.shape[-1]), "--json"],
                               self.env, 600)
                    logits, cols = f["top_logits"], f["top_ids"]
                else:
                    npy = os.path.join(tmp, v[0] + ".npy")
                    r, _ = run(self.runner_cmd(v[3], v[2], "--accuracy", "--ref-ids", ref_arg, "--logits-out", npy),
                               self.env, 600)
                    ids = r["ids"]
                    logits = np.load(npy) if r.get("logits") else None
                ent = {"ids": ids, "agree": common.first_diff_agreement(ids, ref_ids), "of": len(ref_ids)}
                if logits is not None:
                    ent["max_rel_logit_err"] = common.max_rel_logit_err(logits, ref_logits, cols)
                    if ent["max_rel_logit_err"] > 0.1 and cols is None:
                        # a constant factor off (llama.cpp's T5 graph skips the tied-head
                        # d_model^-0.5 rescale): report the error after the best scale too
                        k = common.logit_scale_fit(logits, ref_logits)
                        ent["logit_scale_fit"] = k
                        ent["max_rel_logit_err_rescaled"] = common.max_rel_logit_err(
                            np.asarray(logits) * k, ref_logits)
                out[v[0]] = ent
            except Exception as e:  # noqa: BLE001
                self.errors.setdefault(v[0], []).append("accuracy: %s" % e)
                log("  FAILED", e)
        out["_reference"] = {"engine": "hf-fp32", "ids": ref_ids}
        return out


def summarize(rows):
    """The process whose median is the (low) median of the per-process medians
    over the repeats, reported as is, plus the spread of those medians."""
    if not rows:
        return None
    meds = [r["median_ms"] for r in rows]
    mid = statistics.median_low(meds)
    pick = rows[meds.index(mid)]
    out = {k: pick[k] for k in ("median_ms", "p90_ms", "min_ms", "tokens_per_run", "tokens_per_s", "load_ms",
                                "peak_rss_mb") if k in pick}
    out["medians_ms"] = meds
    out["peak_rss_mb_max"] = max(r["peak_rss_mb"] for r in rows)
    out["spread_pct"] = 100.0 * (max(meds) - min(meds)) / mid
    return out


def fmt(x, nd=1):
    if x is None:
        return "—"
    if x >= 100:
        return "%.0f" % x
    if x >= 10:
        return "%.1f" % x
    return "%.*f" % (nd + 1, x)


def write_outputs(a, meta, variants, summary, cold, acc, errors, prep):
    os.makedirs(a.out, exist_ok=True)
    data = {"meta": meta, "variants": [], "errors": errors, "prepare": prep}
    for key, engine, variant, runner, label in variants:
        data["variants"].append({"key": key, "engine": engine, "variant": variant, "label": label,
                                 "workloads": summary.get(key, {}), "cold_start": cold.get(key),
                                 "accuracy": acc.get(key)})
    data["accuracy_reference"] = acc.get("_reference")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(relative_paths(data), f, indent=1)

    def w(key, wl, field):
        s = summary.get(key, {}).get(wl)
        return None if s is None else s.get(field)

    lines = []
    lines.append("# t5edge and its peers on CPU")
    lines.append("")
    lines.append("- date: %s" % meta["date"])
    lines.append("- CPU: %s, %s logical cores; every engine limited to %d threads; load average before/after: %s / %s"
                 % (meta["cpu"], meta["nproc"], a.threads, meta["loadavg_start"], meta["loadavg_end"]))
    lines.append("- model: `%s`; workloads `%s` (W1: batch 1, %d input ids, exactly %d greedy tokens; W2: batch %d, "
                 "%d greedy tokens each; W3: encoder only, batch 1, %d ids)"
                 % (meta["model"], os.path.relpath(a.workloads, REPO), meta["w1_len"], meta["new_tokens"],
                    meta["w2_batch"], meta["new_tokens"], meta["w3_len"]))
    floor = getattr(a, "warmup_ms", common.WARMUP_MS)
    lines.append("- %d warmup + %d timed runs per process%s, %d process(es) per engine and workload; the table shows "
                 "the process with the median of the per-process medians"
                 % (a.warmup, a.runs, " (a Python runner warms up for at least %.0f ms too: common.time_runs)" % floor
                    if floor else "", a.repeat))
    lines.append("- versions: " + ", ".join("%s %s" % (k, v) for k, v in meta["versions"].items()))
    lines.append("- command: `%s`" % meta["command"])
    lines.append("")
    lines.append("| engine | W1 ms median (p90) | W1 tok/s | W2 tok/s (ms) | W3 ms median | load ms | peak RSS MB W1 / W2 "
                 "| cold start ms | greedy = HF (of 32) | max rel logit err |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for key, engine, variant, runner, label in variants:
        if key not in summary and key in errors:
            lines.append("| %s | failed: see errors | | | | | | | | |" % label)
            continue
        c = cold.get(key) or {}
        cs = fmt(c["ids"]["median_ms"]) if "ids" in c else "—"
        if "text" in c:
            cs += " (text: %s)" % fmt(c["text"]["median_ms"])
        ac = acc.get(key) or {}
        agree = "%d" % ac["agree"] if "agree" in ac else "—"
        rel = "%.1e" % ac["max_rel_logit_err"] if "max_rel_logit_err" in ac else "—"
        if "logit_scale_fit" in ac:
            rel += " ²; ×%.4g: %.1e" % (ac["logit_scale_fit"], ac["max_rel_logit_err_rescaled"])
        if key == "t5edge-int8-exact":
            rel = "— ³"
        w1m, w1p = w(key, "w1", "median_ms"), w(key, "w1", "p90_ms")
        w3 = fmt(w(key, "w3", "median_ms"), 2)
        if engine == "ct2" and w(key, "w3", "median_ms") is not None:
            w3 += " ¹"
        lines.append("| %s | %s (%s) | %s | %s (%s) | %s | %s | %s / %s | %s | %s | %s |" % (
            label, fmt(w1m), fmt(w1p), fmt(w(key, "w1", "tokens_per_s")), fmt(w(key, "w2", "tokens_per_s")),
            fmt(w(key, "w2", "median_ms")), w3, fmt(w(key, "w1", "load_ms")),
            fmt(w(key, "w1", "peak_rss_mb")), fmt(w(key, "w2", "peak_rss_mb")), cs, agree, rel))
    lines.append("")
    if any(v[1] == "ct2" and v[0] in summary for v in variants):
        lines.append("¹ CTranslate2's Translator has no encoder-only call: its W3 is the encoder plus one decoder "
                     "step.")
    if any("logit_scale_fit" in (acc.get(v[0]) or {}) for v in variants):
        lines.append("² llama.cpp's logits are a constant factor off HF's (its T5 graph skips the d_model^-0.5 rescale "
                     "of a tied LM head; argmax unaffected): the second number is the error after the "
                     "least-squares scale shown.")
    if "t5edge-int8-exact" in acc:
        lines.append("³ `t5edge forward` has no `--exact`; its greedy picks are certified equal to the f32 argmax "
                     "(see t5edge f32 for the logits).")
    lines.append("")
    lines.append("Cold start: the whole process, from exec to the 32 W1 tokens (t5edge: `t5edge generate`; peers: "
                 "their runner's `--cold` mode, Python start and imports included), median of %d, page cache warm. "
                 "Load ms is model load inside the process (after imports). Agreement: greedy W1 tokens equal to HF "
                 "fp32's before the first difference; logit error: max over the 32 teacher-forced positions of "
                 "max|l - l_HF| / max|l_HF|." % a.cold_runs)
    lines.append("")
    for ref_key, ref_name in (("t5edge-int8", "t5edge int8"), ("t5edge-f32", "t5edge f32")):
        if ref_key not in summary:
            continue
        lines.append("**Time relative to %s** (peer median / %s median; above 1 means %s is faster):" % (
            ref_name, ref_name, ref_name))
        lines.append("")
        lines.append("| engine | W1 | W2 | W3 |")
        lines.append("|---|---|---|---|")
        for key, engine, variant, runner, label in variants:
            cells = []
            for wl in WORKLOADS:
                m, r = w(key, wl, "median_ms"), w(ref_key, wl, "median_ms")
                cells.append("%.2f×" % (m / r) if m and r else "—")
            lines.append("| %s | %s |" % (label, " | ".join(cells)))
        lines.append("")
    lines.append("**Noise**: spread of the per-process medians, (max - min) / median, over the %d processes:" % a.repeat)
    lines.append("")
    lines.append("| engine | W1 | W2 | W3 |")
    lines.append("|---|---|---|---|")
    for key, engine, variant, runner, label in variants:
        cells = []
        for wl in WORKLOADS:
            sp = w(key, wl, "spread_pct")
            cells.append("%.0f%%" % sp if sp is not None else "—")
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    lines.append("")
    if errors:
        lines.append("**Errors**:")
        lines.append("")
        for k, es in errors.items():
            for e in es:
                lines.append("- %s: %s" % (k, e.replace("|", "\\|")[:400]))
        lines.append("")
    lines.append("![W1/W2/W3 per engine](chart.svg)")
    lines.append("")
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(lines))

    try:
        chart(a, variants, summary)
    except Exception as e:  # noqa: BLE001
        log("chart failed:", e)


def chart(a, variants, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    rows = [(label, key) for key, engine, variant, runner, label in variants if key in summary]
    panels = [("w1", "median_ms", "W1 latency: ms for 32 tokens, batch 1 (lower is better)"),
              ("w2", "tokens_per_s", "W2 throughput: generated tokens/s, batch 16 (higher is better)"),
              ("w3", "median_ms", "W3 encoder: ms for 128 ids (lower is better)")]
    fig, axes = plt.subplots(1, 3, figsize=(18, 0.45 * len(rows) + 2.0))
    labels = [r[0] for r in rows]
    for ax, (wl, field, title) in zip(axes, panels):
        vals = [summary[k].get(wl, {}).get(field) if summary[k].get(wl) else 0 for _, k in rows]
        colors = ["#d62728" if k.startswith("t5edge") else "#1f77b4" for _, k in rows]
        y = range(len(rows))
        ax.barh(y, [v or 0 for v in vals], color=colors)
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels if ax is axes[0] else [""] * len(rows))
        ax.invert_yaxis()
        pos = [v for v in vals if v]
        if pos and max(pos) / min(pos) > 20:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            title += ", log scale"
        ax.set_title(title, fontsize=10)
        for i, v in enumerate(vals):
            if v:
                ax.text(v, i, " " + fmt(v), va="center", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("t5edge vs peers, %s, %d threads" % (os.path.basename(a.model.rstrip("/")),
                                                                    a.threads), fontsize=11)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "chart.svg"))
    fig.savefig(os.path.join(a.out, "chart.png"), dpi=80)
    plt.close(fig)


def relative_paths(v):
    """`v` (JSON data) with every absolute path inside or beside the
    repository rewritten as `shown` writes it, also inside longer strings
    (commands, error messages)."""
    top = os.path.dirname(REPO) + "/"
    if isinstance(v, dict):
        return {k: relative_paths(x) for k, x in v.items()}
    if isinstance(v, list):
        return [relative_paths(x) for x in v]
    if isinstance(v, str) and top in v:
        return v.replace(REPO + "/", "").replace(top, "../")
    return v


def shown(path):
    """`path` as the results show it: relative to the repository when it lies
    in the repository or beside it (../shared), never where this machine
    keeps the checkout."""
    rel = os.path.relpath(path, REPO)
    return rel if not rel.startswith("../..") else path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    ap.add_argument("--model", default=common.DEFAULT_MODEL)
    ap.add_argument("--t5edge", default=os.path.join(REPO, "target", "release", "t5edge"))
    ap.add_argument("--t5edge-note", default="", help="where the t5edge binary came from, for the versions line")
    ap.add_argument("--workloads", default=common.DEFAULT_WORKLOADS)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="processes per engine variant and workload")
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma list of " + ",".join(ENGINES))
    ap.add_argument("--variants", default="", help="comma list of variant keys (default: all of --engines)")
    ap.add_argument("--only", default="w1,w2,w3", help="workloads to time")
    ap.add_argument("--no-cold", action="store_true")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--cache", default="", help="converted models (default bench/peers/.cache/<model name>)")
    ap.add_argument("--render", action="store_true", help="only rewrite results.md and the chart from OUT/results.json")
    a = ap.parse_args()
    if a.render:
        return render(a)
    a.model = os.path.abspath(a.model)
    a.out = os.path.abspath(a.out)
    a.t5edge = os.path.abspath(a.t5edge)
    a.workloads = os.path.abspath(a.workloads)
    if not a.cache:
        st = os.stat(os.path.join(a.model, "config.json"))
        a.cache = os.path.join(HERE, ".cache", "%s-%d" % (os.path.basename(a.model.rstrip("/")), int(st.st_mtime)))
    os.makedirs(a.cache, exist_ok=True)
    if not os.access(a.t5edge, os.X_OK):
        raise SystemExit("no t5edge binary at %s (cargo build --release, or pass --t5edge PATH)" % a.t5edge)
    engines = set(a.engines.split(","))
    keys = set(a.variants.split(",")) if a.variants else None
    variants = [v for v in VARIANTS if v[1] in engines and (keys is None or v[0] in keys)]
    workloads = [w for w in WORKLOADS if w in a.only.split(",")]

    h = Harness(a)
    wl = h.wl
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": common.cpu_model(), "nproc": os.cpu_count(), "kernel": platform.release(),
            "loadavg_start": common.loadavg(), "threads": a.threads, "runs": a.runs, "warmup": a.warmup,
            "warmup_ms": common.WARMUP_MS, "repeat": a.repeat, "cold_runs": a.cold_runs, "model": shown(a.model), "new_tokens": wl["w1"]["new_tokens"],
            "w1_len": len(wl["w1"]["ids"]), "w2_batch": len(wl["w2"]["ids"]), "w3_len": len(wl["w3"]["ids"]),
            "command": " ".join(shlex.quote(x) for x in
                                [os.path.relpath(PY, REPO) if PY.startswith(REPO) else PY,
                                 os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:])}
    prep = h.prepare(variants)
    meta["versions"] = h.versions(variants)
    # timings first, while the driver is still small; accuracy (which holds
    # logits in this process) last
    res = h.bench(variants, workloads)
    cold = {} if a.no_cold else h.cold(variants)
    acc = {} if a.no_accuracy else h.accuracy(variants)
    meta["loadavg_end"] = common.loadavg()
    summary = {}
    for key, per in res.items():
        s = {w: summarize(rows) for w, rows in per.items() if rows}
        if s:
            summary[key] = s
    data_raw = {k: v for k, v in res.items()}
    write_outputs(a, meta, variants, summary, cold, acc, h.errors, prep)
    with open(os.path.join(a.out, "raw_runs.json"), "w") as f:
        json.dump(relative_paths(data_raw), f, indent=1)
    log("wrote", a.out)
    print(open(os.path.join(a.out, "results.md")).read())


def render(a):
    """Rewrite results.md and the chart from a results.json (no engine runs)."""
    a.out = os.path.abspath(a.out)
    with open(os.path.join(a.out, "results.json")) as f:
        data = json.load(f)
    meta = data["meta"]
    for k in ("threads", "runs", "warmup", "repeat", "model"):
        setattr(a, k, meta[k])
    a.cold_runs = a.cold_runs if "cold_runs" not in meta else meta["cold_runs"]
    a.warmup_ms = meta.get("warmup_ms", 0.0)  # runs before it warmed up by count alone
    variants, summary, cold, acc = [], {}, {}, {}
    for v in data["variants"]:
        runner = next((x[3] for x in VARIANTS if x[0] == v["key"]), None)
        variants.append((v["key"], v["engine"], v["variant"], runner, v["label"]))
        if v["workloads"]:
            summary[v["key"]] = v["workloads"]
        if v["cold_start"] is not None:
            cold[v["key"]] = v["cold_start"]
        if v["accuracy"] is not None:
            acc[v["key"]] = v["accuracy"]
    if data.get("accuracy_reference"):
        acc["_reference"] = data["accuracy_reference"]
    write_outputs(a, meta, variants, summary, cold, acc, data["errors"], data["prepare"])
    print(open(os.path.join(a.out, "results.md")).read())


if __name__ == "__main__":
    main()
