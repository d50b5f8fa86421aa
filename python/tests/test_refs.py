"""The same HF references as the Rust tests (tests/synth_refs.rs,
tests/beam_search.rs, tests/sampling.rs), through the Python API."""

import numpy as np
import pytest

import t5edge
from conftest import assert_close, decode_refs, sha256


def test_synthesized_checkpoints_are_the_references(cases):
    for name, (d, case, _) in cases.items():
        assert sha256(d / "model.safetensors") == case["model_sha256"], (
            name + ": t5edge.synth no longer writes the checkpoint the references were made from")
        assert t5edge.T5(d).num_parameters() == case["num_parameters"], name


def test_greedy_ids_match_hf(decoder_cases):
    for name, (d, case, _) in decoder_cases.items():
        m = t5edge.T5(d)
        prompts = case["prompts"]
        inputs = [pc["input_ids"] for pc in prompts.values()]
        n = len(next(iter(prompts.values()))["greedy_ids"]) - 1
        # one call, batched inside: each row gets what it gets alone
        got = m.generate(inputs, max_new_tokens=n, min_new_tokens=n, return_ids=True)
        for (p, pc), g in zip(prompts.items(), got):
            assert g.ids == pc["greedy_ids"][1:], "%s/%s greedy (min HF margin %s)" % (
                name, p, pc["greedy_min_margin"])
            assert g.input_ids == pc["input_ids"]
            # and alone
            assert m.generate(pc["input_ids"], max_new_tokens=n, min_new_tokens=n, return_ids=True).ids == g.ids


def test_encoder_states_match_hf(cases):
    for name, (d, case, ref) in cases.items():
        m = t5edge.T5(d)
        prompts = list(case["prompts"].items())
        for p, pc in prompts:
            states, mask = m.encode(pc["input_ids"])
            assert states.dtype == np.float32 and mask.dtype == np.int64
            assert states.shape == (len(pc["input_ids"]), m.config["d_model"])
            assert mask.tolist() == [1] * len(pc["input_ids"])
            assert_close("%s/%s encoder" % (name, p), states.ravel(), ref[p + ".encoder_hidden"].ravel(), 1e-4)
        # a batch: padded with zeros after each row's tokens, mask 1 on them
        states, mask = m.encode([pc["input_ids"] for _, pc in prompts])
        lens = [len(pc["input_ids"]) for _, pc in prompts]
        assert states.shape == (len(prompts), max(lens), m.config["d_model"])
        for i, ((p, pc), n) in enumerate(zip(prompts, lens)):
            assert mask[i].tolist() == [1] * n + [0] * (max(lens) - n)
            assert_close("%s/%s batch" % (name, p), states[i, :n].ravel(), ref[p + ".encoder_hidden"].ravel(), 1e-4)
            assert not states[i, n:].any()


def test_embeddings_are_hf_states_mean_pooled(cases):
    for name, (d, case, ref) in cases.items():
        m = t5edge.T5(d)
        inputs = [pc["input_ids"] for pc in case["prompts"].values()]
        e = m.embed(inputs)
        en = m.embed(inputs, normalize=True)
        assert e.shape == (len(inputs), m.config["d_model"]) and e.dtype == np.float32
        for i, (p, pc) in enumerate(case["prompts"].items()):
            h = ref[p + ".encoder_hidden"].reshape(len(pc["input_ids"]), -1).astype(np.float64)
            want = h.mean(axis=0)
            assert_close("%s/%s embed" % (name, p), e[i], want, 1e-4)
            assert_close("%s/%s normalized" % (name, p), en[i], want / np.linalg.norm(want), 1e-4)
        one = m.embed(inputs[0])
        assert one.shape == (m.config["d_model"],)
        # alone or in a batch: the same up to the batched products' rounding
        assert_close(name + " embed alone", one, e[0], 1e-5)


