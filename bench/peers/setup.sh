#!/usr/bin/env bash
# Installs the peers of t5edge into bench/peers/.venv from PyPI (pinned in
# requirements.txt and requirements-llamacpp.txt). Idempotent; never run by CI.
#
#   bash bench/peers/setup.sh && bench/peers/.venv/bin/python bench/peers/run.py
#
# llama-cpp-python has no Linux wheel on PyPI: pip compiles llama.cpp from its
# source distribution (CPU only, for the ISA the kernel lists, see
# ggml_isa_args; ~10-20 min on 2 cores). If that
# fails the other engines still install and run.py reports llama.cpp as failed.
# The same source distribution carries llama.cpp's convert_hf_to_gguf.py and
# gguf-py, which are unpacked to .venv/llama.cpp/ to make the GGUF files.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${PEERS_VENV:-$here/.venv}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -r "$here/requirements.txt"
# t5edge itself through its Python package (python/), built from this checkout
# (the t5edge-py rows of run.py).
"$venv/bin/python" -m pip install "$here/../../python"

spec="$(grep -E '^llama-cpp-python==' "$here/requirements-llamacpp.txt")"
ver="${spec#llama-cpp-python==}"
src="$venv/src"
mkdir -p "$src"
sdist="$src/llama_cpp_python-$ver.tar.gz"
if [ ! -f "$sdist" ]; then
  "$venv/bin/python" -m pip download --no-deps --no-binary llama-cpp-python -d "$src" "$spec"
fi
# The instruction sets llama.cpp is built for. Not -march=native: on the Intel
# VMs the compiler's CPUID probe enables AMX (and with it AVX-512 forms) that
# the guest kernel does not grant, and the peer died with SIGILL (exit -4).
# Instead: the x86 extensions the kernel itself lists in /proc/cpuinfo, AMX
# never. LLAMACPP_NATIVE=1 restores -march=native where it is known to run;
# CMAKE_ARGS overrides everything.
ggml_isa_args() {
  if [ "${LLAMACPP_NATIVE:-0}" = 1 ]; then echo "-DGGML_NATIVE=ON"; return; fi
  if [ "$(uname -m)" != x86_64 ]; then echo "-DGGML_NATIVE=ON"; return; fi
  local flags args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  has() { case "$flags" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
  for pair in sse4_2:SSE42 avx:AVX avx2:AVX2 bmi2:BMI2 fma:FMA f16c:F16C avx_vnni:AVX_VNNI; do
    if has "${pair%%:*}"; then args="$args -DGGML_${pair#*:}=ON"; else args="$args -DGGML_${pair#*:}=OFF"; fi
  done
  # ggml's AVX512 switch needs F, BW, DQ, CD and VL together.
  if has avx512f && has avx512bw && has avx512dq && has avx512cd && has avx512vl; then
    args="$args -DGGML_AVX512=ON"
    for pair in avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
      if has "${pair%%:*}"; then args="$args -DGGML_${pair#*:}=ON"; else args="$args -DGGML_${pair#*:}=OFF"; fi
    done
  else
    args="$args -DGGML_AVX512=OFF"
  fi
  echo "$args"
}
if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$ver')" 2>/dev/null; then
  # CPU build of the shared library only (no multimodal library)
  cmake_args="${CMAKE_ARGS:--DLLAVA_BUILD=OFF $(ggml_isa_args)}"
  echo "setup.sh: building llama.cpp with CMAKE_ARGS=$cmake_args"
  if ! CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      "$venv/bin/python" -m pip install "$sdist"; then
    echo "setup.sh: llama-cpp-python did not build; run.py will report llama.cpp as unavailable" >&2
  fi
fi
tools="$venv/llama.cpp"
if [ ! -f "$tools/convert_hf_to_gguf.py" ]; then
  tmp="$(mktemp -d)"
  top="llama_cpp_python-$ver"
  tar -xzf "$sdist" -C "$tmp" "$top/vendor/llama.cpp/convert_hf_to_gguf.py" "$top/vendor/llama.cpp/gguf-py" \
    "$top/vendor/llama.cpp/conversion" "$top/.git/modules/vendor/llama.cpp/HEAD"
  rm -rf "$tools"
  mkdir -p "$tools"
  cp -r "$tmp/$top/vendor/llama.cpp/convert_hf_to_gguf.py" "$tmp/$top/vendor/llama.cpp/gguf-py" \
    "$tmp/$top/vendor/llama.cpp/conversion" "$tools/"
  cut -c1-12 "$tmp/$top/.git/modules/vendor/llama.cpp/HEAD" > "$tools/COMMIT"
  rm -rf "$tmp"
fi
echo "peers installed in $venv"
