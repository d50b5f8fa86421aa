#!/usr/bin/env bash
# Corrupts a T5 checkpoint in many distinct ways and runs t5edge on each.
#
#   tools/corrupt_checkpoints.sh [CHECKPOINT_DIR] [--markdown]
#
# Without CHECKPOINT_DIR, a tiny synthetic one is written with `t5edge synth`.
# The checkpoint is never modified: each case works on a copy in a temp dir
# (so ../shared/models/* are safe to pass). Needs bash and python3 (stdlib).
# Prints one row per case: name, exit code, the stderr line, and PASS when the
# exit is non-zero, stderr is exactly one `error:` line and nothing panicked.
# Exits non-zero if any case fails.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${T5EDGE_BIN:-$ROOT/target/release/t5edge}"
SRC=""
MARKDOWN=0
for a in "$@"; do
    case "$a" in
        --markdown) MARKDOWN=1 ;;
        *) SRC="$a" ;;
    esac
done
if [[ ! -x "$BIN" ]]; then
    echo "building $BIN" >&2
    (cd "$ROOT" && cargo build --release -q)
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/t5edge-corrupt.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export T5EDGE_CACHE="$WORK/cache"

if [[ -z "$SRC" ]]; then
    SRC="$WORK/base"
    "$BIN" synth --preset t5-efficient-tiny-nl2 --seed 3 --set vocab_size=512 \
        --set d_model=64 --set d_ff=128 --set d_kv=16 --out "$SRC" 2>/dev/null
fi
[[ -f "$SRC/config.json" ]] || { echo "error: $SRC has no config.json" >&2; exit 2; }

# The surgery lives in one python3 helper: `corrupt.py CASE DIR` edits DIR.
cat > "$WORK/corrupt.py" <<'PY'
import json, os, struct, sys

case, d = sys.argv[1], sys.argv[2]
W = os.path.join(d, "model.safetensors")
C = os.path.join(d, "config.json")
T = os.path.join(d, "tokenizer.json")
IDX = os.path.join(d, "model.safetensors.index.json")

def read(p):
    with open(p, "rb") as f:
        return f.read()

def write(p, b):
    with open(p, "wb") as f:
        f.write(b)

def split(b):
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]

def join(h, data, pad_to=8, extra=0):
    hb = json.dumps(h, separators=(",", ":")).encode()
    while len(hb) % pad_to != extra:
        hb += b" "
    return struct.pack("<Q", len(hb)) + hb + data

def tensors(h):
    return sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])

def edit_config(f):
    c = json.load(open(C))
    f(c)
    json.dump(c, open(C, "w"))

def shard():
    """Split model.safetensors into two shards plus an index."""
    h, data = split(read(W))
    names = tensors(h)
    half = len(names) // 2
    wm = {}
    for i, part in enumerate([names[:half], names[half:]]):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        nh, chunks, off = {}, [], 0
        for k in part:
            s, e = h[k]["data_offsets"]
            nh[k] = dict(h[k], data_offsets=[off, off + e - s])
            chunks.append(data[s:e])
            off += e - s
            wm[k] = fname
        write(os.path.join(d, fname), join(nh, b"".join(chunks)))
    os.remove(W)
    json.dump({"metadata": {}, "weight_map": wm}, open(IDX, "w"))
    return names, wm

b = read(W) if os.path.exists(W) else None
if case == "header-len-past-eof":
    write(W, struct.pack("<Q", len(b) + 1000) + b[8:])
elif case == "header-len-u64-max":
    write(W, struct.pack("<Q", 2**64 - 1) + b[8:])
elif case == "shorter-than-8-bytes":
    write(W, b[:5])
elif case == "empty-weights":
    write(W, b"")
elif case == "header-not-json":
    write(W, join({}, b"")[:8] + b"{not js" + b[15:])
elif case == "header-not-utf8":
    write(W, b[:9] + b"\xff\xfe" + b[11:])
elif case == "truncated-data":
    write(W, b[:-100])
elif case == "trailing-bytes":
    write(W, b + b"\0" * 16)
elif case in ("overlapping-offsets", "gap-between-tensors"):
    h, data = split(b)
    k = tensors(h)[1]
    s, e = h[k]["data_offsets"]
    delta = -4 if case == "overlapping-offsets" else 4
    h[k]["data_offsets"] = [s + delta, e + delta]
    write(W, join(h, data))
