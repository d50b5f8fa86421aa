"""Hugging Face transformers peer: T5ForConditionalGeneration, fp32, eager
attention, torch CPU, greedy model.generate with the KV cache."""

import common

args = common.parse_args(["fp32"])

import torch  # noqa: E402

torch.set_num_threads(args.threads)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:
    pass


def versions():
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def load(wl):
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    return {"model": model, "w1": torch.tensor([wl["w1"]["ids"]]), "w2": pad(wl["w2"]["ids"]),
            "w3": torch.tensor([wl["w3"]["ids"]])}


def pad(rows, pad_id=0):
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def gen(model, ids, mask, n):
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, num_beams=1, use_cache=True)
    return out[:, 1:]  # drop the decoder start token


def w1(s, wl):
    ids = s["w1"]
    return gen(s["model"], ids, torch.ones_like(ids), wl["w1"]["new_tokens"])[0].tolist()


def w2(s, wl):
    ids, mask = s["w2"]
    return gen(s["model"], ids, mask, wl["w2"]["new_tokens"]).tolist()


def w3(s, wl):
    with torch.inference_mode():
        s["model"].encoder(input_ids=s["w3"]).last_hidden_state
    return None


def accuracy(s, wl, ref_ids):
    model = s["model"]
    dec = torch.tensor([[model.config.decoder_start_token_id] + ref_ids[:-1]])
    with torch.inference_mode():
        out = model(input_ids=s["w1"], decoder_input_ids=dec)
    return out.logits[0].numpy()


common.run_main(args, load, versions, w1, w2, w3, accuracy=accuracy)
