"""Shared fixtures of the Python tests: the committed HF references
(tests/fixtures), the synthetic checkpoints they were made on (rebuilt with
t5edge.synth, as tests/synth_refs.rs does), the t5edge CLI binary, and the
reference checkpoints in ../shared when present."""

import hashlib
import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import t5edge

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SHARED = REPO.parent / "shared"


def manifest():
    return json.loads((FIXTURES / "refs" / "manifest.json").read_text())


def decode_refs():
    return json.loads((FIXTURES / "decode_refs.json").read_text())


def read_safetensors(path):
    """The arrays of a safetensors file (header: u64 length, JSON; then data)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    dtypes = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "F16": np.float16}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def synth_from_args(args, out):
    """Replays `t5edge synth` arguments (a manifest's synth_args) through t5edge.synth."""
    kw = {"preset": None, "seed": 0, "norm_jitter": 0.0, "set": []}
    it = iter(args)
    for flag in it:
        if flag == "--encoder-only":
            kw["encoder_only"] = True
            continue
        value = next(it)
        if flag == "--preset":
            kw["preset"] = value
        elif flag == "--seed":
            kw["seed"] = int(value)
        elif flag == "--norm-jitter":
            kw["norm_jitter"] = float(value)
        elif flag == "--set":
            kw["set"].append(value)
        elif flag == "--dtype":
            kw["dtype"] = value
        else:
            raise ValueError("unknown synth argument " + flag)
    return t5edge.synth(str(out), force=True, **kw)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def cases(tmp_path_factory):
    """name -> (checkpoint dir, manifest case, reference arrays), for every
    case of tests/fixtures/refs/manifest.json."""
    out = {}
    for name, case in manifest()["cases"].items():
        d = synth_from_args(case["synth_args"], tmp_path_factory.mktemp(name))
        out[name] = (Path(d), case, read_safetensors(FIXTURES / "refs" / (name + ".safetensors")))
    return out


@pytest.fixture(scope="session")
def decoder_cases(cases):
    """The cases with a decoder (encoder-only checkpoints cannot generate or score)."""
    return {k: v for k, v in cases.items() if not v[1].get("encoder_only")}


@pytest.fixture(scope="session")
def decode_synth(tmp_path_factory):
    """The checkpoint of decode_refs.json's "synth" model (its synth_cmd)."""
    cmd = decode_refs()["models"]["synth"]["synth_cmd"].split()
    assert cmd[:2] == ["t5edge", "synth"]
    return Path(synth_from_args(cmd[2:], tmp_path_factory.mktemp("decode-synth")))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A small synthetic checkpoint with a tokenizer, for API tests."""
    d = tmp_path_factory.mktemp("tiny")
    t5edge.synth(str(d), preset="t5-efficient-tiny-nl2", seed=5,
                 set=["d_model=64", "d_ff=128", "num_heads=2", "d_kv=32", "vocab_size=1000"], zero_pad_row=True, force=True)
    return d


def t5edge_binary():
    """The CLI built from this checkout (T5EDGE_BIN, else target/release or
    target/debug under CARGO_TARGET_DIR or the repository's target/)."""
    if os.environ.get("T5EDGE_BIN"):
        return Path(os.environ["T5EDGE_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("release", "debug"):
        p = target / profile / "t5edge"
        if p.is_file():
            return p
    return None


@pytest.fixture(scope="session")
def cli():
    b = t5edge_binary()
    if b is None:
        pytest.skip("no t5edge binary: build it with `cargo build --release` (or set T5EDGE_BIN)")

    def run(*args):
        p = subprocess.run([str(b), *map(str, args)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return p.stdout

    return run


def shared_models():
    """The reference checkpoints in ../shared/models, or a skip naming the path."""
    d = SHARED / "models"
    names = ["t5-efficient-tiny-nl2-synth", "t5-v1_1-gated-synth"]
    present = [d / n for n in names if (d / n / "model.safetensors").is_file()]
    return present


def assert_close(what, got, want, rel):
    """max |got - want| <= rel * max |want|, as tests/common's assert_close."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    d = float(np.max(np.abs(got - want)))
    m = max(float(np.max(np.abs(want))), 1e-6)
    assert d <= rel * m, "%s: max abs diff %g exceeds %g x max |ref| %g" % (what, d, rel, m)
