"""Errors are Python exceptions with the library's message; a panic is one
too, and the interpreter lives."""

import subprocess
import sys

import pytest

import t5edge


def test_the_hierarchy():
    assert issubclass(t5edge.Error, Exception)
    assert issubclass(t5edge.RequestError, t5edge.Error) and issubclass(t5edge.RequestError, ValueError)
    assert issubclass(t5edge.FileError, t5edge.Error) and issubclass(t5edge.FileError, OSError)
    assert issubclass(t5edge.NotFoundError, t5edge.FileError) and issubclass(t5edge.NotFoundError, FileNotFoundError)
    assert issubclass(t5edge.ExistsError, t5edge.FileError) and issubclass(t5edge.ExistsError, FileExistsError)
    assert issubclass(t5edge.InternalError, t5edge.Error)
    assert not issubclass(t5edge.InternalError, ValueError)


def test_bad_requests_are_value_errors_with_the_library_message(tiny):
    m = t5edge.T5(tiny)
    cases = [
        (lambda: m.generate("x", num_beam=2), "unknown field `num_beam`"),
        (lambda: m.generate("x", top_p=2.0), "top_p 2 must be in (0, 1]"),
        (lambda: m.generate("x", num_beams="4"), "invalid type"),
        (lambda: m.generate("x", num_beams=2, do_sample=True), "beam sampling"),
        (lambda: m.generate("x", max_new_tokens=-1), "invalid value"),
        (lambda: m.generate([5000, 1]), "token id 5000 is not below vocab_size 1000"),
        (lambda: m.generate([]), "no inputs"),
        (lambda: m.generate(3.5), "not float"),
        (lambda: m.generate("x", seed=[1]), "seed: a list is not an option value"),
        (lambda: m.embed([[]]), "input_ids is empty"),
        (lambda: m.score("x", ""), "the target has no tokens"),
        (lambda: m.score(["a", "b"], "c"), "two lists of equal length"),
        (lambda: t5edge.T5(tiny, dtype="int4"), 'dtype "int4"'),
        (lambda: t5edge.T5(tiny, exact=True), "exact goes with dtype int8"),
        (lambda: t5edge.T5(tiny, threads=0), "threads 0"),
        (lambda: t5edge.T5(tiny, preset="t5-efficient-tiny"), "not both"),
    ]
    for call, msg in cases:
        with pytest.raises(ValueError) as e:
            call()
        assert isinstance(e.value, t5edge.RequestError)
        assert msg in str(e.value), (msg, str(e.value))


def test_files(tmp_path, tiny):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as e:
        t5edge.T5(missing)
    assert isinstance(e.value, t5edge.NotFoundError)
    assert str(missing) in str(e.value) and "no such directory" in str(e.value)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(OSError, match="not a directory") as e:
        t5edge.T5(a_file)
    assert isinstance(e.value, t5edge.FileError)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(OSError) as e:
        t5edge.T5(bad)
    assert isinstance(e.value, t5edge.FileError)
    assert "config.json" in str(e.value)


def test_quantize_refuses_to_overwrite(tmp_path, tiny):
    out = tmp_path / "q"
    w = t5edge.quantize(tiny, out, dtype="int8")
    assert w["tensors"] > 0 and w["out_bytes"] < w["source_bytes"]
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError) as e:
        t5edge.quantize(tiny, out, dtype="f16")
    assert isinstance(e.value, t5edge.ExistsError) and "force=True" in str(e.value)
    assert (out / "model.safetensors").read_bytes() == before, "nothing overwritten"
    t5edge.quantize(tiny, out, dtype="f16", force=True)
    assert t5edge.T5(out).dtype == "f16"
    with pytest.raises(ValueError, match="quantize writes"):
        t5edge.quantize(tiny, tmp_path / "f32", dtype="f32")


def test_a_panic_is_an_exception_and_the_interpreter_lives(tiny):
    m = t5edge.T5(tiny)
    before = m.generate("the fox", max_new_tokens=5)
    for _ in range(2):
        with pytest.raises(t5edge.InternalError, match="the test hook's panic"):
            t5edge._panic_for_test()
    # caught by the base class too, and the model still works
    with pytest.raises(t5edge.Error):
        t5edge._panic_for_test()
    assert m.generate("the fox", max_new_tokens=5) == before


def test_a_panic_does_not_kill_a_fresh_interpreter():
    code = ("import t5edge\ntry:\n    t5edge._panic_for_test()\nexcept t5edge.Error as e:\n"
            "    print('caught', type(e).__name__)\nprint('alive')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["caught", "InternalError", "alive"]
