"""The API's shapes: inputs and results, streaming, the tokenizer, config,
quantized checkpoints."""

import os
import time

import numpy as np
import pytest

import t5edge


def test_one_input_one_result_a_list_a_list(tiny):
    m = t5edge.T5(tiny)
    one = m.generate("hello world", max_new_tokens=6)
    assert isinstance(one, str)
    assert m.generate(["hello world", "the fox"], max_new_tokens=6)[0] == one
    ids = m.tokenizer.encode("hello world")
    assert m.generate(ids, max_new_tokens=6) == one
    assert m.generate(np.array(ids), max_new_tokens=6) == one
    assert m.generate([ids, ids], max_new_tokens=6) == [one, one]
    many = m.generate("hello", num_beams=3, num_return_sequences=2, max_new_tokens=6)
    assert isinstance(many, list) and len(many) == 2
    g = m.generate("hello", num_beams=3, num_return_sequences=2, max_new_tokens=6, return_scores=True)
    assert g.texts == many and g.text == many[0] and g.ids == g.sequences[0]
    assert len(g.scores) == 2 and g.scores[0] >= g.scores[1]
    assert m.generate("hello", max_new_tokens=6, return_ids=True).scores is None


def test_sampling_is_seeded(tiny):
    m = t5edge.T5(tiny)
    a = m.generate("the fox", do_sample=True, top_k=20, temperature=1.5, seed=3, max_new_tokens=10)
    assert a == m.generate("the fox", do_sample=True, top_k=20, temperature=1.5, seed=3, max_new_tokens=10)


def test_stream_pieces_make_the_generated_text(tiny):
    m = t5edge.T5(tiny)
    for opts in ({}, {"num_beams": 3}, {"do_sample": True, "seed": 4}):
        pieces = list(m.generate_stream("the quick brown fox", max_new_tokens=10, **opts))
        assert all(isinstance(p, str) for p in pieces) and len(pieces) > 1
        assert "".join(pieces) == m.generate("the quick brown fox", max_new_tokens=10, **opts)
    with pytest.raises(ValueError, match="unknown field"):
        m.generate_stream("x", bogus=1)


def threads_now():
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_dropping_a_stream_stops_its_work(decode_synth):
    m = t5edge.T5(decode_synth, threads=1)
    base = threads_now()
    for how in ("close", "del", "with"):
        s = m.generate_stream([5, 6, 1], max_new_tokens=8000, min_new_tokens=8000)
        if how == "with":
            with s:
                next(s)
        else:
            next(s)
            if how == "close":
                s.close()
                assert list(s) == []
            del s
        # The decode thread ends at its next token; 8000 tokens would take
        # far longer than this bounded wait.
        deadline = time.monotonic() + 30
        while threads_now() > base and time.monotonic() < deadline:
            time.sleep(0.01)
        assert threads_now() <= base, how  # (a collected model's pool may end meanwhile)


def test_tokenizer(tiny):
    tok = t5edge.T5(tiny).tokenizer
    ids = tok.encode("the quick brown fox")
    assert ids[-1] == 1 and tok.decode(ids) == "the quick brown fox"
    assert tok.encode(["the", "fox"]) == [tok.encode("the"), tok.encode("fox")]
    assert tok.decode([ids, ids]) == ["the quick brown fox"] * 2
    assert tok.id_to_token(1) == "</s>"
    assert tok.vocab_size > 0


def test_config_and_inspect(tiny):
    m = t5edge.T5(tiny)
    c = m.config
    assert (c["d_model"], c["d_ff"], c["vocab_size"]) == (64, 128, 1000)
    info = m.inspect()
    assert info["parameters"] == m.num_parameters() > 0
    assert info["dtype"] == m.dtype == "f32" and info["exact"] is False
    assert info["isa"] == t5edge.isa()
    assert t5edge.T5(tiny, threads=1).threads == 1
    assert "t5edge.T5(" in repr(m)


def test_dtypes_and_a_quantized_directory(tmp_path, tiny):
    assert t5edge.T5(tiny, dtype="int8").dtype == "int8"
    exact = t5edge.T5(tiny, dtype="int8", exact=True)
    assert exact.exact and exact.dtype == "f32"
    f32 = t5edge.T5(tiny)
    assert exact.generate("the fox", max_new_tokens=12) == f32.generate("the fox", max_new_tokens=12)
    q = tmp_path / "int8"
    t5edge.quantize(tiny, q)
    qm = t5edge.T5(q)
    assert qm.dtype == "int8" and qm.tokenizer is not None
    assert qm.generate("the fox", max_new_tokens=12) == t5edge.T5(tiny, dtype="int8").generate("the fox", max_new_tokens=12)
    with pytest.raises(ValueError, match="quantized directory"):
        t5edge.T5(q, dtype="f16")


def test_ids_only_checkpoint(tmp_path, tiny):
    d = tmp_path / "ids-only"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        (d / f).write_bytes((tiny / f).read_bytes())
    m = t5edge.T5(d)
    assert m.tokenizer is None
    assert len(m.generate([5, 6, 1], max_new_tokens=4, return_ids=True).ids) == 4
    with pytest.raises(ValueError, match="no tokenizer.json"):
        m.generate([5, 6, 1], max_new_tokens=4)
    with pytest.raises(ValueError, match="tokenizer"):
        m.generate("text", max_new_tokens=4)


def test_default_model_warns(tmp_path, monkeypatch):
    monkeypatch.setenv("T5EDGE_CACHE", str(tmp_path))
    with pytest.warns(UserWarning, match="random weights"):
        m = t5edge.T5()
    assert isinstance(m.generate("hello", max_new_tokens=3), str)
    assert (tmp_path / "synth-t5-efficient-tiny-nl2-seed0-demo" / "model.safetensors").is_file()
