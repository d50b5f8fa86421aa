"""ONNX Runtime peer: the seq2seq model exported with past by optimum-onnx
(optimum.exporters.onnx.main_export, task text2text-generation-with-past:
encoder_model.onnx, decoder_model.onnx for the first step, which also
computes the cross-attention K/V, and decoder_with_past_model.onnx for the
others), run by onnxruntime's CPU execution provider with a plain numpy greedy
loop over the KV cache (no transformers generate() overhead).

Not decoder_model_merged.onnx: its If node keeps the two branches as
subgraphs, which quantize_dynamic leaves in fp32 and which ran slower here.

Variants: fp32 (the export as is) and int8 (onnxruntime.quantization.
quantize_dynamic of both graphs, QInt8 weights, dynamic uint8 activations)."""

import os
import shutil

import common

args = common.parse_args(["fp32", "int8"])

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

EXPORT = os.path.join(args.cache, "ort-fp32")
GRAPHS = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")


def versions():
    import onnx

    out = {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
    try:
        from importlib.metadata import version

        out["optimum-onnx"] = version("optimum-onnx")
        out["optimum"] = version("optimum")
    except Exception:
        pass
    return out


def model_dir():
    return os.path.join(args.cache, "ort-" + args.variant)


def prepare():
    info = {}
    if not os.path.exists(os.path.join(EXPORT, GRAPHS[1])):
        from optimum.exporters.onnx import main_export

        tmp = EXPORT + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        main_export(args.model, output=tmp, task="text2text-generation-with-past", device="cpu")
        shutil.rmtree(EXPORT, ignore_errors=True)
        os.replace(tmp, EXPORT)
        info["exported"] = True
    if args.variant == "int8":
        out = model_dir()
        if not os.path.exists(os.path.join(out, GRAPHS[1])):
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = out + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            for g in GRAPHS:
                quantize_dynamic(os.path.join(EXPORT, g), os.path.join(tmp, g), weight_type=QuantType.QInt8)
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
            info["quantized"] = True
    return info


def load(wl):
    import json

    d = model_dir()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    prov = ["CPUExecutionProvider"]
    enc = ort.InferenceSession(os.path.join(d, GRAPHS[0]), so, providers=prov)
    dec = ort.InferenceSession(os.path.join(d, GRAPHS[1]), so, providers=prov)
    dec_past = ort.InferenceSession(os.path.join(d, GRAPHS[2]), so, providers=prov)
    with open(os.path.join(EXPORT, "config.json")) as f:
        cfg = json.load(f)
    past = [i.name for i in dec_past.get_inputs() if i.name.startswith("past_key_values.")]
    return {"enc": enc, "dec": dec, "dec_past": dec_past, "past": past,
            "out": [o.name for o in dec.get_outputs()], "out_past": [o.name for o in dec_past.get_outputs()],
            "heads": cfg["num_heads"], "d_kv": cfg["d_kv"], "start": cfg.get("decoder_start_token_id", 0),
            "eos": cfg.get("eos_token_id", 1),
            "w1": pad([wl["w1"]["ids"]]), "w2": pad(wl["w2"]["ids"]), "w3": pad([wl["w3"]["ids"]])}


def pad(rows, pad_id=0):
    n = max(len(r) for r in rows)
    ids = np.full((len(rows), n), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), n), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def encode(s, ids, mask):
    return s["enc"].run(None, {"input_ids": ids, "attention_mask": mask})[0]


def decoder(s, dec_ids, hidden, mask, past):
    if past is None:
        feed = {"input_ids": dec_ids, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        named = dict(zip(s["out"], s["dec"].run(None, feed)))
    else:
        feed = {"input_ids": dec_ids, "encoder_attention_mask": mask}
        feed.update(past)
        named = dict(zip(s["out_past"], s["dec_past"].run(None, feed)))
    new_past = {}
    for name in s["past"]:
        present = "present." + name[len("past_key_values."):]
        if ".encoder." in name and past is not None:
            new_past[name] = past[name]  # the with-past graph does not recompute cross K/V
        else:
            new_past[name] = named[present]
    return named["logits"], new_past


def greedy(s, ids, mask, n):
    hidden = encode(s, ids, mask)
    b = ids.shape[0]
    tok = np.full((b, 1), s["start"], dtype=np.int64)
    past = None
    out = []
    for step in range(n):
        logits, past = decoder(s, tok, hidden, mask, past)
        last = logits[:, -1, :]
        if step < n:  # min_new_tokens = n: EOS is never allowed
            last[:, s["eos"]] = -np.inf
        tok = np.argmax(last, axis=-1).astype(np.int64).reshape(b, 1)
        out.append(tok[:, 0])
    return np.stack(out, axis=1)


def w1(s, wl):
    return greedy(s, *s["w1"], wl["w1"]["new_tokens"])[0].tolist()


def w2(s, wl):
    return greedy(s, *s["w2"], wl["w2"]["new_tokens"]).tolist()


def w3(s, wl):
    encode(s, *s["w3"])
    return None


def accuracy(s, wl, ref_ids):
    ids, mask = s["w1"]
    hidden = encode(s, ids, mask)
    dec = np.array([[s["start"]] + ref_ids[:-1]], dtype=np.int64)
    logits, _ = decoder(s, dec, hidden, mask, None)
    return logits[0]


common.run_main(args, load, versions, w1, w2, w3, accuracy=accuracy, prepare=prepare)