elif case == "dtype-x-shape-mismatch":
    h, data = split(b)
    k = tensors(h)[2]
    h[k]["shape"] = [h[k]["shape"][0] + 1] + h[k]["shape"][1:]
    write(W, join(h, data))
elif case == "unknown-dtype":
    h, data = split(b)
    h[tensors(h)[0]]["dtype"] = "Q7"
    write(W, join(h, data))
elif case == "unsupported-dtype-f64":
    h, data = split(b)
    k = next(k for k in tensors(h) if k.endswith("final_layer_norm.weight"))
    h[k]["dtype"] = "F64"
    h[k]["shape"] = [h[k]["shape"][0] // 2]
    write(W, join(h, data))
elif case == "integer-weights":
    h, data = split(b)
    k = next(k for k in tensors(h) if k.endswith("final_layer_norm.weight"))
    h[k]["dtype"] = "I32"
    write(W, join(h, data))
elif case in ("missing-tensor", "wrong-shape-for-config"):
    h, data = split(b)
    names = tensors(h)
    victim = next(k for k in names if "EncDecAttention.v" in k)
    nh, chunks, off = {"__metadata__": h.get("__metadata__", {})}, [], 0
    for k in names:
        s, e = h[k]["data_offsets"]
        chunk = data[s:e]
        shape = h[k]["shape"]
        if k == victim:
            if case == "missing-tensor":
                continue
            shape = [shape[0] // 2] + shape[1:]
            chunk = chunk[: len(chunk) // 2]
        nh[k] = dict(h[k], shape=shape, data_offsets=[off, off + len(chunk)])
        chunks.append(chunk)
        off += len(chunk)
    write(W, join(nh, b"".join(chunks)))
elif case == "misaligned-f32-loads":
    h, data = split(b)
    write(W, join(h, data, extra=1))  # header length odd: every tensor misaligned
elif case == "config-zero-dim":
    edit_config(lambda c: c.update(d_model=0))
elif case == "config-negative-dim":
    edit_config(lambda c: c.update(num_heads=-8))
elif case == "config-float-dim":
    edit_config(lambda c: c.update(d_ff=1024.5))
elif case == "config-overflowing-dim":
    edit_config(lambda c: c.update(d_kv=2**64 - 1))
elif case == "config-eos-out-of-vocab":
    edit_config(lambda c: c.update(eos_token_id=c["vocab_size"]))
elif case == "config-heads-x-dkv-huge":
    edit_config(lambda c: c.update(num_heads=65536, d_kv=65536))
elif case == "config-too-few-buckets":
    edit_config(lambda c: c.update(relative_attention_num_buckets=2))
elif case == "config-max-distance-too-small":
    edit_config(lambda c: c.update(relative_attention_max_distance=4))
elif case == "config-not-json":
    write(C, b"\x00 this is not json")
elif case == "config-missing":
    os.remove(C)
elif case == "tokenizer-too-big":
    t = json.load(open(T))
    vs = json.load(open(C))["vocab_size"]
    t["model"]["vocab"] += [[f"piece{i}", -20.0] for i in range(vs + 1)]
    json.dump(t, open(T, "w"))
elif case == "tokenizer-garbage":
    write(T, b"\x89PNG garbage")
elif case == "shard-missing":
    shard()
    os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
elif case == "shard-path-traversal":
    names, wm = shard()
    wm[names[0]] = "../model.safetensors"
    json.dump({"weight_map": wm}, open(IDX, "w"))
elif case == "shard-duplicate-tensor":
    names, wm = shard()
    p2 = os.path.join(d, "model-00002-of-00002.safetensors")
    h1, d1 = split(read(os.path.join(d, "model-00001-of-00002.safetensors")))
    h2, d2 = split(read(p2))
    k = tensors(h1)[0]
    s, e = h1[k]["data_offsets"]
    h2[k] = dict(h1[k], data_offsets=[len(d2), len(d2) + e - s])
    write(p2, join(h2, d2 + d1[s:e]))
elif case == "weights-are-a-directory":
    shard()
    os.remove(os.path.join(d, "model-00001-of-00002.safetensors"))
    os.mkdir(os.path.join(d, "model-00001-of-00002.safetensors"))
elif case == "nan-weights-inspect":
    h, data = split(b)
    k = next(k for k in tensors(h) if k.endswith("layer_norm.weight"))
    s = h[k]["data_offsets"][0]
    n = struct.unpack("<Q", b[:8])[0]
    at = 8 + n + s
    write(W, b[:at] + struct.pack("<ff", float("nan"), float("inf")) + b[at + 8:])
else:
    sys.exit(f"unknown case {case}")
PY

# case : command (inspect or generate) : expectation (fail, or ok for cases that must load)
CASES=(
    header-len-past-eof:inspect:fail header-len-u64-max:inspect:fail
    shorter-than-8-bytes:inspect:fail empty-weights:inspect:fail
    header-not-json:inspect:fail header-not-utf8:inspect:fail
    truncated-data:inspect:fail trailing-bytes:inspect:fail
    overlapping-offsets:inspect:fail gap-between-tensors:inspect:fail
    dtype-x-shape-mismatch:inspect:fail unknown-dtype:inspect:fail
    unsupported-dtype-f64:inspect:fail integer-weights:inspect:fail
    missing-tensor:inspect:fail wrong-shape-for-config:inspect:fail
    config-zero-dim:inspect:fail config-negative-dim:inspect:fail
    config-float-dim:inspect:fail config-overflowing-dim:inspect:fail
    config-eos-out-of-vocab:inspect:fail config-heads-x-dkv-huge:inspect:fail
    config-too-few-buckets:inspect:fail config-max-distance-too-small:inspect:fail
    config-not-json:inspect:fail config-missing:inspect:fail
    tokenizer-too-big:generate:fail tokenizer-garbage:generate:fail
    shard-missing:inspect:fail shard-path-traversal:inspect:fail
    shard-duplicate-tensor:inspect:fail weights-are-a-directory:inspect:fail
    misaligned-f32-loads:generate:ok nan-weights-inspect:inspect:ok
)

fails=0
if [[ $MARKDOWN == 1 ]]; then
    echo "| case | cmd | exit | stderr | result |"
    echo "|---|---|---|---|---|"
else
    printf '%-32s %-8s %-4s %-6s %s\n' CASE CMD EXIT RESULT STDERR
fi
for spec in "${CASES[@]}"; do
    IFS=: read -r name cmd expect <<<"$spec"
    d="$WORK/$name"
    mkdir -p "$d"
    cp "$SRC"/*.json "$d"/ 2>/dev/null || true
    cp "$SRC"/*.safetensors "$d"/ 2>/dev/null || true
    python3 "$WORK/corrupt.py" "$name" "$d"
    if [[ $cmd == generate ]]; then
        args=(generate --model "$d" --max-new-tokens 2 --json "hello world")
    else
        args=(inspect --model "$d")
    fi
    set +e
    "$BIN" "${args[@]}" >"$d.out" 2>"$d.err"
    code=$?
    set -e
    nlines=$(wc -l <"$d.err")
    line=$(head -n1 "$d.err")
    panicked=0
    grep -q panicked "$d.err" "$d.out" && panicked=1
    if [[ $expect == fail ]]; then
        ok=$([[ $code -ne 0 && $nlines -eq 1 && $line == error:* && $panicked -eq 0 ]] && echo PASS || echo FAIL)
    else
        ok=$([[ $code -eq 0 && $panicked -eq 0 ]] && echo PASS || echo FAIL)
        [[ $name == nan-weights-inspect ]] && { line=$(grep -m1 'values' "$d.out" || true); grep -q 'NaN/Inf in' "$d.out" || ok=FAIL; }
        [[ $name == misaligned-f32-loads ]] && line="(loads; output: $(head -c 60 "$d.out" | tr '\n' ' '))"
    fi
    [[ $ok == PASS ]] || fails=$((fails + 1))
    line=${line//$WORK\//}
    if [[ $MARKDOWN == 1 ]]; then
        echo "| $name | $cmd | $code | \`${line//|/\\|}\` | $ok |"
    else
        printf '%-32s %-8s %-4s %-6s %s\n' "$name" "$cmd" "$code" "$ok" "$line"
    fi
    rm -rf "$d" "$d.out" "$d.err"
done
echo "${#CASES[@]} cases, $fails failed" >&2
[[ $fails -eq 0 ]]
