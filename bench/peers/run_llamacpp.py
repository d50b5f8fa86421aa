"""llama.cpp peer through llama-cpp-python's low-level C API (the high-level
Llama class has no encoder-decoder generation): llama_encode on the input ids,
then llama_decode one token per step from the decoder start token, greedy
argmax in numpy with EOS masked (min_new_tokens = 32).

The GGUF is made by llama.cpp's own convert_hf_to_gguf.py, taken from the
llama-cpp-python source distribution by setup.sh (same llama.cpp commit as the
compiled library). Variants: f32 and q8_0 (--outtype of the converter).

W2 is one llama_encode of all 16 sequences (distinct seq ids) and then one
llama_decode per step holding the 16 next tokens; needs n_seq_max = 16."""

import ctypes
import os
import subprocess
import sys

import common

args = common.parse_args(["f32", "q8_0"])

import numpy as np  # noqa: E402

TOOLS = os.path.join(common.HERE, ".venv", "llama.cpp")


def gguf_path():
    return os.path.join(args.cache, "llamacpp-%s.gguf" % args.variant)


def versions():
    import llama_cpp

    out = {"llama-cpp-python": llama_cpp.__version__}
    try:
        with open(os.path.join(TOOLS, "COMMIT")) as f:
            out["llama.cpp"] = f.read().strip()
    except OSError:
        pass
    return out


def prepare():
    out = gguf_path()
    if os.path.exists(out):
        return {"cached": True}
    script = os.path.join(TOOLS, "convert_hf_to_gguf.py")
    if not os.path.exists(script):
        raise SystemExit("missing %s: run bench/peers/setup.sh" % script)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(TOOLS, "gguf-py"), TOOLS]))
    tmp = out + ".tmp"
    subprocess.run([sys.executable, script, args.model, "--outtype", args.variant, "--outfile", tmp],
                   check=True, env=env, stdout=sys.stderr, stderr=sys.stderr)
    os.replace(tmp, out)
    return {"cached": False}


L = None
_QUIET = None  # the log callback must outlive every llama.cpp call


def load(wl):
    global L, _QUIET
    import llama_cpp

    L = llama_cpp
    _QUIET = L.llama_log_callback(lambda level, text, user_data: None)
    L.llama_log_set(_QUIET, ctypes.c_void_p(0))
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.use_mmap = True
    model = L.llama_model_load_from_file(gguf_path().encode(), mp)
    if not model:
        raise SystemExit("llama_model_load_from_file failed")
    n_seq = len(wl["w2"]["ids"]) if args.workload == "w2" else 1
    enc_tokens = max(sum(len(r) for r in wl["w2"]["ids"]), len(wl["w3"]["ids"]), len(wl["w1"]["ids"]))
    cp = L.llama_context_default_params()
    cp.n_ctx = 64 * n_seq if n_seq > 1 else 512
    cp.n_batch = max(enc_tokens, 512)
    cp.n_ubatch = cp.n_batch
    cp.n_seq_max = n_seq
    cp.kv_unified = True  # per-sequence KV streams break the T5 relative-bias add (ggml_can_repeat)
    cp.n_threads = args.threads
    cp.n_threads_batch = args.threads
    cp.no_perf = True
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        raise SystemExit("llama_init_from_model failed")
    vocab = L.llama_model_get_vocab(model)
    start = L.llama_model_decoder_start_token(model)
    if start < 0:
        start = L.llama_vocab_bos(vocab)
    return {"model": model, "ctx": ctx, "mem": L.llama_get_memory(ctx), "n_vocab": L.llama_vocab_n_tokens(vocab),
            "eos": L.llama_vocab_eos(vocab), "start": start,
            "batch": L.llama_batch_init(cp.n_batch, 0, max(n_seq, 1))}


def fill(s, rows):
    """rows: list of (token, pos, seq, want_logits)."""
    b = s["batch"]
    b.n_tokens = len(rows)
    for i, (tok, pos, seq, lg) in enumerate(rows):
        b.token[i] = tok
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = 1 if lg else 0
    return b


def encode(s, seqs):
    rows = [(t, p, si, False) for si, ids in enumerate(seqs) for p, t in enumerate(ids)]
    if L.llama_encode(s["ctx"], fill(s, rows)) != 0:
        raise RuntimeError("llama_encode failed")


def logits_row(s, i):
    ptr = L.llama_get_logits_ith(s["ctx"], i)
    return np.ctypeslib.as_array(ptr, shape=(s["n_vocab"],))


def greedy(s, seqs, n, forced=None):
    """Greedy for all seqs at once; forced: teacher-forcing ids (one sequence),
    then the logits of every step are returned instead of the ids."""
    L.llama_memory_clear(s["mem"], True)
    encode(s, seqs)
    cur = [s["start"]] * len(seqs)
    out = [[] for _ in seqs]
    rows = []
    for step in range(n):
        b = fill(s, [(t, step, si, True) for si, t in enumerate(cur)])
        if L.llama_decode(s["ctx"], b) != 0:
            raise RuntimeError("llama_decode failed at step %d" % step)
        nxt = []
        for si in range(len(seqs)):
            lg = logits_row(s, si)
            if forced is not None:
                rows.append(lg.copy())
                nxt.append(forced[step])
                continue
            lg = lg.copy()
            lg[s["eos"]] = -np.inf  # min_new_tokens = n
            t = int(np.argmax(lg))
            nxt.append(t)
            out[si].append(t)
        cur = nxt
    return rows if forced is not None else out


def w1(s, wl):
    return greedy(s, [wl["w1"]["ids"]], wl["w1"]["new_tokens"])[0]


def w2(s, wl):
    return greedy(s, wl["w2"]["ids"], wl["w2"]["new_tokens"])


def w3(s, wl):
    encode(s, [wl["w3"]["ids"]])
    return None


def accuracy(s, wl, ref_ids):
    return np.stack(greedy(s, [wl["w1"]["ids"]], len(ref_ids), forced=ref_ids))


common.run_main(args, load, versions, w1, w2, w3, accuracy=accuracy, prepare=prepare)
