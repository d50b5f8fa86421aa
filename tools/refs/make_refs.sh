#!/usr/bin/env bash
# Regenerates tests/fixtures/refs and tests/fixtures/tokenizers with HF transformers from PyPI (CPU torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=tools/refs/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tools/refs/requirements.txt
fi
cargo build --release --bin t5edge
"$venv/bin/python" tools/refs/make_refs.py target/release/t5edge
"$venv/bin/python" tools/refs/make_tokenizer_refs.py
"$venv/bin/python" tools/refs/make_rerank_refs.py target/release/t5edge
