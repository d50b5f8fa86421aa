"""t5edge through its Python package (python/, `pip install ./python`): the
same engine as the `t5edge bench` rows, called from Python like every peer,
so the difference between the two is the binding's per-call cost.

Variants: f32 (the checkpoint as stored), int8 (a directory written by
t5edge.quantize into the cache, as the t5edge-int8 row), int8-load
(converted at load), int8-exact (dtype int8, exact=True). Each model gets
its own pool of --threads threads (T5(..., threads=N))."""

import os

import common

args = common.parse_args(["f32", "int8", "int8-load", "int8-exact"])

import t5edge  # noqa: E402


def versions():
    return {"t5edge-py": "%s (Python package, %s)" % (t5edge.__version__, t5edge.isa())}


def quant_dir():
    return os.path.join(args.cache, "t5edge-py-int8")


def prepare():
    if args.variant != "int8":
        return {}
    out = quant_dir()
    rel = os.path.relpath(out, common.REPO)  # no machine path in the results
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return {"cached": True, "dir": rel}
    w = t5edge.quantize(args.model, out, dtype="int8")
    return {"cached": False, "dir": rel, "out_bytes": w["out_bytes"], "source_bytes": w["source_bytes"]}


def load(wl):
    kw = {"f32": {"dtype": "f32"}, "int8": {}, "int8-load": {"dtype": "int8"},
          "int8-exact": {"dtype": "int8", "exact": True}}[args.variant]
    path = quant_dir() if args.variant == "int8" else args.model
    return {"m": t5edge.T5(path, threads=args.threads, **kw)}


def w1(s, wl):
    n = wl["w1"]["new_tokens"]
    return s["m"].generate(wl["w1"]["ids"], max_new_tokens=n, min_new_tokens=n, return_ids=True).ids


def w2(s, wl):
    # one call with the 16 rows: batched inside (rows of different lengths,
    # each with its own mask), as `t5edge bench --workload w2` runs them
    n = wl["w2"]["new_tokens"]
    return [g.ids for g in s["m"].generate(wl["w2"]["ids"], max_new_tokens=n, min_new_tokens=n,
                                            return_ids=True)]


def w3(s, wl):
    s["m"].encode(wl["w3"]["ids"])
    return None


def accuracy(s, wl, ref_ids):
    # teacher-forced logits are not part of the Python API (score gives
    # log-probabilities of given ids only): greedy agreement alone
    return None


common.run_main(args, load, versions, w1, w2, w3, accuracy=accuracy, prepare=prepare)