def test_score_is_hf_log_softmax(decoder_cases):
    for name, (d, case, ref) in decoder_cases.items():
        m = t5edge.T5(d)
        dec = case["decoder_input_ids"]
        for p, pc in case["prompts"].items():
            last = ref[p + ".tf_logits_last"].astype(np.float64)
            lse = last.max() + np.log(np.exp(last - last.max()).sum())
            for t in (5, len(last) - 1):
                s = m.score(pc["input_ids"], dec[1:] + [t])
                assert s.token_logprobs.dtype == np.float32
                assert len(s.token_logprobs) == len(dec)
                assert abs(float(s.token_logprobs[-1]) - (last[t] - lse)) <= 1e-4, (name, p, t)
                assert abs(s.logprob - float(np.sum(s.token_logprobs, dtype=np.float64))) <= 1e-3


def _hf_model_refs():
    return decode_refs()["models"]["synth"]


@pytest.mark.parametrize("config", sorted(_hf_model_refs()["beam"]))
def test_beam_search_matches_hf(decode_synth, config):
    refs = _hf_model_refs()
    m = t5edge.T5(decode_synth)
    cfg = refs["beam"][config]
    for prompt, want in zip(refs["prompts"], cfg["results"]):
        # HF's generate options are this API's keyword options, as they are.
        g = m.generate(prompt, return_scores=True, **cfg["options"])
        assert g.sequences[0] == want["sequences"][0], config
        assert len(g.sequences) == len(want["sequences"])
        lp = cfg["options"].get("length_penalty", 1.0)
        for i, (s, w) in enumerate(zip(g.scores, want["scores"])):
            scale = max(len(want["sequences"][i]) ** (-lp), 1.0)
            assert abs(s - w) / scale <= 1e-4, (config, i, s, w)


@pytest.mark.parametrize("config", sorted(_hf_model_refs()["greedy"]))
def test_greedy_and_sampling_options_match_hf(decode_synth, config):
    refs = _hf_model_refs()
    m = t5edge.T5(decode_synth)
    cfg = refs["greedy"][config]
    got = m.generate(refs["prompts"], return_ids=True, **cfg["options"])
    for g, want in zip(got, cfg["results"]):
        assert g.ids == want, config


def test_rerank_matches_hf_p_true(tmp_path):
    """monoT5 reranking against HF's p(true) (tests/fixtures/rerank_refs.json,
    tools/refs/make_rerank_refs.py). Text in needs the real T5 tokenizer,
    which only ../shared has."""
    import json
    import shutil

    from conftest import FIXTURES, SHARED, synth_from_args

    refs = json.loads((FIXTURES / "rerank_refs.json").read_text())
    tok = SHARED / "tokenizers" / "t5" / "tokenizer.json"
    if not tok.is_file():
        pytest.skip("no real T5 tokenizer at %s (../shared)" % tok)
    d = synth_from_args(refs["synth_args"], tmp_path)
    assert sha256(tmp_path / "model.safetensors") == refs["model_sha256"]
    shutil.copy(tok, tmp_path / "tokenizer.json")
    m = t5edge.T5(d)
    for q in refs["queries"]:
        texts = [doc["text"] for doc in q["documents"]]
        got = m.rerank(q["query"], texts)
        assert [r["score"] for r in got] == sorted((r["score"] for r in got), reverse=True)
        assert sorted(r["index"] for r in got) == list(range(len(texts)))
        for r in got:
            assert r["text"] == texts[r["index"]]
            want = q["documents"][r["index"]]["p_true"]
            assert abs(r["score"] - want) <= 1e-5, (q["query"], r["index"], r["score"], want)


def test_encoder_only_checkpoint_encodes_and_refuses_to_generate(cases):
    only = [v for v in cases.values() if v[1].get("encoder_only")]
    assert only, "the references include an encoder-only checkpoint"
    for d, case, ref in only:
        m = t5edge.T5(d)
        pc = next(iter(case["prompts"].values()))
        states, _ = m.encode(pc["input_ids"])
        p = next(iter(case["prompts"]))
        assert_close("encoder-only states", states.ravel(), ref[p + ".encoder_hidden"].ravel(), 1e-4)
        with pytest.raises(t5edge.RequestError, match="encoder-only"):
            m.generate(pc["input_ids"], max_new_tokens=2)
        with pytest.raises(t5edge.RequestError, match="encoder-only"):
            m.score(pc["input_ids"], [5, 6])
