#!/usr/bin/env bash
# Cross-build t5edge for aarch64 Linux and run it under qemu user-mode emulation.
#
#   tools/cross-aarch64.sh setup      install what the rest needs (Debian, as root; idempotent)
#   tools/cross-aarch64.sh test       what CI runs (.ci/run): the kernel proptests on
#                                     `-cpu max` (NEON + dotprod + fp16) and on
#                                     `-cpu cortex-a53` (no dotprod, no fp16: the
#                                     fallbacks), then the engine against HF on
#                                     `-cpu max` (E2E_TESTS below: the synthetic
#                                     references, f32 logits and the aarch64
#                                     `t5edge` binary's greedy ids on ../shared)
#   tools/cross-aarch64.sh build      target/aarch64-unknown-linux-gnu/release/t5edge
#   tools/cross-aarch64.sh all-tests  `cargo test --workspace --release` under emulation
#                                     (slow: tens of minutes on 2 cores; not in CI)
#
# Extra arguments after `test`/`all-tests` go to the test binaries (test name
# filters; for `test` they replace E2E_TESTS).
# QEMU_CPU_MODEL (default `max`) picks the emulated CPU for `all-tests`.
#
# Nothing here touches native builds: the linker and the runner are set through
# CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_{LINKER,RUNNER} in this process only.
# Tests that spawn the `t5edge` binary prefix it with T5EDGE_TEST_RUNNER, so
# no binfmt_misc registration is needed. qemu runs without `-L`: libc6:arm64
# puts the aarch64 loader at /lib/ld-linux-aarch64.so.1 (mixing two C
# libraries makes threaded tests hang).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
# libc6-dev-arm64-cross (the C runtime objects the linker needs: Scrt1.o,
# crti.o) is only a Recommends of the cross gcc, which --no-install-recommends
# leaves out: a machine without it failed every aarch64 link.
APT_PKGS=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libc6:arm64 libgcc-s1:arm64)
CARGO=(cargo)

log() { printf '[cross-aarch64 %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_pkgs() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

apt_install() {
    local missing
    missing=$(missing_pkgs "$@")
    [ -z "$missing" ] && return 0
    log "installing: $missing"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        as_root dpkg --add-architecture arm64
    fi
    as_root apt-get update -qq
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing </dev/null
}

# The aarch64 standard library: rustup's, else Debian's rustc-web (then the
# build uses Debian's rustc and cargo, whose std it is).
rust_std() {
    if command -v rustup >/dev/null 2>&1; then
        if rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
            return 0
        fi
        if rustup target add "$TARGET" </dev/null; then
            return 0
        fi
        log "rustup could not add $TARGET; falling back to Debian's rustc-web"
    fi
    apt_install rustc-web cargo-web libstd-rust-web-dev:arm64
    # rustc-web ships /usr/bin/rustc, cargo-web /usr/bin/cargo (dpkg -c; 1.96 in
    # bookworm-security). Tried by hand (2026-11-28): the kernels' linear_int8
    # tests build with them and pass under qemu -cpu max; the whole `test`
    # mode has run with rustup's std only.
    export RUSTC=/usr/bin/rustc
    CARGO=(/usr/bin/cargo)
}

setup() {
    apt_install "${APT_PKGS[@]}"
    rust_std
    [ -e /lib/ld-linux-aarch64.so.1 ] || { log "no /lib/ld-linux-aarch64.so.1 (libc6:arm64)"; exit 1; }
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    # CI's clippy pass (-D warnings) compiles for x86 only, so code that only
    # the aarch64 build sees (or that x86-only cfgs leave unused there) is
    # held to the same rule here; dependencies stay capped by cargo.
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS:--D warnings}"
}

# Sets the emulated CPU for everything cargo runs and for the binaries tests spawn.
# T5EDGE_EXPECT_FEATURES is what kernels/tests/isa.rs must detect on that model.
use_cpu() {
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu $1"
    export T5EDGE_TEST_RUNNER="qemu-aarch64 -cpu $1"
    case "$1" in
    max) export T5EDGE_EXPECT_FEATURES=neon,dotprod,fp16 ;;
    cortex-a53) export T5EDGE_EXPECT_FEATURES=neon ;;
    *) unset T5EDGE_EXPECT_FEATURES ;;
    esac
}

timed() {
    local t0=$SECONDS
    "$@"
    log "took $((SECONDS - t0)) s: $*"
}

# The engine tests CI runs under emulation: every committed synthetic
# reference, the aarch64 `t5edge` binary's greedy ids against HF's on both
# ../shared checkpoints in f32, f16 and int8 --exact, and the f32 logits
# within 1e-4. The rest of tests/shared_goldens.rs (encoder and layer states,
# incremental decoding, the padded batch, the library's greedy) runs in
# `all-tests`: it takes ~20 min under qemu.
E2E_TESTS=(synthesized_checkpoints_match_hf cli_greedy_ids_match_hf_in_every_dtype teacher_forced_logits_match_hf)

ci_test() {
    local k=(-p t5edge-kernels --tests)
    local e=(-p t5edge --test synth_refs --test shared_goldens)
    local filters=("$@")
    [ ${#filters[@]} -eq 0 ] && filters=("${E2E_TESTS[@]}")
    # Kernels first (small, fail fast), then the engine.
    timed nice -n 10 "${CARGO[@]}" test --release --target "$TARGET" "${k[@]}" --no-run
    use_cpu max
    timed "${CARGO[@]}" test --release --target "$TARGET" "${k[@]}" -- "$@"
    use_cpu cortex-a53
    timed "${CARGO[@]}" test --release --target "$TARGET" "${k[@]}" -- "$@"
    timed nice -n 10 "${CARGO[@]}" test --release --target "$TARGET" "${e[@]}" --no-run
    use_cpu max
    timed "${CARGO[@]}" test --release --target "$TARGET" "${e[@]}" -- "${filters[@]}"
}

mode=${1:-}
[ $# -gt 0 ] && shift
case "$mode" in
setup)
    setup
    log "ready: ${CARGO[*]} build --target $TARGET; run with qemu-aarch64 -cpu max"
    ;;
test)
    setup
    timed ci_test "$@"
    ;;
build)
    setup
    timed nice -n 10 "${CARGO[@]}" build --release --target "$TARGET" --bin t5edge
    log "target/$TARGET/release/t5edge (run it here with: qemu-aarch64 -cpu max target/$TARGET/release/t5edge ...)"
    ;;
all-tests)
    setup
    use_cpu "${QEMU_CPU_MODEL:-max}"
    timed nice -n 10 "${CARGO[@]}" test --workspace --release --target "$TARGET" --no-run
    timed "${CARGO[@]}" test --workspace --release --target "$TARGET" -- "$@"
    ;;
*)
    sed -n '2,24p' "$0" >&2
    exit 2
    ;;
esac
